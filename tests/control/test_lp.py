"""The LP/MILP builder on HiGHS: solves, and writes nothing on stdout (bench scripts print
one JSON line there)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from wattwheel.control.lp import LinearProgram

SOLVE_IN_A_FRESH_PROCESS = """
from wattwheel.control.lp import LinearProgram
lp = LinearProgram()
x = lp.add_vars(2, 0.0, 1.0, [1.0, -1.0], integer=True)
lp.add_row([0, 1], [1.0, 1.0], hi=1.5)
print([int(round(v)) for v in lp.solve()])
"""


def test_a_small_milp_is_solved() -> None:
    lp = LinearProgram()
    lp.add_vars(2, 0.0, 1.0, [1.0, -1.0], integer=True)
    lp.add_row([0, 1], [1.0, 1.0], hi=1.5)
    x = lp.solve()
    assert x is not None
    np.testing.assert_allclose(x, [0.0, 1.0])


def test_highs_prints_nothing_not_even_its_banner() -> None:
    # HiGHS writes its banner once per process, at the first call made with logging on: a
    # fresh interpreter is the only place to see it.
    out = subprocess.run(
        [sys.executable, "-c", SOLVE_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout == "[0, 1]\n"
