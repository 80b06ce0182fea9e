"""The plant, one step at a time, on the tiny two-domain site (tests/data/sites/tiny.toml):
reserve start delay and minimum on-time, shifts after their lead time, deferral debt forced
back at its deadline, caps metered into critical load, breaker trips. Numbers are hand-computed
in the comments (dt = 60 s, so 1 kW for one step = 1/60 kWh)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.control.base import (
    RESERVE_OFF,
    RESERVE_ON,
    RESERVE_STARTING,
    RESERVE_WARM,
    Decision,
)
from wattwheel.control.simple import NonePolicy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.sim.plant import Plant
from wattwheel.sim.simulator import without_kes

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DT_S = 60.0
KWH = 1.0 / 60.0  # energy of 1 kW over one step


def site(*replacements: tuple[str, str], peak_a: float = 100.0, peak_b: float = 50.0) -> SiteParams:
    text = TINY
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    demand = {"A": np.array([peak_a]), "B": np.array([peak_b])}
    return resolve_site(parse_site(text), demand)


def decision(n: int = 2, **fields: list[float]) -> Decision:
    dec = Decision.idle(n)
    values = {k: np.array(v, dtype=float) for k, v in fields.items()}
    return Decision(
        values.get("kes_kw", dec.kes_kw), values.get("cap_kw", dec.cap_kw), dec.reserve_on,
        dec.reserve_kw, values.get("shift_out_kw", dec.shift_out_kw),
        values.get("shift_in_kw", dec.shift_in_kw), values.get("defer_kw", dec.defer_kw),
        values.get("repay_kw", dec.repay_kw), dec.soc_target,
    )  # fmt: skip


def run_none(plant: Plant, demand_a: list[float], demand_b: float = 50.0) -> list[int]:
    """Drive the plant with the ``none`` policy; returns the reserve mode of A after each step."""
    policy = NonePolicy(plant.site)
    modes = []
    for t, d_a in enumerate(demand_a):
        demand = np.array([d_a, demand_b])
        crit = 0.7 * demand
        obs = plant.observe(t * DT_S, demand, crit)
        dec, _ = policy.decide(obs, None, None)
        plant.step(demand, crit, dec)
        modes.append(int(plant.reserve_mode[0]))
    return modes


def totals(plant: Plant, name: str) -> np.ndarray:
    return plant.metrics.totals[name]


def test_reserve_start_delay_and_minimum_on_time() -> None:
    # A is 20 kW over its 100 kW primary for 3 steps (t = 60..240 s) under `none`. The reserve
    # (delay 120 s, min on 300 s) starts at t = 60 and delivers from t = 180: steps 1 and 2 are
    # overloaded by 20 kW (2 · 20/60 = 0.6667 kWh, 120 s), step 3 is covered (20/60 = 0.3333
    # kWh of reserve energy). It stays on (delivering nothing) until 300 s after its start:
    # steps 1..5 = 300 s, one activation. Modes are read at the end of each step: ready at the
    # end of step 2 (t = 180 s).
    plant = Plant(without_kes(site()), DT_S)
    modes = run_none(plant, [90, 120, 120, 120, 90, 90, 90, 90, 90, 90])
    off, starting, on = RESERVE_OFF, RESERVE_STARTING, RESERVE_ON
    assert modes == [off, starting, on, on, on, on, off, off, off, off]
    assert totals(plant, "reserve_activations")[0] == 1
    assert totals(plant, "reserve_seconds")[0] == pytest.approx(300.0)
    assert totals(plant, "reserve_energy_kwh")[0] == pytest.approx(20 * KWH)
    assert totals(plant, "overload_energy_kwh")[0] == pytest.approx(2 * 20 * KWH)
    assert totals(plant, "overload_seconds")[0] == pytest.approx(120.0)
    # B never exceeded its primary: nothing there.
    assert totals(plant, "reserve_activations")[1] == 0
    assert totals(plant, "overload_seconds")[1] == 0
    # 120 % for 2 min is far from a trip (allowed ≈ 7991 s at 1.2 on the default curve).
    assert totals(plant, "breaker_trips").sum() == 0


def test_reserve_delay_ending_inside_a_step_splits_it() -> None:
    # Delay 90 s: the reserve delivers for the second half of step 2. Overload lasts exactly
    # the 90 s delay: 20 kW · (60 + 30) s = 0.5 kWh; the reserve gives 20 kW for 30 s + 60 s
    # = 0.5 kWh.
    plant = Plant(without_kes(site(("start_delay_s = 120", "start_delay_s = 90"))), DT_S)
    run_none(plant, [90, 120, 120, 120, 90, 90, 90, 90])
    assert totals(plant, "overload_seconds")[0] == pytest.approx(90.0)
    assert totals(plant, "overload_energy_kwh")[0] == pytest.approx(20 * 1.5 * KWH)
    assert totals(plant, "reserve_energy_kwh")[0] == pytest.approx(20 * 1.5 * KWH)
    assert totals(plant, "reserve_seconds")[0] == pytest.approx(300.0)


def test_a_new_excess_after_release_is_a_second_activation() -> None:
    plant = Plant(without_kes(site(("min_on_s = 300", "min_on_s = 60"))), DT_S)
    # On at step 1 (delay 2 steps, so still starting at step 2), released at step 4, on again.
    run_none(plant, [90, 120, 120, 90, 90, 90, 120, 90])
    assert totals(plant, "reserve_activations")[0] == 2


def test_shift_takes_effect_after_the_lead_time_and_arrives() -> None:
    # Lead 120 s = 2 steps. A shift of 10 kW from A to B commanded at step 0 shows at step 2:
    # A draws 100 − 10 = 90 kW and B 50 + 10 = 60 kW; 10/60 kWh counted as shifted.
    s = site()
    plant = Plant(s, DT_S)
    grids = []
    for t in range(4):
        demand = np.array([100.0, 50.0])
        obs = plant.observe(t * DT_S, demand, 0.7 * demand)
        if t == 2:
            np.testing.assert_allclose(obs.shift_out_kw, [10.0, 0.0])
            np.testing.assert_allclose(obs.shift_in_kw, [0.0, 10.0])
        dec = decision(shift_out_kw=[10, 0], shift_in_kw=[0, 10]) if t == 0 else decision()
        # Keep the flywheel idle so the grid shows only the shift.
        rec = plant.step(demand, 0.7 * demand, dec)
        grids.append(rec.grid_kw.copy())
    np.testing.assert_allclose(grids, [[100, 50], [100, 50], [90, 60], [100, 50]])
    assert totals(plant, "shifted_energy_kwh")[0] == pytest.approx(10 * KWH)
    assert totals(plant, "shifted_energy_kwh")[1] == 0.0


def test_shift_is_truncated_to_the_noncritical_load_present() -> None:
    # At step 2 A's non-critical load is only 100 − 96 = 4 kW: only 4 kW leave, and B receives
    # the same 4 kW (work arrives only if it left).
    plant = Plant(site(), DT_S)
    recs = []
    for t in range(3):
        demand = np.array([100.0, 50.0])
        crit = np.array([96.0, 35.0]) if t == 2 else 0.7 * demand
        plant.observe(t * DT_S, demand, crit)
        dec = decision(shift_out_kw=[10, 0], shift_in_kw=[0, 10]) if t == 0 else decision()
        recs.append(plant.step(demand, crit, dec))
    np.testing.assert_allclose(recs[2].shift_out_kw, [4.0, 0.0])
    np.testing.assert_allclose(recs[2].shift_in_kw, [0.0, 4.0])
    np.testing.assert_allclose(recs[2].grid_kw, [96.0, 54.0])


def test_shift_above_the_site_limit_is_clipped() -> None:
    # shift_max = 20 % of the domain peak: 20 kW for A, 10 kW for B.
    plant = Plant(site(), DT_S)
    recs = []
    for t in range(3):
        demand = np.array([100.0, 50.0])
        plant.observe(t * DT_S, demand, 0.5 * demand)
        dec = decision(shift_out_kw=[30, 0], shift_in_kw=[0, 30]) if t == 0 else decision()
        recs.append(plant.step(demand, 0.5 * demand, dec))
    # Out is clipped to 20 kW, in to B's 10 kW; work moves only where it is received: 10 kW.
    np.testing.assert_allclose(recs[2].shift_out_kw, [10.0, 0.0])
    np.testing.assert_allclose(recs[2].shift_in_kw, [0.0, 10.0])


def deferral_site() -> SiteParams:
    return site(("shift_max_fraction_of_peak = 0.2", "defer_deadline_s = 180"))


def test_deferral_becomes_debt_forced_back_at_its_deadline() -> None:
    # Deadline 180 s = 3 steps. 6 kW deferred at step 0 → 0.1 kWh of debt, forced back as
    # 6 kW at step 3; A draws 94, 100, 100, 106, 100.
    plant = Plant(deferral_site(), DT_S)
    grids, debts, due = [], [], []
    for t in range(5):
        demand = np.array([100.0, 50.0])
        obs = plant.observe(t * DT_S, demand, 0.7 * demand)
        debts.append(float(obs.debt_kwh[0]))
        due.append(float(obs.due_repay_kw[0]))
        dec = decision(defer_kw=[6, 0]) if t == 0 else decision()
        grids.append(float(plant.step(demand, 0.7 * demand, dec).grid_kw[0]))
    np.testing.assert_allclose(grids, [94, 100, 100, 106, 100])
    np.testing.assert_allclose(debts, [0, 0.1, 0.1, 0.1, 0])
    np.testing.assert_allclose(due, [0, 0, 0, 6, 0])
    assert totals(plant, "deferred_energy_kwh")[0] == pytest.approx(0.1)


def test_voluntary_repayment_comes_off_the_debt_first() -> None:
    # 6 kW deferred at step 0 (0.1 kWh); 3 kW repaid by choice at step 1 (0.05 kWh), so only
    # 0.05 kWh = 3 kW is left to force at the deadline (step 3).
    plant = Plant(deferral_site(), DT_S)
    grids = []
    for t in range(4):
        demand = np.array([100.0, 50.0])
        plant.observe(t * DT_S, demand, 0.7 * demand)
        dec = {0: decision(defer_kw=[6, 0]), 1: decision(repay_kw=[3, 0])}.get(t, decision())
        grids.append(float(plant.step(demand, 0.7 * demand, dec).grid_kw[0]))
    np.testing.assert_allclose(grids, [94, 103, 100, 103])


def test_deferral_cannot_exceed_the_noncritical_load() -> None:
    plant = Plant(deferral_site(), DT_S)
    demand = np.array([100.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision(defer_kw=[50, 0]))
    # Only the 30 kW of non-critical load can wait.
    assert rec.defer_kw[0] == pytest.approx(30.0)


def test_a_cap_into_critical_load_is_metered() -> None:
    # 30 kW non-critical; a decision capping 40 kW takes 10 kW of critical load: metered as
    # 40/60 kWh capped, of which 10/60 kWh critical.
    plant = Plant(site(), DT_S)
    demand = np.array([100.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, decision(cap_kw=[40, 0]))
    assert totals(plant, "capped_energy_kwh")[0] == pytest.approx(40 * KWH)
    assert totals(plant, "critical_capped_energy_kwh")[0] == pytest.approx(10 * KWH)
    # A cap within the non-critical load is not critical.
    plant.observe(DT_S, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, decision(cap_kw=[0, 10]))
    assert totals(plant, "critical_capped_energy_kwh")[1] == 0.0


def test_flywheel_discharge_covers_an_excess() -> None:
    # 105 kW demand, KES gives 5 kW: grid at primary, no overload, 5/60 kWh throughput.
    plant = Plant(site(), DT_S)
    demand = np.array([105.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision(kes_kw=[5, 0]))
    assert rec.grid_kw[0] == pytest.approx(100.0)
    assert totals(plant, "overload_energy_kwh")[0] == 0.0
    assert totals(plant, "kes_throughput_kwh")[0] == pytest.approx(5 * KWH)
    assert rec.soc[0] < 1.0


def test_sustained_overload_trips_the_breaker() -> None:
    # 135 % with nothing done: the default curve allows 3600 s → a trip at the 60th step.
    plant = Plant(site(), DT_S)
    demand = np.array([135.0, 50.0])
    trip_step = None
    for t in range(70):
        plant.observe(t * DT_S, demand, 0.7 * demand)
        rec = plant.step(demand, 0.7 * demand, decision())
        if rec.trips[0] and trip_step is None:
            trip_step = t
    assert trip_step is not None and 58 <= trip_step <= 60
    assert totals(plant, "breaker_trips")[0] == 1
    assert totals(plant, "overload_energy_kwh")[0] == pytest.approx(35 * 70 * KWH)


def run_shift(s: SiteParams, out: list[float], inn: list[float], steps: int = 5) -> np.ndarray:
    """Command one shift at step 0 (flywheels idle); returns the grid draw per step (T, 2)."""
    plant = Plant(s, DT_S)
    grids = []
    for t in range(steps):
        demand = np.array([100.0, 50.0])
        plant.observe(t * DT_S, demand, 0.7 * demand)
        dec = decision(shift_out_kw=out, shift_in_kw=inn) if t == 0 else decision()
        grids.append(plant.step(demand, 0.7 * demand, dec).grid_kw.copy())
    return np.array(grids)


def test_shifted_work_is_conserved_without_a_destination() -> None:
    grids = run_shift(site(), out=[10, 0], inn=[0, 0])
    # Work never disappears: the site draws the whole demand at every step.
    np.testing.assert_allclose(grids.sum(axis=1), 150.0)


def test_shifted_work_arrives_with_per_domain_lead_times() -> None:
    # A keeps the default 120 s lead, B has none.
    s = site(
        ('racks = ["b1"]\nprimary_capacity_kw = 100', 'racks = ["b1"]\nprimary_capacity_kw = 100'
         "\nflex = { shift_lead_s = 0 }"),
    )  # fmt: skip
    np.testing.assert_allclose(s.flex.shift_lead_s, [120.0, 0.0])
    grids = run_shift(s, out=[10, 0], inn=[0, 10])
    np.testing.assert_allclose(grids.sum(axis=1), 150.0)
    assert grids[:, 1].max() == pytest.approx(60.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 40.0), st.floats(0.0, 40.0), st.floats(60.0, 120.0)),
        min_size=1,
        max_size=25,
    )
)
def test_deferred_work_is_never_lost_nor_late(steps: list[tuple[float, float, float]]) -> None:
    """Whatever a policy asks: nothing is repaid that was not deferred, and everything deferred
    is repaid by its deadline (3 steps)."""
    s = deferral_site()
    plant = Plant(s, DT_S)
    deferred, repaid = [], []
    for t, (defer, repay, d_a) in enumerate(steps):
        demand = np.array([d_a, 50.0])
        plant.observe(t * DT_S, demand, 0.7 * demand)
        rec = plant.step(demand, 0.7 * demand, decision(defer_kw=[defer, 0], repay_kw=[repay, 0]))
        deferred.append(float(rec.defer_kw[0]) * KWH)
        repaid.append(float(rec.repay_kw[0]) * KWH)
    cum_d, cum_r = np.cumsum(deferred), np.cumsum(repaid)
    assert np.all(cum_r <= cum_d + 1e-9)
    deadline = 3
    for t in range(deadline, len(steps)):
        assert cum_r[t] >= cum_d[t - deadline] - 1e-9
    left = plant.observe(len(steps) * DT_S, np.array([0.0, 0.0]), np.zeros(2)).debt_kwh[0]
    assert left == pytest.approx(cum_d[-1] - cum_r[-1], abs=1e-9)
    assert totals(plant, "deferred_energy_kwh")[0] == pytest.approx(cum_d[-1])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.floats(0.0, 1.0), st.floats(20.0, 120.0)),
        min_size=1,
        max_size=20,
    )
)
def test_balanced_shifts_conserve_work(steps: list[tuple[float, float, float]]) -> None:
    """Shifts commanded A → B (equal lead times): the site always draws its whole demand, and
    what B receives is what A gave, never more than A's non-critical load."""
    plant = Plant(site(), DT_S)
    for t, (kw, crit_share, d_a) in enumerate(steps + [(0.0, 0.5, 80.0)] * 3):
        demand = np.array([d_a, 50.0])
        crit = demand * np.array([crit_share, 0.7])
        plant.observe(t * DT_S, demand, crit)
        rec = plant.step(demand, crit, decision(shift_out_kw=[kw, 0], shift_in_kw=[0, kw]))
        assert float(rec.grid_kw.sum()) == pytest.approx(float(demand.sum()), abs=1e-9)
        assert rec.shift_in_kw[1] == pytest.approx(rec.shift_out_kw[0], abs=1e-9)
        assert rec.shift_out_kw[0] <= d_a - crit[0] + 1e-9


