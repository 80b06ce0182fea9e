"""Hand-checked decisions of ``none``, ``reactive`` (the fast safety loop) and ``seed`` on the
tiny site: A and B at 100 kW primary, a 10 kW / 2 kWh flywheel each, critical = 70 % of demand,
caps down to half the non-critical load, a 50 kW shared reserve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattwheel.control.base import RESERVE_ON
from wattwheel.control.fast_loop import Targets, cap_limit_kw, safety_loop
from wattwheel.control.registry import make_policy
from wattwheel.control.seed import SeedPolicy
from wattwheel.control.simple import NonePolicy, ReactivePolicy
from wattwheel.domain import flywheel
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast
from wattwheel.sim.simulator import simulate

# Fixture factories from tests/control/conftest.py.
SiteFactory = ObsFactory = ScenarioFactory = Callable[..., Any]


def forecast_kw(predicted: tuple[float, float], horizon_s: float = 120.0) -> Forecast:
    point = np.array(predicted, dtype=float)[:, None] * 1000.0
    values = np.repeat(point[:, :, None], 3, axis=2)
    return Forecast(0.0, ("A", "B"), (horizon_s,), (0.05, 0.5, 0.95), values, point)


# --- none ------------------------------------------------------------------------------------


def test_none_sends_every_excess_to_the_reserve(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    dec, _ = NonePolicy(site).decide(make_obs(site, (120.0, 90.0)), None, None)
    np.testing.assert_allclose(dec.kes_kw, 0.0)
    np.testing.assert_allclose(dec.cap_kw, 0.0)
    assert dec.reserve_on.tolist() == [True, False]
    np.testing.assert_allclose(dec.reserve_kw, [20.0, 0.0])


def test_none_scales_requests_to_the_shared_reserve(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # 40 + 60 kW of excess against a 50 kW reserve: each gets half of what it asks.
    site = make_site()
    dec, _ = NonePolicy(site).decide(make_obs(site, (140.0, 160.0)), None, None)
    np.testing.assert_allclose(dec.reserve_kw, [20.0, 30.0])


def test_none_never_uses_the_flywheel(make_scenario: ScenarioFactory) -> None:
    a = 90.0 + 25.0 * np.sin(np.arange(60) / 4.0)
    sc = make_scenario(a, np.full(60, 60.0))
    res = simulate(sc, make_policy("none", sc.site))
    assert res.site_metrics["kes_throughput_kwh"] == 0.0
    assert res.site_metrics["kes_losses_kwh"] == 0.0
    assert res.site_metrics["capped_energy_kwh"] == 0.0
    np.testing.assert_allclose(res.series["kes_kw"], 0.0)
    assert res.site_metrics["reserve_activations"] >= 1


# --- reactive: discharge, then cap, then reserve ----------------------------------------------


def float_charge_kw(site: SiteParams) -> float:
    """A full bank under capacity tops up this period's standby loss (charging, so negative):
    0.1 kW at full speed / η_c 0.95 for the test bank."""
    loss = flywheel.standby_loss_kw(site.kes, np.ones(site.n_domains))[1]
    return -float(loss / site.kes.charge_efficiency[1])


def test_reactive_discharges_first(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    # 5 kW over: the flywheel (10 kW available) covers it alone.
    site = make_site()
    dec, _ = ReactivePolicy(site).decide(make_obs(site, (105.0, 50.0)), None, None)
    np.testing.assert_allclose(dec.kes_kw, [5.0, float_charge_kw(site)])
    np.testing.assert_allclose(dec.cap_kw, 0.0)
    assert not dec.reserve_on.any()


def test_reactive_caps_what_the_flywheel_cannot_cover(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # 15 kW over: KES 10 kW, then cap 5 kW (limit: half of 30 % of 115 = 17.25 kW). No reserve.
    site = make_site()
    dec, _ = ReactivePolicy(site).decide(make_obs(site, (115.0, 50.0)), None, None)
    np.testing.assert_allclose(dec.kes_kw, [10.0, float_charge_kw(site)])
    np.testing.assert_allclose(dec.cap_kw, [5.0, 0.0])
    assert not dec.reserve_on.any()


def test_reactive_asks_the_reserve_only_for_the_rest(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # 30 kW over: KES 10, cap at its limit 0.5 · 0.3 · 130 = 19.5, reserve for the last 0.5 kW.
    site = make_site()
    dec, _ = ReactivePolicy(site).decide(make_obs(site, (130.0, 50.0)), None, None)
    np.testing.assert_allclose(dec.kes_kw, [10.0, float_charge_kw(site)])
    np.testing.assert_allclose(dec.cap_kw, [19.5, 0.0])
    assert dec.reserve_on.tolist() == [True, False]
    np.testing.assert_allclose(dec.reserve_kw, [0.5, 0.0])


def test_reactive_uses_a_reserve_already_on_before_capping(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # A running reserve is paid for: the 5 kW left after the flywheel go to it, not to a cap.
    site = make_site()
    obs = make_obs(site, (115.0, 50.0), reserve_mode=(RESERVE_ON, 0))
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    np.testing.assert_allclose(dec.kes_kw, [10.0, float_charge_kw(site)])
    np.testing.assert_allclose(dec.cap_kw, [0.0, 0.0])
    np.testing.assert_allclose(dec.reserve_kw, [5.0, 0.0])
    assert dec.reserve_on[0]


def test_reactive_recharges_within_the_headroom(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # A at 95 kW (5 kW headroom), SoC ½: charge 5 kW. B at 50 kW, SoC ½: 10 kW (its limit).
    site = make_site()
    dec, _ = ReactivePolicy(site).decide(make_obs(site, (95.0, 50.0), soc=(0.5, 0.5)), None, None)
    np.testing.assert_allclose(dec.kes_kw, [-5.0, -10.0])


def test_reactive_follows_a_grid_ramp_limit(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    # Limit 0.05 kW/s → 3 kW per 60 s step. Last grid draw 80 kW, now 90 kW: the flywheel
    # discharges 7 kW so the grid rises only to 83 kW.
    site = make_site(("risk_quantile = 0.9", "risk_quantile = 0.9\nmax_grid_ramp_kw_per_s = 0.05"))
    obs = make_obs(site, (90.0, 50.0))
    obs = type(obs)(**{**obs.__dict__, "last_grid_kw": np.array([80.0, 50.0])})
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    assert dec.kes_kw[0] == pytest.approx(7.0)


@st.composite
def observations(draw: st.DrawFn) -> tuple[float, float, float, float, float, float]:
    demand = draw(st.tuples(st.floats(0.0, 200.0), st.floats(0.0, 200.0)))
    crit_share = draw(st.floats(0.0, 1.0))
    soc = draw(st.floats(0.0, 1.0))
    out = draw(st.floats(0.0, 20.0))
    return (*demand, crit_share, soc, out, draw(st.floats(0.0, 30.0)))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(observations())
def test_fast_loop_never_caps_below_the_floor_or_into_critical(
    make_site: SiteFactory, make_obs: ObsFactory, case: tuple[float, ...]
) -> None:
    d_a, d_b, crit_share, soc, out, defer = case
    site = make_site()
    obs = make_obs(site, (d_a, d_b), soc=(soc, soc))
    crit = np.array([d_a, d_b]) * crit_share
    obs = type(obs)(**{**obs.__dict__, "critical_kw": crit, "shift_out_kw": np.array([out, 0.0])})
    targets = Targets.reactive(2)
    targets = Targets(targets.soc_target, targets.reserve_arm, targets.shift_out_kw,
                      targets.shift_in_kw, np.array([defer, 0.0]), targets.repay_kw)  # fmt: skip
    dec = safety_loop(site, obs, targets)
    noncrit = np.maximum(np.array([d_a, d_b]) - crit, 0.0)
    movable = np.maximum(noncrit - obs.shift_out_kw - dec.defer_kw, 0.0)
    assert np.all(dec.cap_kw >= 0.0)
    assert np.all(dec.cap_kw <= movable * (1 - site.flex.cap_floor_fraction) + 1e-9)
    np.testing.assert_allclose(cap_limit_kw(site, obs, dec.defer_kw), movable * 0.5, atol=1e-9)
    assert np.all(dec.defer_kw <= np.maximum(noncrit - obs.shift_out_kw, 0.0) + 1e-9)
    # The flywheel setpoint is always one the bank can follow.
    assert np.all(dec.kes_kw <= obs.kes_max_discharge_kw + 1e-9)
    assert np.all(-dec.kes_kw <= obs.kes_max_charge_kw + 1e-9)
    assert float(dec.reserve_kw.sum()) <= site.reserve.capacity_kw + 1e-9


# --- seed: the literal pseudocode ---------------------------------------------------------------


def test_seed_charges_at_predicted_minus_threshold(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # threshold = primary + KES power = 100 + 10 = 110 kW. Predicted 114 kW in A → charge
    # 114 − 110 = 4 kW, literally, though A's actual draw (99 kW) only leaves 1 kW of headroom.
    # SoC 0.6 ≥ 0.5, so the loop rule does not apply. It also starts shifting the predicted
    # 4 kW over the threshold to B (predicted 50 kW, 50 kW of headroom).
    site = make_site()
    policy = SeedPolicy(site)
    obs = make_obs(site, (99.0, 50.0), soc=(0.6, 1.0))
    dec, _ = policy.decide(obs, policy.initial_state(site), forecast_kw((114.0, 50.0)))
    assert dec.kes_kw[0] == pytest.approx(-4.0)
    assert not dec.reserve_on.any()
    np.testing.assert_allclose(dec.shift_out_kw, [4.0, 0.0])
    np.testing.assert_allclose(dec.shift_in_kw, [0.0, 4.0])


def test_seed_loop_rule_charges_at_rated_power_below_half_soc(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # kes_level 0.4 < 0.5 and predicted 105 kW > primary 100 kW → KES.charge(rate = 10 kW).
    site = make_site()
    policy = SeedPolicy(site)
    obs = make_obs(site, (95.0, 50.0), soc=(0.4, 1.0))
    dec, _ = policy.decide(obs, policy.initial_state(site), forecast_kw((105.0, 50.0)))
    assert dec.kes_kw[0] == pytest.approx(-10.0)


def test_seed_activates_the_reserve_above_the_threshold(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # Actual 115 kW > 110 kW → reserve on. With no forecast yet, predicted = actual, so the
    # literal rule also charges 115 − 110 = 5 kW: net KES = 10 kW out − 5 kW in = 5 kW, and the
    # reserve is assigned 115 − 100 − 5 = 10 kW.
    site = make_site()
    policy = SeedPolicy(site)
    dec, _ = policy.decide(make_obs(site, (115.0, 50.0)), policy.initial_state(site), None)
    assert dec.reserve_on.tolist() == [True, False]
    assert dec.kes_kw[0] == pytest.approx(5.0)
    assert dec.reserve_kw[0] == pytest.approx(10.0)
    np.testing.assert_allclose(dec.cap_kw, 0.0)


def test_seed_keeps_the_last_prediction_between_forecasts(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    policy = SeedPolicy(site)
    state = policy.initial_state(site)
    _, state = policy.decide(make_obs(site, (99.0, 50.0), soc=(0.6, 1.0)), state,
                             forecast_kw((114.0, 50.0)))  # fmt: skip
    dec, _ = policy.decide(make_obs(site, (99.0, 50.0), soc=(0.6, 1.0)), state, None)
    assert dec.kes_kw[0] == pytest.approx(-4.0)


def test_unknown_policy_name_is_a_config_error(make_site: SiteFactory) -> None:
    with pytest.raises(ConfigError, match="policy"):
        make_policy("clairvoyant", make_site())


# --- the shared reserve, operator overrides, bad readings ----------------------------------------


def test_shared_reserve_goes_to_what_nothing_else_covers(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # Reserve 20 kW. A at 150: KES 10, cap 0.15·150 = 22.5, 17.5 kW left. B at 140: KES 10,
    # cap 21, 9 kW left. 26.5 kW asked of 20 kW: shared in proportion, 13.21 and 6.79 kW.
    site = make_site(("capacity_kw = 50", "capacity_kw = 20"))
    dec, _ = ReactivePolicy(site).decide(make_obs(site, (150.0, 140.0)), None, None)
    np.testing.assert_allclose(dec.cap_kw, [22.5, 21.0])
    np.testing.assert_allclose(dec.reserve_kw, [17.5 * 20 / 26.5, 9.0 * 20 / 26.5])
    assert dec.reserve_on.all()


def with_fields(obs: Any, **fields: Any) -> Any:
    return type(obs)(**{**obs.__dict__, **fields})


def test_a_pinned_cap_is_kept_but_never_into_critical_load(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # A pin is the most a domain may draw. A at 90 kW (no excess) pinned at 80 kW: 10 kW capped.
    # B at 50 kW pinned at 100 kW: nothing to cap.
    site = make_site()
    obs = with_fields(make_obs(site, (90.0, 50.0)), pinned_cap_kw=np.array([80.0, 100.0]))
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    np.testing.assert_allclose(dec.cap_kw, [10.0, 0.0])
    # Pinned below its critical load: B at 50 kW has 15 kW non-critical, capped at most to half
    # (7.5 kW), so a 5 kW pin caps 7.5 kW and no critical load; A is not pinned.
    obs = with_fields(obs, pinned_cap_kw=np.array([np.nan, 5.0]))
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    np.testing.assert_allclose(dec.cap_kw, [0.0, 7.5])


def test_reserve_overrides_force_and_forbid(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    site = make_site()
    obs = with_fields(
        make_obs(site, (130.0, 50.0)), reserve_override=np.array([-1, 1], dtype=np.int64)
    )
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    # A needs the reserve for 0.5 kW but it is forbidden; B does not need it but it is forced.
    assert dec.reserve_on.tolist() == [False, True]
    assert dec.reserve_kw[0] == 0.0


def test_ramp_limit_is_kept_on_a_step_the_flywheel_can_absorb(
    make_scenario: ScenarioFactory,
) -> None:
    # A steps 80 → 90 kW and back; limit 0.1 kW/s = 6 kW per step; the 10 kW bank smooths it.
    a = np.array([80.0] * 10 + [90.0] * 10 + [80.0] * 10)
    limit = ("risk_quantile = 0.9", "risk_quantile = 0.9\nmax_grid_ramp_kw_per_s = 0.1")
    sc = make_scenario(a, np.full(30, 50.0), limit)
    res = simulate(sc, make_policy("reactive", sc.site), measurement_latency_s=0.0)
    assert res.site_metrics["max_grid_ramp_kw_per_s"] <= 0.1 + 1e-9
    # With the default 1 s latency the fast loop meets each 10 kW jump 1 s late: for that
    # second the whole jump reaches the feed, 10 kW · 1 s / 60 s more in the step's mean.
    res = simulate(sc, make_policy("reactive", sc.site))
    assert res.site_metrics["max_grid_ramp_kw_per_s"] <= 0.1 + 10.0 / 60 / 60 + 1e-9
    free_sc = make_scenario(a, np.full(30, 50.0))
    free = simulate(free_sc, make_policy("reactive", free_sc.site))
    assert free.domain_metrics["A"]["max_grid_ramp_kw_per_s"] == pytest.approx(10.0 / 60.0)


def test_a_stale_nan_reading_does_not_poison_decisions(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    obs = with_fields(
        make_obs(site, (95.0, 50.0), soc=(0.5, 0.5)),
        demand_kw=np.array([95.0, np.nan]),
        stale=np.array([False, True]),
    )
    dec = safety_loop(site, obs, Targets.reactive(2))
    for key in ("kes_kw", "cap_kw", "reserve_kw", "defer_kw", "repay_kw"):
        assert np.all(np.isfinite(getattr(dec, key))), key
    # The healthy domain decides exactly as it would alone.
    assert dec.kes_kw[0] == pytest.approx(-5.0)
    assert dec.cap_kw[0] == 0.0


def test_forbidding_a_running_reserve_caps_instead(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # A is 15 kW over with its reserve on: KES 10 kW, and 5 kW the (forbidden) reserve would have
    # taken must now be capped (limit 17.25 kW).
    site = make_site()
    obs = with_fields(
        make_obs(site, (115.0, 50.0), reserve_mode=(RESERVE_ON, 0)),
        reserve_override=np.array([-1, 0], dtype=np.int64),
    )
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    assert not dec.reserve_on[0]
    assert dec.kes_kw[0] + dec.cap_kw[0] + dec.reserve_kw[0] == pytest.approx(15.0)


def test_reserve_room_goes_first_to_excess_nothing_else_covers(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # Reserve 20 kW. A (reserve on) and B (off) both at 140 kW: KES 10 kW each leaves 30 kW;
    # each can cap 21 kW, so each needs 9 kW of reserve: 18 kW ≤ 20 kW covers everything.
    site = make_site(("capacity_kw = 50", "capacity_kw = 20"))
    obs = make_obs(site, (140.0, 140.0), reserve_mode=(RESERVE_ON, 0))
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    covered = dec.kes_kw + dec.cap_kw + dec.reserve_kw
    np.testing.assert_allclose(covered, [40.0, 40.0])


def test_no_export_under_a_ramp_limit(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    # Limit 0.1 kW/s. A draws 1 kW (and drew 1 kW), SoC 1 above the 0.5 ramp target: the
    # SoC-drift reference 1 − 0.5·0.5·10 = −1.5 kW is within [1 − 6, 1 + 6]; the bank must
    # still give no more than the 1 kW load (no export through the primary feed).
    site = make_site(("risk_quantile = 0.9", "risk_quantile = 0.9\nmax_grid_ramp_kw_per_s = 0.1"))
    obs = with_fields(make_obs(site, (1.0, 50.0)), last_grid_kw=np.array([1.0, 50.0]))
    dec, _ = ReactivePolicy(site).decide(obs, None, None)
    assert dec.kes_kw[0] <= 1.0 + 1e-9


@pytest.mark.parametrize("name", ["none", "reactive", "seed", "predictive", "oracle"])
def test_every_decision_explains_itself_per_domain(
    make_site: SiteFactory, make_obs: ObsFactory, name: str
) -> None:
    site = make_site()
    policy = make_policy(name, site)
    dec, _ = policy.decide(make_obs(site, (130.0, 60.0)), policy.initial_state(site), None)
    assert len(dec.reasons) == 2
    assert all(isinstance(r, str) and r for r in dec.reasons)
    assert "130" in dec.reasons[0] or "30.0" in dec.reasons[0]
