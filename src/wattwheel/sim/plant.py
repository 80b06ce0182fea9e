"""The physical site in simulation: applies a Decision to one step of true demand.

Per domain, in order: shift orders in force take effect (truncated to the non-critical load
present), caps and deferrals come off the non-critical load, deferred work due now is forced
back on, the flywheel bank exchanges power, the shared reserve delivers once its start delay has
passed, and the rest is drawn from the primary feed. The reserve machine, the shift orders and
the deferral debt are the pure world model of :mod:`wattwheel.domain` (``reserve``, ``shifts``,
``debt``), the same the live runtime's ledger and the emulator keep, on the plant's own clock
(seconds since the first step). Overload above primary capacity
heats the breaker (inverse-time curve) and may trip it. Every quantity is metered into
:class:`~wattwheel.domain.metrics.MetricsAccumulator`.

Demand inside a step, and the measurement lag. The trace gives one mean per step; demand is
taken as constant over the step and jumping at its start. The fast loop measures it ``lag_s``
seconds late, so each step is split in two: during the first ``lag_s`` seconds (the *lag
part*) the fast loop's outputs of the previous step stay in force on the new demand - the
flywheel keeps its previous exchange (a discharge never more than the load draws), caps stay
(never into critical load), a reserve that was delivering keeps its power - and whatever they
no longer cover lands on the feed (overload and breaker heat); for the rest of the step the new
decision applies. Shifts, deferral and repayment are plan actions set at the step boundary and
apply to the whole step. The reserve is commanded at the end of the lag part. The flywheel's
standby loss over the step is taken at the rate of the step's start (as the planner's block
model does). With ``lag_s = 0`` the decision applies for the whole step.

The flywheel converter's own loop. A decision that carries converter settings
(``Decision.converter``) leaves the bank's power to the converter
(:mod:`wattwheel.domain.converter`): it runs its control periods inside the step on the step's
true load, with its own measurement latency, and the bank exchanges their mean. In
a lag part (a measurement latency that is not a whole number of steps) the converter keeps
regulating on the parameters it holds (the HPMC's new ones arrive at the end of the lag).

The step is coarse (the trace's resolution); a reserve start delay that ends inside a step is
handled by splitting that step into a before and an after part for overload and breaker heat.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_ON, Decision, Observation
from wattwheel.domain import breaker, converter, flywheel
from wattwheel.domain.debt import DebtBook
from wattwheel.domain.metrics import MetricsAccumulator
from wattwheel.domain.reserve import ReserveMachine
from wattwheel.domain.shifts import ShiftBook, pair_levels
from wattwheel.domain.site import SiteParams

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0


@dataclass
class PlantRecord:
    """What happened in one step, per domain (kW), for plots and the live emulator."""

    grid_kw: FloatArray
    kes_kw: FloatArray
    reserve_kw: FloatArray
    cap_kw: FloatArray
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    defer_kw: FloatArray
    repay_kw: FloatArray
    soc: FloatArray
    reserve_mode: NDArray[np.int64]
    trips: FloatArray


@dataclass(frozen=True)
class _Held:
    """The fast loop's outputs at the end of a step (kW per domain)."""

    kes_kw: FloatArray
    cap_kw: FloatArray
    reserve_kw: FloatArray


@dataclass(frozen=True)
class _Lagged:
    """What the lag part of a step did (kW per domain)."""

    grid_kw: FloatArray
    fw: flywheel.FlywheelStep
    cap_kw: FloatArray
    reserve_kw: FloatArray