def test_over_assigned_reserve_is_scaled_to_the_shared_capacity() -> None:
    # Delay 0: both domains' reserves deliver at once. 40 + 60 kW assigned of a 50 kW reserve:
    # each gets half, 20 and 30 kW; the rest of each excess is an overload.
    plant = Plant(without_kes(site(("start_delay_s = 120", "start_delay_s = 0"))), DT_S)
    demand = np.array([140.0, 160.0])
    plant.observe(0.0, demand, 0.7 * demand)
    idle = Decision.idle(2)
    dec = dataclasses.replace(
        idle, reserve_on=np.array([True, True]), reserve_kw=np.array([40.0, 60.0])
    )
    rec = plant.step(demand, 0.7 * demand, dec)
    np.testing.assert_allclose(rec.reserve_kw, [20.0, 30.0])
    np.testing.assert_allclose(rec.grid_kw, [120.0, 130.0])
    np.testing.assert_allclose(totals(plant, "overload_energy_kwh"), [20 * KWH, 30 * KWH])
    # One machine, one start: each domain's share is half of it.
    np.testing.assert_allclose(totals(plant, "reserve_activations"), [0.5, 0.5])
    assert plant.reserve.starts == 1


def test_one_shared_reserve_is_metered_once() -> None:
    # A is over from step 1, B from step 2 while the machine already runs: one start (shared
    # by A, which started it), not one per domain; the running time is the machine's.
    plant = Plant(without_kes(site()), DT_S)
    policy = NonePolicy(plant.site)
    for t, (d_a, d_b) in enumerate([(90, 50), (120, 50), (120, 130), (90, 130), (90, 50)]):
        demand = np.array([float(d_a), float(d_b)])
        obs = plant.observe(t * DT_S, demand, 0.7 * demand)
        dec, _ = policy.decide(obs, None, None)
        plant.step(demand, 0.7 * demand, dec)
    assert plant.reserve.starts == 1
    np.testing.assert_allclose(totals(plant, "reserve_machine_starts"), [1.0, 0.0])
    np.testing.assert_allclose(totals(plant, "reserve_activations"), [1.0, 0.0])
    # Running since t = 60 s: 4 steps so far; the domains' shares add up to the machine's.
    assert plant.reserve.running_s == pytest.approx(240.0)
    assert totals(plant, "reserve_seconds").sum() == pytest.approx(240.0)


