"""The physical site in simulation: applies a Decision to one step of true demand.

Per domain, in order: shifts scheduled ``lead`` ago take effect (truncated to the non-critical
load present), caps and deferrals come off the non-critical load, deferred work due now is
forced back on, the flywheel bank exchanges power, the shared reserve delivers once its start
delay has passed, and the rest is drawn from the primary feed. Overload above primary capacity
heats the breaker (inverse-time curve) and may trip it. Every quantity is metered into
:class:`~wattwheel.domain.metrics.MetricsAccumulator`.

The step is coarse (the trace's resolution); a reserve start delay that ends inside a step is
handled by splitting that step into a before and an after part for overload and breaker heat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import (
    RESERVE_OFF,
    RESERVE_ON,
    RESERVE_STARTING,
    Decision,
    Observation,
)
from wattwheel.domain import breaker, flywheel
from wattwheel.domain.metrics import MetricsAccumulator
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


class Plant:
    """Mutable plant state for one simulation run."""

    def __init__(self, site: SiteParams, dt_s: float) -> None:
        d = site.n_domains
        self.site = site
        self.dt_s = dt_s
        self.lead_steps = int(np.ceil(float(site.flex.shift_lead_s.max(initial=0.0)) / dt_s - 1e-9))
        self.deadline_steps = np.maximum(np.ceil(site.flex.defer_deadline_s / dt_s), 1).astype(int)
        depth = max(self.lead_steps, 0) + 1
        self._shift_out = np.zeros((depth, d))
        self._shift_in = np.zeros((depth, d))
        self._debt = np.zeros((int(self.deadline_steps.max(initial=1)) + 1, d))
        self.step_index = 0
        self.soc = site.kes_initial_soc.astype(float).copy()
        self.reserve_mode = np.full(d, RESERVE_OFF, dtype=np.int64)
        self.reserve_ready_in_s = np.zeros(d)
        self.reserve_on_for_s = np.zeros(d)
        self.heat = np.zeros(d)
        self.last_grid_kw = np.zeros(d)
        self.metrics = MetricsAccumulator(d)

    # -- what the controller can see -------------------------------------------------------
    def observe(self, now_s: float, demand_kw: FloatArray, critical_kw: FloatArray) -> Observation:
        if self.step_index == 0:
            # Before the first step the feed was carrying the load as it stood.
            self.last_grid_kw = demand_kw.astype(float).copy()
        kes = self.site.kes
        # What will really move this step (the controller must not plan on more).
        shift_out, shift_in = self._moved_shifts(np.maximum(demand_kw - critical_kw, 0.0))
        return Observation(
            now_s=now_s,
            dt_s=self.dt_s,
            demand_kw=demand_kw,
            critical_kw=critical_kw,
            shift_out_kw=shift_out,
            shift_in_kw=shift_in,
            due_repay_kw=self._due_debt_kwh() * S_PER_H / self.dt_s,
            debt_kwh=self._debt.sum(axis=0),
            kes_soc=self.soc.copy(),
            kes_max_discharge_kw=flywheel.max_discharge_kw(kes, self.soc, self.dt_s),
            kes_max_charge_kw=flywheel.max_charge_kw(kes, self.soc, self.dt_s),
            reserve_mode=self.reserve_mode.copy(),
            reserve_ready_in_s=self.reserve_ready_in_s.copy(),
            reserve_min_on_left_s=np.maximum(
                self.site.reserve.min_on_s - self.reserve_on_for_s, 0.0
            )
            * (self.reserve_mode != RESERVE_OFF),
            breaker_heat=self.heat.copy(),
            last_grid_kw=self.last_grid_kw.copy(),
        )

    def _due_debt_kwh(self) -> FloatArray:
        # Row 0 of the debt ring is the bucket that falls due this step.
        due: FloatArray = self._debt[self.step_index % self._debt.shape[0]].copy()
        return due

    # -- one step ----------------------------------------------------------------------------
    def step(self, demand_kw: FloatArray, critical_kw: FloatArray, dec: Decision) -> PlantRecord:
        dt = self.dt_s
        site = self.site
        noncrit = np.maximum(demand_kw - critical_kw, 0.0)
        out_kw, in_kw = self._apply_shifts(noncrit)
        self._schedule_shifts(dec)
        movable = np.maximum(noncrit - out_kw, 0.0)
        cap_kw = np.clip(dec.cap_kw, 0.0, demand_kw - out_kw)
        critical_capped = np.maximum(cap_kw - movable, 0.0)
        defer_kw = np.clip(dec.defer_kw, 0.0, np.maximum(movable - cap_kw, 0.0))
        repay_kw = self._repay(dec.repay_kw)
        net_kw = demand_kw - out_kw + in_kw - cap_kw - defer_kw + repay_kw
        self._add_debt(defer_kw * dt / S_PER_H)

        fw = flywheel.step(site.kes, self.soc, dec.kes_kw, dt)
        self.soc = fw.soc
        started = self._reserve_transitions(dec.reserve_on)
        on_frac = self._reserve_fraction()
        reserve_kw = self._reserve_delivery(dec.reserve_kw, net_kw - fw.power_kw)

        before = net_kw - fw.power_kw
        after = before - reserve_kw
        grid_kw = before - reserve_kw * on_frac
        trips = self._breaker(before, after, on_frac)
        self._meter(
            grid_kw,
            before,
            after,
            on_frac,
            reserve_kw,
            started,
            cap_kw,
            critical_capped,
            out_kw,
            defer_kw,
            fw,
            trips,
        )
        self.last_grid_kw = grid_kw
        self.step_index += 1
        return PlantRecord(
            grid_kw,
            fw.power_kw,
            reserve_kw * on_frac,
            cap_kw,
            out_kw,
            in_kw,
            defer_kw,
            repay_kw,
            self.soc.copy(),
            self.reserve_mode.copy(),
            trips,
        )

    def _moved_shifts(self, noncrit: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Shifts due now. Work moves only where it can leave *and* be received: the moved total
        is the smaller of what the sources can release (their non-critical load) and what the
        destinations were scheduled to take, so work is never lost nor created."""
        slot = self.step_index % self._shift_out.shape[0]
        want_out = self._shift_out[slot]
        want_in = self._shift_in[slot]
        can_out = np.minimum(want_out, noncrit)
        moved = min(float(can_out.sum()), float(want_in.sum()))
        if moved <= 0:
            return np.zeros_like(want_out), np.zeros_like(want_in)
        return can_out * (moved / float(can_out.sum())), want_in * (moved / float(want_in.sum()))

    def _apply_shifts(self, noncrit: FloatArray) -> tuple[FloatArray, FloatArray]:
        out_kw, in_kw = self._moved_shifts(noncrit)
        slot = self.step_index % self._shift_out.shape[0]
        self._shift_out[slot] = 0.0
        self._shift_in[slot] = 0.0
        return out_kw, in_kw

    def _schedule_shifts(self, dec: Decision) -> None:
        """A shift takes effect after the longest lead time of the site's domains, for the
        source and the destination alike (the work leaves when it can arrive)."""
        depth = self._shift_out.shape[0]
        out = np.clip(dec.shift_out_kw, 0.0, self.site.flex.shift_max_kw)
        inn = np.clip(dec.shift_in_kw, 0.0, self.site.flex.shift_max_kw)
        slot = (self.step_index + self.lead_steps) % depth
        self._shift_out[slot] += out
        self._shift_in[slot] += inn

    def _add_debt(self, energy_kwh: FloatArray) -> None:
        depth = self._debt.shape[0]
        for d, steps in enumerate(self.deadline_steps):
            self._debt[(self.step_index + int(steps)) % depth, d] += energy_kwh[d]

    def _repay(self, requested_kw: FloatArray) -> FloatArray:
        """Forced repayment of what is due, then voluntary repayment, oldest first."""
        dt_h = self.dt_s / S_PER_H
        depth = self._debt.shape[0]
        due_slot = self.step_index % depth
        forced = self._debt[due_slot].copy()
        self._debt[due_slot] = 0.0
        want = np.maximum(requested_kw, 0.0) * dt_h
        paid = forced.copy()
        for k in range(1, depth):
            if not np.any(want > 1e-12):
                break
            slot = (self.step_index + k) % depth
            take = np.minimum(want, self._debt[slot])
            self._debt[slot] -= take
            want -= take
            paid += take
        repaid_kw: FloatArray = paid / dt_h
        return repaid_kw

    def _reserve_transitions(self, request: NDArray[np.bool_]) -> NDArray[np.bool_]:
        res = self.site.reserve
        start: NDArray[np.bool_] = (self.reserve_mode == RESERVE_OFF) & request
        self.reserve_mode[start] = RESERVE_STARTING
        self.reserve_ready_in_s[start] = res.start_delay_s
        self.reserve_on_for_s[start] = 0.0
        release = (
            (self.reserve_mode == RESERVE_ON) & ~request & (self.reserve_on_for_s >= res.min_on_s)
        )
        self.reserve_mode[release] = RESERVE_OFF
        self.reserve_on_for_s[release] = 0.0
        return start

    def _reserve_fraction(self) -> FloatArray:
        """Fraction of this step during which the reserve delivers; advances its timers."""
        dt = self.dt_s
        frac = np.zeros(self.site.n_domains)
        on = self.reserve_mode == RESERVE_ON
        frac[on] = 1.0
        starting = self.reserve_mode == RESERVE_STARTING
        ready = starting & (self.reserve_ready_in_s < dt)
        frac[ready] = (dt - self.reserve_ready_in_s[ready]) / dt
        self.reserve_ready_in_s[starting] = np.maximum(self.reserve_ready_in_s[starting] - dt, 0.0)
        self.reserve_mode[ready] = RESERVE_ON
        running = self.reserve_mode != RESERVE_OFF
        self.reserve_on_for_s[running] += dt
        return frac

    def _reserve_delivery(self, assigned_kw: FloatArray, need_kw: FloatArray) -> FloatArray:
        """Reserve power per domain: what was assigned, no more than needed, within the
        shared capacity (scaled down in proportion if the coordinator over-assigned)."""
        live = self.reserve_mode != RESERVE_OFF
        kw = np.where(live, np.clip(assigned_kw, 0.0, np.maximum(need_kw, 0.0)), 0.0)
        total = float(kw.sum())
        cap = self.site.reserve.capacity_kw
        if total > cap > 0:
            kw = kw * (cap / total)
        elif cap <= 0:
            kw = np.zeros_like(kw)
        return kw

    def _breaker(self, before: FloatArray, after: FloatArray, on_frac: FloatArray) -> FloatArray:
        primary, params, dt = self.site.primary_kw, self.site.breaker, self.dt_s
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
        started: NDArray[np.bool_],
        cap_kw: FloatArray,
        critical_capped: FloatArray,
        out_kw: FloatArray,
        defer_kw: FloatArray,
        fw: flywheel.FlywheelStep,
        trips: FloatArray,
    ) -> None:
        dt, dt_h, m = self.dt_s, self.dt_s / S_PER_H, self.metrics
        primary = self.site.primary_kw
        over_before = np.maximum(before - primary, 0.0)
        over_after = np.maximum(after - primary, 0.0)
        m.add("overload_energy_kwh", (over_before * (1 - on_frac) + over_after * on_frac) * dt_h)
        busy = (over_before > 1e-9) * (1 - on_frac) + (over_after > 1e-9) * on_frac
        m.add("overload_seconds", busy * dt)
        m.add("reserve_energy_kwh", reserve_kw * on_frac * dt_h)
        m.add("reserve_activations", started.astype(float))
        m.add("reserve_seconds", (self.reserve_mode != RESERVE_OFF) * dt)
        m.add("breaker_trips", trips)
        m.add("capped_energy_kwh", cap_kw * dt_h)
        m.add("critical_capped_energy_kwh", critical_capped * dt_h)
        m.add("shifted_energy_kwh", out_kw * dt_h)
        m.add("deferred_energy_kwh", defer_kw * dt_h)
        m.add("kes_losses_kwh", fw.loss_kwh)
        m.add("kes_throughput_kwh", fw.throughput_kwh)
        m.observe_grid(grid_kw, dt)
