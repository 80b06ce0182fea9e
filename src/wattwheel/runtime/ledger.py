"""What the live controller must remember between ticks because no device reports it:
shifts it asked for (taking effect after their lead time), deferred work it owes, its own
estimate of each primary breaker's heat, and — when no reserve controller is connected — a
model of the reserve's start delay and minimum on-time. The live counterpart of the
simulator's plant bookkeeping, keyed by time instead of step index."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_OFF, RESERVE_ON, RESERVE_STARTING
from wattwheel.domain import breaker
from wattwheel.domain.site import SiteParams
from wattwheel.runtime.ports import ReserveStatus

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0


@dataclass
class _Debt:
    due_s: float
    energy_kwh: FloatArray


@dataclass
class Ledger:
    """Shift schedule, deferred-work debt and breaker heat, per domain (arrays (D,))."""

    site: SiteParams
    dt_s: float
    heat: FloatArray = field(init=False)
    last_grid_kw: FloatArray = field(init=False)
    _shifts: dict[int, tuple[FloatArray, FloatArray]] = field(init=False, default_factory=dict)
    _debts: list[_Debt] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        d = self.site.n_domains
        self.heat = np.zeros(d)
        self.last_grid_kw = np.zeros(d)

    def _slot(self, t_s: float) -> int:
        return int(math.floor(t_s / self.dt_s + 1e-9))

    # ---- shifts ----
    def shifts_now(self, now_s: float) -> tuple[FloatArray, FloatArray]:
        z = np.zeros(self.site.n_domains)
        out, inn = self._shifts.get(self._slot(now_s), (z, z))
        return out.copy(), inn.copy()

    def schedule_shifts(self, now_s: float, out_kw: FloatArray, in_kw: FloatArray) -> None:
        lead = float(self.site.flex.shift_lead_s.max(initial=0.0))
        cap = self.site.flex.shift_max_kw
        self._shifts[self._slot(now_s + lead)] = (
            np.clip(out_kw, 0.0, cap),
            np.clip(in_kw, 0.0, cap),
        )
        old = self._slot(now_s) - 1
        for key in [k for k in self._shifts if k < old]:
            del self._shifts[key]

    # ---- deferred work ----
    def debt_kwh(self) -> FloatArray:
        total = np.zeros(self.site.n_domains)
        for debt in self._debts:
            total += debt.energy_kwh
        return total

    def due_repay_kw(self, now_s: float) -> FloatArray:
        due = np.zeros(self.site.n_domains)
        for debt in self._debts:
            if debt.due_s <= now_s + 1e-9:
                due += debt.energy_kwh
        return due * S_PER_H / self.dt_s

    def settle(self, now_s: float, defer_kw: FloatArray, repay_kw: FloatArray) -> None:
        """Book this period's deferral and repayment (due work is repaid first, oldest first)."""
        dt_h = self.dt_s / S_PER_H
        self._debts.sort(key=lambda x: x.due_s)
        want = np.maximum(repay_kw, 0.0) * dt_h
        for debt in self._debts:
            if debt.due_s <= now_s + 1e-9:
                debt.energy_kwh = np.zeros_like(debt.energy_kwh)
                continue
            take = np.minimum(want, debt.energy_kwh)
            debt.energy_kwh = debt.energy_kwh - take
            want = want - take
        self._debts = [x for x in self._debts if float(x.energy_kwh.sum()) > 1e-12]
        add = np.maximum(defer_kw, 0.0) * dt_h
        if float(add.sum()) > 0:
            self._debts.append(_Debt(now_s + float(self.site.flex.defer_deadline_s.min()), add))

    # ---- breaker ----
    def observe_grid(self, grid_kw: FloatArray, dt_s: float) -> None:
        """Advance the breaker heat estimate with the grid draw of the last period."""
        ratio = grid_kw / self.site.primary_kw
        self.heat = breaker.step_heat(self.site.breaker, self.heat, ratio, dt_s)
        self.heat = np.where(breaker.tripped(self.heat), 0.0, self.heat)
        self.last_grid_kw = grid_kw.copy()


class ModelledReserve:
    """A reserve without a controller to ask: its state follows our own commands through the
    site's start delay and minimum on-time (also the in-package fake of a reserve port)."""

    def __init__(self, site: SiteParams, domain_ids: tuple[str, ...]) -> None:
        self.site = site
        self.domain_ids = domain_ids
        d = site.n_domains
        self.mode = np.full(d, RESERVE_OFF, dtype=np.int64)
        self.ready_at_s = np.zeros(d)
        self.on_since_s = np.zeros(d)
        self.assigned_kw = np.zeros(d)
        self.now_s = 0.0
        self.commands: list[tuple[str, bool, float]] = []

    def advance(self, now_s: float) -> None:
        self.now_s = now_s
        ready = (self.mode == RESERVE_STARTING) & (self.ready_at_s <= now_s)
        self.mode[ready] = RESERVE_ON

    async def read(self) -> dict[str, ReserveStatus]:
        res = self.site.reserve
        out = {}
        for i, d in enumerate(self.domain_ids):
            on_for = self.now_s - self.on_since_s[i] if self.mode[i] != RESERVE_OFF else 0.0
            out[d] = ReserveStatus(
                mode=int(self.mode[i]),
                ready_in_s=max(float(self.ready_at_s[i] - self.now_s), 0.0)
                if self.mode[i] == RESERVE_STARTING
                else 0.0,
                min_on_left_s=max(res.min_on_s - on_for, 0.0)
                if self.mode[i] != RESERVE_OFF
                else 0.0,
                delivered_kw=float(self.assigned_kw[i]) if self.mode[i] == RESERVE_ON else 0.0,
            )
        return out

    async def command(self, domain_id: str, on: bool, power_kw: float) -> bool:
        i = self.domain_ids.index(domain_id)
        res = self.site.reserve
        self.commands.append((domain_id, on, power_kw))
        if on and self.mode[i] == RESERVE_OFF:
            self.mode[i] = RESERVE_STARTING if res.start_delay_s > 0 else RESERVE_ON
            self.ready_at_s[i] = self.now_s + res.start_delay_s
            self.on_since_s[i] = self.now_s
        elif (
            not on
            and self.mode[i] != RESERVE_OFF
            and self.now_s - self.on_since_s[i] >= res.min_on_s
        ):
            self.mode[i] = RESERVE_OFF
        self.assigned_kw[i] = power_kw if on else 0.0
        return True
