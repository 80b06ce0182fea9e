"""A tiny sparse LP/MILP builder on HiGHS (no I/O): named variable blocks, rows by triplets."""

from __future__ import annotations

from dataclasses import dataclass, field

import highspy
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
INF = highspy.kHighsInf


class QuietHighs(highspy.Highs):
    """A HiGHS instance that never logs. HiGHS writes its banner on stdout at the first call
    made with ``output_flag`` on, and highspy's constructor makes one (``enableCallbacks``)
    before a caller could turn it off: here it is turned off first."""

    def enableCallbacks(self) -> None:
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()  # type: ignore[no-untyped-call]


@dataclass
class LinearProgram:
    """Columns are added in blocks (returning index arrays); rows as (cols, coefs, lo, hi)."""

    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=lambda: [0])
    index: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add_vars(
        self,
        n: int,
        lo: float | FloatArray = 0.0,
        hi: float | FloatArray = INF,
        cost: float | FloatArray = 0.0,
        integer: bool = False,
    ) -> NDArray[np.int64]:
        first = len(self.lower)
        self.lower.extend(np.broadcast_to(np.asarray(lo, dtype=float), (n,)).tolist())
        self.upper.extend(np.broadcast_to(np.asarray(hi, dtype=float), (n,)).tolist())
        self.cost.extend(np.broadcast_to(np.asarray(cost, dtype=float), (n,)).tolist())
        self.integer.extend([integer] * n)
        return np.arange(first, first + n)

    def add_row(
        self, cols: list[int], coefs: list[float], lo: float = -INF, hi: float = INF
    ) -> None:
        self.index.extend(int(c) for c in cols)
        self.value.extend(float(v) for v in coefs)
        self.starts.append(len(self.index))
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    def solve(self, time_limit_s: float = 5.0, mip_gap: float = 1e-7) -> FloatArray | None:
        """Minimise; returns the column values, or None when no solution was found."""
        return run(self.highs(time_limit_s, mip_gap))

    def highs(self, time_limit_s: float = 5.0, mip_gap: float = 1e-7) -> highspy.Highs:
        """The model passed to a HiGHS instance, not yet run: a caller that solves it again
        with other costs or bounds changes them there (``changeColsCost``, ...) and calls
        :func:`run` again, without rebuilding the model."""
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.lower)
        lp.num_row_ = len(self.row_lo)
        lp.col_cost_ = np.asarray(self.cost)
        lp.col_lower_ = np.asarray(self.lower)
        lp.col_upper_ = np.asarray(self.upper)
        lp.row_lower_ = np.asarray(self.row_lo)
        lp.row_upper_ = np.asarray(self.row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.asarray(self.starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.asarray(self.index, dtype=np.int32)
        lp.a_matrix_.value_ = np.asarray(self.value)
        if any(self.integer):
            lp.integrality_ = [
                highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                for i in self.integer
            ]
        h = QuietHighs()  # type: ignore[no-untyped-call]
        h.setOptionValue("time_limit", time_limit_s)
        h.setOptionValue("mip_rel_gap", mip_gap)
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        return h


def run(h: highspy.Highs) -> FloatArray | None:
    """Run ``h``; the column values, or None when no solution was found."""
    h.run()
    status = h.getModelStatus()
    ok = (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit)
    if status not in ok or h.getInfo().primal_solution_status != 2:
        return None
    return np.asarray(h.getSolution().col_value)