class Plant:
    """Mutable plant state for one simulation run."""

    def __init__(
        self,
        site: SiteParams,
        dt_s: float,
        lag_s: float = 0.0,
        converter_spec: converter.ConverterSpec | None = None,
    ) -> None:
        d = site.n_domains
        if not 0.0 <= lag_s < dt_s:
            raise ValueError(f"lag_s must be in [0, dt_s): {lag_s} vs {dt_s}")
        self.site = site
        self.dt_s = dt_s
        self.lag_s = lag_s
        # The fast loop's outputs in force at the end of the previous step (held in the lag).
        self._held = _Held(np.zeros(d), np.zeros(d), np.zeros(d))
        lead_steps = int(np.ceil(float(site.flex.shift_lead_s.max(initial=0.0)) / dt_s - 1e-9))
        #: Shifts take effect after the site's longest lead time, on a step boundary.
        self.lead_s = max(lead_steps, 0) * dt_s
        self.shifts = ShiftBook(d)
        self.debt = DebtBook(site.flex.defer_deadline_s.astype(float))
        self.reserve = reserve_machine(site)
        self.step_index = 0
        self.soc = site.kes_initial_soc.astype(float).copy()
        self.heat = np.zeros(d)
        self.last_grid_kw = np.zeros(d)
        self.metrics = MetricsAccumulator(d)
        #: The flywheel converter's own loop (used when a decision carries its settings).
        self.converter_spec = converter_spec or converter.ConverterSpec()
        self._converter: converter.ConverterState | None = None
        #: The parameters the converter holds (the last decision's; it keeps regulating on
        #: them through a lag part, before the next decision's arrive).
        self._converter_settings: converter.ConverterSettings | None = None

    @property
    def now_s(self) -> float:
        """The plant's own clock: seconds since the first step."""
        return self.step_index * self.dt_s

    @property
    def reserve_mode(self) -> NDArray[np.int64]:
        return self.reserve.view(self.now_s).mode

    # -- what the controller can see -------------------------------------------------------
    def observe(self, now_s: float, demand_kw: FloatArray, critical_kw: FloatArray) -> Observation:
        if self.step_index == 0:
            # Before the first step the feed was carrying the load as it stood.
            self.last_grid_kw = demand_kw.astype(float).copy()
        kes = self.site.kes
        now = self.now_s
        # What will really move this step (the controller must not plan on more).
        noncrit = np.maximum(demand_kw - critical_kw, 0.0)
        shift_out, shift_in = self.shifts.moved(now, noncrit)
        res = self.reserve.view(now)
        due_kw = self.debt.due_kw(now, self.dt_s)
        # The decision applies once the lag part is over: the bank's limits are for the rest
        # of the step from where the held setpoint leaves it (the loss rate of the step start).
        standby_kw = flywheel.standby_loss_kw(kes, self.soc)
        soc = self.soc
        if self.lag_s > 0:
            base_kw = demand_kw - shift_out + shift_in + due_kw
            cappable = np.maximum(noncrit - shift_out, 0.0)
            was_on = self.reserve_mode == RESERVE_ON
            soc = self._lag_exchange(base_kw, cappable, was_on, standby_kw)[0].soc
        rest = self.dt_s - self.lag_s
        return Observation(
            now_s=now_s,
            dt_s=self.dt_s,
            demand_kw=demand_kw,
            critical_kw=critical_kw,
            shift_out_kw=shift_out,
            shift_in_kw=shift_in,
            due_repay_kw=due_kw,
            debt_kwh=self.debt.owed_kwh(),
            kes_soc=soc.copy(),
            kes_max_discharge_kw=flywheel.max_discharge_kw(kes, soc, rest, standby_kw),
            kes_max_charge_kw=flywheel.max_charge_kw(kes, soc, rest, standby_kw),
            reserve_mode=res.mode,
            reserve_ready_in_s=res.ready_in_s,
            reserve_min_on_left_s=res.min_on_left_s,
            breaker_heat=self.heat.copy(),
            last_grid_kw=self.last_grid_kw.copy(),
            kes_hold_kw=flywheel.hold_kw(kes, soc, rest, standby_kw),
        )

    # -- one step ----------------------------------------------------------------------------
    def step(self, demand_kw: FloatArray, critical_kw: FloatArray, dec: Decision) -> PlantRecord:
        dt, now, lag = self.dt_s, self.now_s, self.lag_s
        site = self.site
        noncrit = np.maximum(demand_kw - critical_kw, 0.0)
        out_kw, in_kw = self.shifts.moved(now, noncrit)
        self._schedule_shifts(now, dec)
        movable = np.maximum(noncrit - out_kw, 0.0)
        cap_kw = np.clip(dec.cap_kw, 0.0, demand_kw - out_kw)
        critical_capped = np.maximum(cap_kw - movable, 0.0)
        defer_kw = np.clip(dec.defer_kw, 0.0, np.maximum(movable - cap_kw, 0.0))
        repay_kw = self.debt.settle(now, dt, defer_kw, dec.repay_kw)
        base_kw = demand_kw - out_kw + in_kw - defer_kw + repay_kw
        net_kw = base_kw - cap_kw

        standby_kw = flywheel.standby_loss_kw(site.kes, self.soc)
        was_on = self.reserve_mode == RESERVE_ON
        lagged = self._lag_part(base_kw, np.maximum(movable - defer_kw, 0.0), was_on, standby_kw)
        rest = dt - lag
        setpoint = dec.kes_kw
        if dec.converter is not None:
            setpoint = self._converter_setpoint(net_kw, dec.converter, rest, standby_kw)
        self._converter_settings = dec.converter
        fw = flywheel.step(site.kes, self.soc, setpoint, rest, standby_kw)
        self.soc = fw.soc
        machine = self.reserve
        before_meter = _reserve_meter(machine)
        # Commanded once the new demand is measured, at the end of the lag part.
        machine.command_all(now + lag, dec.reserve_on, dec.reserve_kw, dec.reserve_warm)
        on_frac = np.full(site.n_domains, machine.on_fraction(now + lag, rest))
        reserve_kw = machine.delivery_kw(net_kw - fw.power_kw)
        mode = machine.view(now + lag).mode
        machine.advance(now + dt)

        before = net_kw - fw.power_kw
        after = before - reserve_kw
        grid_kw = before - reserve_kw * on_frac
        if lagged is not None:
            self.heat = breaker.step_heat(
                site.breaker, self.heat, lagged.grid_kw / site.primary_kw, lag
            )
        trips = self._breaker(before, after, on_frac, rest)
        self._meter(grid_kw, before, after, on_frac, reserve_kw, cap_kw, critical_capped, rest)
        self._meter_rest(out_kw, defer_kw, fw, trips, _reserve_meter(machine) - before_meter)
        delivering = machine.view(now + dt).mode == RESERVE_ON  # at the end of the step
        self._held = _Held(fw.power_kw, cap_kw, reserve_kw * delivering)
        w = rest / dt
        kes_kw, res_kw, cap_avg = fw.power_kw * w, reserve_kw * on_frac * w, cap_kw * w
        if lagged is not None:
            self._meter_lag(lagged)
            kes_kw = kes_kw + lagged.fw.power_kw * (lag / dt)
            res_kw = res_kw + lagged.reserve_kw * (lag / dt)
            cap_avg = cap_avg + lagged.cap_kw * (lag / dt)
        grid_avg = base_kw - cap_avg - kes_kw - res_kw
        self.metrics.observe_grid(grid_avg, dt)
        self.last_grid_kw = grid_avg
        self.step_index += 1
        return PlantRecord(
            grid_avg,
            kes_kw,
            res_kw,
            cap_avg,
            out_kw,
            in_kw,
            defer_kw,
            repay_kw,
            self.soc.copy(),
            mode,
            trips,
        )

    def _converter_setpoint(
        self,
        load_kw: FloatArray,
        settings: converter.ConverterSettings,
        rest_s: float,
        standby_kw: FloatArray,
        commit: bool = True,
    ) -> FloatArray:
        """The bank's mean power over ``rest_s`` seconds as the converter's own loop sets it
        on the true load (its control periods inside the step, its own latency); ``commit``
        False leaves the loop's state as it was (a look-ahead)."""
        spec, kes = self.converter_spec, self.site.kes
        if self._converter is None:
            self._converter = converter.ConverterState.start(spec, load_kw)
        state = self._converter if commit else copy.deepcopy(self._converter)
        periods = max(int(round(rest_s / spec.control_period_s)), 1)
        out = converter.run(
            spec,
            settings,
            state,
            load_kw,
            periods,
            self.soc,
            kes.rated_power_kw,
            flywheel.max_discharge_kw(kes, self.soc, rest_s, standby_kw),
            flywheel.max_charge_kw(kes, self.soc, rest_s, standby_kw),
        )
        return out.kes_kw

    def _lag_part(
        self,
        base_kw: FloatArray,
        cappable_kw: FloatArray,
        was_on: NDArray[np.bool_],
        standby_kw: FloatArray,
    ) -> _Lagged | None:
        """The first ``lag_s`` seconds: last step's flywheel exchange, caps and reserve power
        held on this step's demand (the fast loop has not measured it yet)."""
        if self.lag_s <= 0.0:
            return None
        fw, cap_kw, res_kw, load_kw = self._lag_exchange(
            base_kw, cappable_kw, was_on, standby_kw, commit=True
        )
        self.soc = fw.soc
        return _Lagged(load_kw - res_kw - fw.power_kw, fw, cap_kw, res_kw)

    def _lag_exchange(
        self,
        base_kw: FloatArray,
        cappable_kw: FloatArray,
        was_on: NDArray[np.bool_],
        standby_kw: FloatArray,
        commit: bool = False,
    ) -> tuple[flywheel.FlywheelStep, FloatArray, FloatArray, FloatArray]:
        """What the held outputs do over the lag part (the plant is not changed, except the
        converter loop's state with ``commit``). A converter loop keeps regulating on the
        parameters it holds: it does not wait for the HPMC."""
        held = self._held
        cap_kw = np.clip(held.cap_kw, 0.0, cappable_kw * (1.0 - self.site.flex.cap_floor_fraction))
        load_kw = base_kw - cap_kw
        res_kw = np.where(was_on, np.clip(held.reserve_kw, 0.0, np.maximum(load_kw, 0.0)), 0.0)
        settings = self._converter_settings
        if settings is not None:
            setpoint = self._converter_setpoint(load_kw, settings, self.lag_s, standby_kw, commit)
        else:
            # A discharge never exceeds what the load still draws from the feed (no export).
            setpoint = np.minimum(held.kes_kw, np.maximum(load_kw - res_kw, 0.0))
        fw = flywheel.step(self.site.kes, self.soc, setpoint, self.lag_s, standby_kw)
        return fw, cap_kw, res_kw, load_kw

    def _meter_lag(self, lagged: _Lagged) -> None:
        dt_h, m = self.lag_s / S_PER_H, self.metrics
        over = np.maximum(lagged.grid_kw - self.site.primary_kw, 0.0)
        m.add("overload_energy_kwh", over * dt_h)
        m.add("overload_seconds", (over > 1e-9).astype(float) * self.lag_s)
        m.add("reserve_energy_kwh", lagged.reserve_kw * dt_h)
        m.add("capped_energy_kwh", lagged.cap_kw * dt_h)
        m.add("kes_losses_kwh", lagged.fw.loss_kwh)
        m.add("kes_throughput_kwh", lagged.fw.throughput_kwh)

    def _schedule_shifts(self, now_s: float, dec: Decision) -> None:
        """The decided levels become shift orders (one per source/destination pair, each
        replacing the pair's previous one), in force after the lead time for a plan period."""
        cap = self.site.flex.shift_max_kw
        levels = pair_levels(
            np.clip(dec.shift_out_kw, 0.0, cap), np.clip(dec.shift_in_kw, 0.0, cap)
        )
        self.shifts.prune(now_s)
        period = max(self.site.plan_period_s, self.dt_s)
        for order in self.shifts.orders_due(now_s, levels, self.lead_s, period):
            self.shifts.place(order)

    def _breaker(
        self, before: FloatArray, after: FloatArray, on_frac: FloatArray, dt: float
    ) -> FloatArray:
        primary, params = self.site.primary_kw, self.site.breaker
        heat = breaker.step_heat(params, self.heat, before / primary, dt * (1 - on_frac))
        heat = breaker.step_heat(params, heat, after / primary, dt * on_frac)
        trips = breaker.tripped(heat).astype(float)
        self.heat = np.where(trips > 0, 0.0, heat)
        return trips

    def _meter(
        self,
        grid_kw: FloatArray,
        before: FloatArray,
        after: FloatArray,
        on_frac: FloatArray,
        reserve_kw: FloatArray,
        cap_kw: FloatArray,
        critical_capped: FloatArray,
        rest_s: float,
    ) -> None:
        """The fast loop's part of the step after the lag (``rest_s`` seconds)."""
        dt, dt_h, m = rest_s, rest_s / S_PER_H, self.metrics
        primary = self.site.primary_kw
        over_before = np.maximum(before - primary, 0.0)
        over_after = np.maximum(after - primary, 0.0)
        m.add("overload_energy_kwh", (over_before * (1 - on_frac) + over_after * on_frac) * dt_h)
        busy = (over_before > 1e-9) * (1 - on_frac) + (over_after > 1e-9) * on_frac
        m.add("overload_seconds", busy * dt)
        m.add("reserve_energy_kwh", reserve_kw * on_frac * dt_h)
        m.add("capped_energy_kwh", cap_kw * dt_h)
        m.add("critical_capped_energy_kwh", critical_capped * dt_h)

    def _meter_rest(
        self,
        out_kw: FloatArray,
        defer_kw: FloatArray,
        fw: flywheel.FlywheelStep,
        trips: FloatArray,
        reserve_delta: FloatArray,
    ) -> None:
        """Shifts, deferrals, the flywheel, trips, and this step's shares of the one reserve
        machine's starts, running and warm seconds (rows of ``reserve_delta``)."""
        dt_h, m = self.dt_s / S_PER_H, self.metrics
        m.add("breaker_trips", trips)
        m.add("shifted_energy_kwh", out_kw * dt_h)
        m.add("deferred_energy_kwh", defer_kw * dt_h)
        m.add("kes_losses_kwh", fw.loss_kwh)
        m.add("kes_throughput_kwh", fw.throughput_kwh)
        m.add("reserve_activations", reserve_delta[0])
        m.add("reserve_machine_starts", reserve_delta[0])
        m.add("reserve_seconds", reserve_delta[1])
        m.add("reserve_warm_seconds", reserve_delta[2])


def reserve_machine(site: SiteParams) -> ReserveMachine:
    """The site's one shared reserve, from its parameters."""
    res = site.reserve
    return ReserveMachine(
        site.n_domains, res.capacity_kw, res.start_delay_s, res.min_on_s, res.warm_start_delay_s
    )


def _reserve_meter(machine: ReserveMachine) -> FloatArray:
    """Per-domain shares of starts, running seconds and warm seconds so far, rows (3, D)."""
    return np.vstack([machine.domain_starts, machine.domain_running_s, machine.domain_warm_s])
