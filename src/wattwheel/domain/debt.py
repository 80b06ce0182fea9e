"""Deferred work as a debt (DESIGN §2): postponed energy must run again before its deadline.
Pure: time is passed in.

Each period's deferral of domain ``d`` becomes a bucket due ``deadline_s[d]`` later (never
sooner than one period). A bucket whose due time has come is repaid in full, forced, in that
period; beyond that, repayment the controller asks for is taken from the oldest buckets first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0
_EPS_S = 1e-6


@dataclass
class _Bucket:
    due_s: float
    energy_kwh: FloatArray


@dataclass
class DebtBook:
    """Deferred energy owed per domain (arrays (D,), kWh), by due time."""

    deadline_s: FloatArray
    _buckets: list[_Bucket] = field(default_factory=list)

    @property
    def n_domains(self) -> int:
        return int(self.deadline_s.shape[0])

    def owed_kwh(self) -> FloatArray:
        total = np.zeros(self.n_domains)
        for bucket in self._buckets:
            total += bucket.energy_kwh
        return total

    def due_kwh(self, now_s: float) -> FloatArray:
        """Energy whose deadline has come by ``now_s`` (must run this period)."""
        due = np.zeros(self.n_domains)
        for bucket in self._buckets:
            if bucket.due_s <= now_s + _EPS_S:
                due += bucket.energy_kwh
        return due

    def due_kw(self, now_s: float, dt_s: float) -> FloatArray:
        """The forced repayment of this period as a power (kW) over ``dt_s``."""
        due: FloatArray = self.due_kwh(now_s) * S_PER_H / dt_s
        return due

    def settle(
        self, now_s: float, dt_s: float, defer_kw: FloatArray, repay_kw: FloatArray
    ) -> FloatArray:
        """Book one period: repay what is due, then ``repay_kw`` more (oldest first), then add
        ``defer_kw`` as a new bucket. Returns what was repaid (kW, forced + voluntary)."""
        dt_h = dt_s / S_PER_H
        paid = self._repay_due(now_s)
        want = np.maximum(repay_kw, 0.0) * dt_h
        for bucket in sorted(self._buckets, key=lambda b: b.due_s):
            if not np.any(want > 1e-12):
                break
            take = np.minimum(want, bucket.energy_kwh)
            bucket.energy_kwh = bucket.energy_kwh - take
            want, paid = want - take, paid + take
        self._buckets = [b for b in self._buckets if float(b.energy_kwh.sum()) > 1e-12]
        self._add(now_s, dt_s, np.maximum(defer_kw, 0.0) * dt_h)
        repaid: FloatArray = paid / dt_h
        return repaid

    def _repay_due(self, now_s: float) -> FloatArray:
        paid = np.zeros(self.n_domains)
        keep = []
        for bucket in self._buckets:
            if bucket.due_s <= now_s + _EPS_S:
                paid += bucket.energy_kwh
            else:
                keep.append(bucket)
        self._buckets = keep
        return paid

    def _add(self, now_s: float, dt_s: float, energy_kwh: FloatArray) -> None:
        """One bucket per distinct due time (domains' deadlines may differ)."""
        for deadline in np.unique(self.deadline_s):
            part = np.where(self.deadline_s == deadline, energy_kwh, 0.0)
            if float(part.sum()) > 0:
                self._buckets.append(_Bucket(now_s + max(float(deadline), dt_s), part))
