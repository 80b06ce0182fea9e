"""wattwheel: keep a data center inside its power budget by anticipating demand."""

import os

# The shipped forecasters fit a small AR model per call (forecast/hybrid.py): such solves run
# fastest on one BLAS thread, and a multi-threaded OpenBLAS on a busy 2-core host was measured
# ~40x slower. Set before numpy loads its BLAS; a value the user set is kept.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