def test_observed_shifts_are_the_shifts_applied() -> None:
    # As in test_shift_is_truncated_to_the_noncritical_load_present: 10 kW scheduled, 4 kW
    # of non-critical load present at step 2.
    plant = Plant(site(), DT_S)
    for t in range(3):
        demand = np.array([100.0, 50.0])
        crit = np.array([96.0, 35.0]) if t == 2 else 0.7 * demand
        obs = plant.observe(t * DT_S, demand, crit)
        dec = decision(shift_out_kw=[10, 0], shift_in_kw=[0, 10]) if t == 0 else decision()
        rec = plant.step(demand, crit, dec)
    np.testing.assert_allclose(obs.shift_out_kw, rec.shift_out_kw)
    np.testing.assert_allclose(obs.shift_in_kw, rec.shift_in_kw)


def test_a_pre_warmed_reserve_starts_faster_and_its_warm_time_is_metered() -> None:
    # Warm start delay 30 s (cold 120 s): pre-warmed for step 0, started at step 1 (t = 60 s),
    # it delivers from t = 90 s, half of step 1. Warm time is metered, and is not a start.
    plant = Plant(
        without_kes(site(("min_on_s = 300", "min_on_s = 300\nwarm_start_delay_s = 30"))), DT_S
    )
    idle = Decision.idle(2)
    demand = np.array([120.0, 50.0])
    warm = dataclasses.replace(idle, reserve_warm=np.array([True, False]))
    plant.observe(0.0, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, warm)
    assert plant.reserve.starts == 0 and plant.reserve_mode[0] == RESERVE_WARM
    start = dataclasses.replace(
        warm, reserve_on=np.array([True, False]), reserve_kw=np.array([20.0, 0.0])
    )
    plant.observe(DT_S, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, start)
    assert rec.reserve_kw[0] == pytest.approx(10.0)  # 20 kW for half the step
    assert totals(plant, "reserve_warm_seconds")[0] == pytest.approx(60.0)
    assert totals(plant, "reserve_machine_starts").sum() == 1


