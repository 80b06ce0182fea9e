"""What the live controller must remember between ticks because no device reports it:
shifts it asked for (in force after their lead time, one order per source/destination pair),
deferred work it owes, its own estimate of each primary breaker's heat, and - when no reserve
controller is connected - a model of the one shared reserve machine. The bookkeeping is the
pure world model of :mod:`wattwheel.domain` (:class:`~wattwheel.domain.shifts.ShiftBook`,
:class:`~wattwheel.domain.debt.DebtBook`, :class:`~wattwheel.domain.reserve.ReserveMachine`),
the same the simulator's plant and the emulator use, keyed by wall-clock time."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain import breaker
from wattwheel.domain.debt import DebtBook
from wattwheel.domain.reserve import RESERVE_ON, ReserveMachine
from wattwheel.domain.shifts import ShiftBook, ShiftOrder, pair_levels
from wattwheel.domain.site import SiteParams
from wattwheel.runtime.ports import ReserveStatus

#: Reserve commands a modelled reserve remembers (for tests and inspection).
COMMANDS_KEPT = 1024

FloatArray = NDArray[np.float64]


@dataclass
class Ledger:
    """Shift orders, deferred-work debt and breaker heat, per domain (arrays (D,)).

    ``plan_period_s``: the plan period in force, the length of every shift order."""

    site: SiteParams
    dt_s: float
    plan_period_s: float | None = None
    heat: FloatArray = field(init=False)
    last_grid_kw: FloatArray = field(init=False)
    shifts: ShiftBook = field(init=False)
    debt: DebtBook = field(init=False)

    def __post_init__(self) -> None:
        d = self.site.n_domains
        self.heat = np.zeros(d)
        self.last_grid_kw = np.zeros(d)
        self.shifts = ShiftBook(d)
        self.debt = DebtBook(self.site.flex.defer_deadline_s.astype(float))

    # ---- shifts ----
    def shifts_now(self, now_s: float) -> tuple[FloatArray, FloatArray]:
        """(out_kw, in_kw) of the shift orders in force now."""
        return self.shifts.levels(now_s)

    def shift_orders(self, now_s: float, out_kw: FloatArray, in_kw: FloatArray) -> list[ShiftOrder]:
        """The orders these levels need now (changed, renewed or ended pairs); not placed:
        :meth:`place` them once the scheduler has them."""
        cap = self.site.flex.shift_max_kw
        levels = pair_levels(np.clip(out_kw, 0.0, cap), np.clip(in_kw, 0.0, cap))
        lead = float(self.site.flex.shift_lead_s.max(initial=0.0))
        period = self.plan_period_s or self.site.plan_period_s
        self.shifts.prune(now_s)
        return self.shifts.orders_due(now_s, levels, lead, period)

    def place(self, orders: list[ShiftOrder]) -> None:
        for order in orders:
            self.shifts.place(order)

    # ---- deferred work ----
    def debt_kwh(self) -> FloatArray:
        return self.debt.owed_kwh()

    def due_repay_kw(self, now_s: float) -> FloatArray:
        return self.debt.due_kw(now_s, self.dt_s)

    def settle(self, now_s: float, defer_kw: FloatArray, repay_kw: FloatArray) -> None:
        """Book this period's deferral and repayment (due work first, then oldest first)."""
        self.debt.settle(now_s, self.dt_s, defer_kw, repay_kw)

    # ---- breaker ----
    def observe_grid(self, grid_kw: FloatArray, dt_s: float) -> None:
        """Advance the breaker heat estimate with the grid draw of the last period."""
        ratio = grid_kw / self.site.primary_kw
        self.heat = breaker.step_heat(self.site.breaker, self.heat, ratio, dt_s)
        self.heat = np.where(breaker.tripped(self.heat), 0.0, self.heat)
        self.last_grid_kw = grid_kw.copy()


class ModelledReserve:
    """A reserve without a controller to ask: the one shared machine of the world model,
    following our own commands (also the in-package fake of a reserve port)."""

    def __init__(self, site: SiteParams, domain_ids: tuple[str, ...]) -> None:
        self.site = site
        self.domain_ids = domain_ids
        res = site.reserve
        self.machine = ReserveMachine(
            site.n_domains, res.capacity_kw, res.start_delay_s, res.min_on_s, res.warm_start_delay_s
        )
        self.now_s = 0.0
        #: the latest commands (domain, on, kW), oldest first; bounded: serve runs for months
        self.commands: deque[tuple[str, bool, float]] = deque(maxlen=COMMANDS_KEPT)

    def advance(self, now_s: float) -> None:
        self.now_s = now_s
        self.machine.advance(now_s)

    async def read(self) -> dict[str, ReserveStatus]:
        view = self.machine.view(self.now_s)
        m = self.machine
        delivering = m.mode == RESERVE_ON
        return {
            d: ReserveStatus(
                mode=int(view.mode[i]),
                ready_in_s=float(view.ready_in_s[i]),
                min_on_left_s=float(view.min_on_left_s[i]),
                delivered_kw=float(m.assigned_kw[i]) if delivering and m.requested[i] else 0.0,
            )
            for i, d in enumerate(self.domain_ids)
        }

    async def command(self, domain_id: str, on: bool, power_kw: float, warm: bool = False) -> bool:
        i = self.domain_ids.index(domain_id)
        self.commands.append((domain_id, on, power_kw))
        self.machine.command(self.now_s, i, on, power_kw, warm)
        return True
