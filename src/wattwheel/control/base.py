"""The one interface every policy implements, and the values it sees and returns.

A policy is pure: ``decide(observation, state, forecast) -> (Decision, state)``. The simulator and
the live runtime build the :class:`Observation` (from the plant or from devices), call the
forecaster when the policy asks for one, and apply the :class:`Decision`. All per-domain fields
are arrays of shape (D,) in kW unless the name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.converter import ConverterSettings
from wattwheel.domain.reserve import RESERVE_OFF, RESERVE_ON, RESERVE_STARTING, RESERVE_WARM
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "RESERVE_OFF",
    "RESERVE_ON",
    "RESERVE_STARTING",
    "RESERVE_WARM",
    "Decision",
    "Observation",
    "Policy",
]


@dataclass(frozen=True)
class Observation:
    """What the controller knows at the start of a control period.

    Attributes:
        now_s: epoch seconds of this control period's start (passed in; no clock is read).
        dt_s: control period (s).
        demand_kw: measured IT demand per domain before any action of this period.
        critical_kw: the critical (never capped or moved) part of ``demand_kw``.
        shift_out_kw / shift_in_kw: shifts taking effect this period (scheduled ``lead`` ago).
        due_repay_kw: deferred work whose deadline forces it to run this period.
        debt_kwh: deferred work still owed.
        kes_soc: usable state of charge per bank, [0, 1].
        kes_max_discharge_kw / kes_max_charge_kw: what each bank can do for a whole period.
        reserve_mode: RESERVE_OFF / RESERVE_WARM / RESERVE_STARTING / RESERVE_ON per domain
            (the one shared machine's state, as every domain sees it).
        reserve_ready_in_s: seconds until a starting reserve delivers (0 when on).
        reserve_min_on_left_s: seconds before an on reserve may be released.
        breaker_heat: thermal state of each primary breaker, trips at 1.
        last_grid_kw: grid draw per domain in the previous period (for ramp limits).
        pinned_cap_kw: operator overrides (NaN = none): the most each domain may draw (kW); the
            fast loop caps non-critical load to keep it, never critical load.
        reserve_override: +1 force on, -1 forbid, 0 none (operator override, per domain).
        stale: domains whose measurement is stale or missing (fast loop holds safe settings).
        kes_hold_kw: what a (nearly) empty bank must draw this period to keep its rotors at
            ω_min whatever the setpoint (None: nothing).
        reserve_budget_kw: the shared reserve's capacity this controller may plan and command
            (kW): a shard process's budget from the site coordinator, or its fallback share
            (:mod:`wattwheel.control.reserve_budget`); None: the site's whole reserve.
    """

    now_s: float
    dt_s: float
    demand_kw: FloatArray
    critical_kw: FloatArray
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    due_repay_kw: FloatArray
    debt_kwh: FloatArray
    kes_soc: FloatArray
    kes_max_discharge_kw: FloatArray
    kes_max_charge_kw: FloatArray
    reserve_mode: NDArray[np.int64]
    reserve_ready_in_s: FloatArray
    reserve_min_on_left_s: FloatArray
    breaker_heat: FloatArray
    last_grid_kw: FloatArray
    pinned_cap_kw: FloatArray | None = None
    reserve_override: NDArray[np.int64] | None = None
    stale: BoolArray | None = None
    kes_hold_kw: FloatArray | None = None
    reserve_budget_kw: float | None = None

    @property
    def noncritical_kw(self) -> FloatArray:
        return np.maximum(self.demand_kw - self.critical_kw, 0.0)


def reserve_capacity_kw(site: SiteParams, obs: Observation) -> float:
    """The reserve capacity a policy may use this period: the site's, or less under a shard's
    budget (``obs.reserve_budget_kw``)."""
    cap = site.reserve.capacity_kw
    if obs.reserve_budget_kw is None:
        return cap
    return min(cap, max(obs.reserve_budget_kw, 0.0))


@dataclass(frozen=True)
class Decision:
    """What to do this control period. Per-domain arrays (D,), kW.

    Attributes:
        kes_kw: flywheel setpoint, > 0 discharge (supplies load), < 0 charge.
        cap_kw: non-critical load to cap now (iPDU/BMC limits; lost throughput).
        reserve_on: request the shared reserve to be (or stay) on for this domain.
        reserve_kw: reserve power assigned to this domain by the site coordinator.
        shift_out_kw / shift_in_kw: shift levels to take effect after the lead time.
        defer_kw: non-critical work to postpone now (becomes debt).
        repay_kw: deferred work to run now (beyond what is due).
        soc_target: the SoC the planner wants (reporting and recharge target).
        reasons: one line per domain explaining the decision (audit log).
        reserve_warm: ask for the reserve to be pre-warmed (None: no); never a start.
        converter: parameters for the flywheel converter's own loop (None: no such loop; the
            bank follows ``kes_kw``). When set, the converter decides the bank's power on its
            own measurement (:mod:`wattwheel.domain.converter`) and ``kes_kw`` is ignored.
        job_ramp_kw_per_s: the ramp-up limit at job start to ask the workload scheduler for,
            per domain (kW/s; None: no request; ``docs/scheduler-hook.md``, ``ramp_limit``).
    """

    kes_kw: FloatArray
    cap_kw: FloatArray
    reserve_on: BoolArray
    reserve_kw: FloatArray
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    defer_kw: FloatArray
    repay_kw: FloatArray
    soc_target: FloatArray
    reasons: tuple[str, ...] = field(default=())
    reserve_warm: BoolArray | None = None
    converter: ConverterSettings | None = None
    job_ramp_kw_per_s: FloatArray | None = None

    @staticmethod
    def idle(n_domains: int) -> Decision:
        z = np.zeros(n_domains)
        return Decision(
            z,
            z.copy(),
            np.zeros(n_domains, dtype=bool),
            z.copy(),
            z.copy(),
            z.copy(),
            z.copy(),
            z.copy(),
            np.ones(n_domains),
        )


class Policy(Protocol):
    """Every control policy: none, reactive, seed, predictive, oracle."""

    name: str
    #: Seconds between forecasts the policy wants (0: it never uses a forecast).
    forecast_period_s: float

    def initial_state(self, site: SiteParams) -> Any:
        """Policy memory at start (plans, counters); opaque to the caller."""
        ...

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        """Decide this period. ``forecast`` is None when none is due, missing or stale: every
        policy must then still act safely (reactive behaviour)."""
        ...