# --- the measurement lag at the start of each step ------------------------------------------


def test_the_lag_part_holds_the_previous_outputs_on_the_new_demand() -> None:
    # 1 s lag on 60 s steps. Step 0: A at 95 kW, the flywheel idle. Step 1: A jumps to 108 kW
    # and the decision discharges 8 kW - but only from 1 s in: for 1 s the 8 kW reach the
    # feed (8 kW · 1 s = 8/3600 kWh of overload) and heat its breaker; then none. The step's
    # mean flywheel power is 8 · 59/60 kW.
    plant = Plant(site(), DT_S, lag_s=1.0)
    demand = np.array([95.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, decision())
    demand = np.array([108.0, 50.0])
    plant.observe(DT_S, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision(kes_kw=[8, 0]))
    assert totals(plant, "overload_energy_kwh")[0] == pytest.approx(8.0 / 3600)
    assert totals(plant, "overload_seconds")[0] == pytest.approx(1.0)
    assert plant.heat[0] > 0.0
    assert rec.kes_kw[0] == pytest.approx(8.0 * 59 / 60)
    assert rec.grid_kw[0] == pytest.approx(108.0 - 8.0 * 59 / 60)
    # Step 2: A falls back to 95 kW and the decision idles the bank; for 1 s the held 8 kW
    # discharge still supplies the load (no overload, no export), then nothing.
    demand = np.array([95.0, 50.0])
    plant.observe(2 * DT_S, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision())
    assert rec.kes_kw[0] == pytest.approx(8.0 / 60)
    assert totals(plant, "overload_seconds")[0] == pytest.approx(1.0)


def test_without_lag_the_decision_covers_the_whole_step() -> None:
    plant = Plant(site(), DT_S, lag_s=0.0)
    demand = np.array([95.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, decision())
    demand = np.array([108.0, 50.0])
    plant.observe(DT_S, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision(kes_kw=[8, 0]))
    assert totals(plant, "overload_energy_kwh")[0] == 0.0
    assert rec.kes_kw[0] == pytest.approx(8.0)


def test_a_held_discharge_never_exports() -> None:
    # The bank was discharging 8 kW; A's demand drops to 3 kW: in the lag it gives 3 kW at
    # most, so the feed never goes negative.
    plant = Plant(site(), DT_S, lag_s=10.0)
    demand = np.array([108.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    plant.step(demand, 0.7 * demand, decision(kes_kw=[8, 0]))
    demand = np.array([3.0, 50.0])
    plant.observe(DT_S, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision())
    assert rec.grid_kw[0] >= 0.0
    assert rec.kes_kw[0] == pytest.approx(3.0 * 10 / 60)


def test_a_reserve_started_after_the_lag_delivers_a_lag_later() -> None:
    # Delay 90 s, lag 1 s: started in step 1 once the excess is measured (1 s in), the
    # reserve delivers from 91 s after step 1 began: the last 29 s of step 2, step 3, and the
    # first second of step 4 (held: the fast loop has not yet seen the excess end).
    plant = Plant(without_kes(site(("start_delay_s = 120", "start_delay_s = 90"))), DT_S, 1.0)
    run_none(plant, [90, 120, 120, 120, 90, 90, 90, 90])
    assert totals(plant, "reserve_energy_kwh")[0] == pytest.approx(20 * (29 + 60 + 1) / 3600)
    assert totals(plant, "overload_seconds")[0] == pytest.approx(91.0)


def test_an_empty_bank_holds_min_speed_from_the_feed() -> None:
    # Both banks empty and idle: each draws its ω_min standby from the feed (never parks).
    s = site(("module_energy_kwh = 1", "module_energy_kwh = 1\ninitial_soc = 0.0"))
    plant = Plant(s, DT_S)
    demand = np.array([60.0, 50.0])
    plant.observe(0.0, demand, 0.7 * demand)
    rec = plant.step(demand, 0.7 * demand, decision())
    hold = 0.01 * 10.0 * (0.4 + 0.6 * 0.25) / 0.95  # 1 % of 10 kW, 40 % fixed, ω_min = ½
    np.testing.assert_allclose(rec.kes_kw, -hold)
    np.testing.assert_allclose(rec.grid_kw, demand + hold)
    np.testing.assert_allclose(rec.soc, 0.0, atol=1e-12)
    assert np.all(totals(plant, "kes_losses_kwh") > 0)
