"""Flywheel bank physics: hand-computed cases (numbers worked out in the comments) and
Hypothesis properties (energy balance every step, SoC in [0, 1])."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.domain import flywheel as fw

DT_S = 60.0
DT_H = DT_S / 3600.0


def one(x: float) -> np.ndarray:
    return np.array([x], dtype=float)


def bank(
    modules: float = 2,
    faulted: float = 0,
    module_power_kw: float = 10.0,
    module_energy_kwh: float = 2.0,
    speed_min_ratio: float = 0.5,
    base_speed_ratio: float = 0.7,
    eta_c: float = 0.9,
    eta_d: float = 0.8,
    loss_fraction: float = 0.01,
    fixed_share: float = 0.0,
) -> fw.FlywheelParams:
    """2 modules x 10 kW / 2 kWh -> a 20 kW, 4 kWh bank; ω_min = ½ω_max; base speed 0.7ω_max;
    η_c = 0.9 and η_d = 0.8 (deliberately different so a swap shows); standby loss 1 % of rated
    power at full speed = 0.2 kW."""
    return fw.FlywheelParams(
        one(modules), one(faulted), one(module_power_kw), one(module_energy_kwh),
        one(speed_min_ratio), one(base_speed_ratio), one(eta_c), one(eta_d), one(loss_fraction),
        one(fixed_share),
    )  # fmt: skip


def test_soc_and_speed_are_inverse() -> None:
    p = bank()
    # SoC = (ω² − ω_min²)/(ω_max² − ω_min²): ω = 0.8 → (0.64 − 0.25)/0.75 = 0.52.
    assert fw.speed_ratio(p, one(0.52))[0] == pytest.approx(0.8)
    # SoC 0 → ω_min = 0.5; SoC 1 → ω_max; SoC ½ → sqrt(0.25 + 0.5·0.75) = sqrt(0.625).
    np.testing.assert_allclose(
        fw.speed_ratio(p, np.array([0.0, 1.0, 0.5])), [0.5, 1.0, np.sqrt(0.625)]
    )


def test_bank_ratings_without_faults() -> None:
    p = bank()
    assert p.rated_power_kw[0] == pytest.approx(20.0)
    assert p.capacity_kwh[0] == pytest.approx(4.0)


def test_standby_loss_grows_with_speed_squared() -> None:
    p = bank()
    # Full speed: 0.01 · 20 kW · 1² = 0.2 kW. At ω = 0.8 (SoC 0.52): 0.2 · 0.64 = 0.128 kW.
    assert fw.standby_loss_kw(p, one(1.0))[0] == pytest.approx(0.2)
    assert fw.standby_loss_kw(p, one(0.52))[0] == pytest.approx(0.128)
    # Empty: the rotor still turns at ω_min = ½ω_max and loses 0.2 · 0.25 = 0.05 kW.
    assert fw.standby_loss_kw(p, one(0.0))[0] == pytest.approx(0.05)


def test_standby_loss_has_a_fixed_part() -> None:
    # 40 % of the 0.2 kW full-speed loss is fixed: at ω_min 0.2 · (0.4 + 0.6 · 0.25) = 0.11 kW;
    # at ω = 0.8 (SoC 0.52) 0.2 · (0.4 + 0.6 · 0.64) = 0.1568 kW.
    p = bank(fixed_share=0.4)
    assert fw.standby_loss_kw(p, one(0.0))[0] == pytest.approx(0.11)
    assert fw.standby_loss_kw(p, one(0.52))[0] == pytest.approx(0.1568)
    # Affine in stored energy: a = 0.2 · 0.6 · 0.75 / 4 kWh = 0.0225 /h, b = 0.11 kW.
    a, b = fw.standby_loss_coefficients(p)
    assert a[0] == pytest.approx(0.0225) and b[0] == pytest.approx(0.11)
    for soc in (0.0, 0.3, 0.52, 1.0):
        expected = a[0] * soc * 4.0 + b[0]
        assert fw.standby_loss_kw(p, one(soc))[0] == pytest.approx(expected)
    # A faulted bank loses nothing.
    assert fw.standby_loss_kw(p.with_faults(one(2.0)), one(0.0))[0] == 0.0


def test_power_derates_below_base_speed() -> None:
    p = bank()
    # ω = 0.8 > base 0.7: full 20 kW.
    assert fw.power_limit_kw(p, one(0.52))[0] == pytest.approx(20.0)
    # ω = 0.6 (SoC (0.36 − 0.25)/0.75): 20 · 0.6/0.7 = 17.142857 kW.
    assert fw.power_limit_kw(p, one(0.11 / 0.75))[0] == pytest.approx(20 * 0.6 / 0.7)
    # ω = ω_min = 0.5: 20 · 0.5/0.7 = 14.285714 kW.
    assert fw.power_limit_kw(p, one(0.0))[0] == pytest.approx(20 * 0.5 / 0.7)


def test_one_discharge_step() -> None:
    # Full bank (4 kWh), 10 kW for 60 s. Rotor side: 10/0.8 · (1/60) h = 0.2083333 kWh,
    # standby 0.2 kW · (1/60) h = 0.0033333 kWh → E = 4 − 0.2083333 − 0.0033333 = 3.7883333
    # kWh, SoC = 0.9470833. Throughput 10/60 = 0.1666667 kWh; conversion loss
    # 10 · (1/0.8 − 1)/60 = 0.0416667 kWh.
    s = fw.step(bank(), one(1.0), one(10.0), DT_S)
    assert s.power_kw[0] == pytest.approx(10.0)
    assert s.soc[0] == pytest.approx(3.7883333333 / 4.0)
    assert s.standby_loss_kwh[0] == pytest.approx(0.2 / 60)
    assert s.conversion_loss_kwh[0] == pytest.approx(0.25 * 10 / 60)
    assert s.throughput_kwh[0] == pytest.approx(10 / 60)


def test_one_charge_step_with_efficiency() -> None:
    # SoC ½ (2 kWh), charge 12 kW for 60 s (setpoint < 0). Rotor gains 0.9 · 12/60 = 0.18 kWh;
    # standby at ω² = 0.625: 0.2 · 0.625 = 0.125 kW → 0.0020833 kWh.
    # E = 2 + 0.18 − 0.0020833 = 2.1779167 kWh, SoC = 0.5444792.
    s = fw.step(bank(), one(0.5), one(-12.0), DT_S)
    assert s.power_kw[0] == pytest.approx(-12.0)
    assert s.soc[0] == pytest.approx(2.1779166667 / 4.0)
    assert s.standby_loss_kwh[0] == pytest.approx(0.125 / 60)
    assert s.conversion_loss_kwh[0] == pytest.approx(12 * 0.1 / 60)


def test_faulted_module_reduces_power_and_energy() -> None:
    p = bank(faulted=1)
    # One 10 kW / 2 kWh module left.
    assert p.rated_power_kw[0] == pytest.approx(10.0)
    assert p.capacity_kwh[0] == pytest.approx(2.0)
    # Asked for 15 kW, it gives 10 kW. E = 2 − 10/0.8/60 − 0.01·10/60 = 2 − 0.2083333 −
    # 0.0016667 = 1.79 kWh → SoC 0.895.
    s = fw.step(p, one(1.0), one(15.0), DT_S)
    assert s.power_kw[0] == pytest.approx(10.0)
    assert s.soc[0] == pytest.approx(0.895)
    # with_faults caps at the installed count; all faulted → the bank does nothing.
    dead = bank().with_faults(one(5.0))
    assert dead.faulted_modules[0] == 2.0
    s = fw.step(dead, one(0.7), one(10.0), DT_S)
    assert s.power_kw[0] == 0.0 and s.soc[0] == 0.0


def test_empty_bank_delivers_nothing_and_holds_min_speed_from_the_feed() -> None:
    # SoC 0: ω_min loss 0.05 kW. Asked for 10 kW it gives none, and its motor draws the loss
    # through the charge path: 0.05 / 0.9 = 0.0555556 kW. Loss: standby 0.05/60 kWh plus
    # conversion 0.0555556 · 0.1 / 60 kWh. The rotor stays at ω_min (SoC 0); it never parks.
    s = fw.step(bank(), one(0.0), one(10.0), DT_S)
    assert s.power_kw[0] == pytest.approx(-0.05 / 0.9)
    assert s.soc[0] == pytest.approx(0.0, abs=1e-12)
    assert s.standby_loss_kwh[0] == pytest.approx(0.05 / 60)
    assert s.loss_kwh[0] == pytest.approx(0.05 / 60 + 0.05 / 0.9 * 0.1 / 60)
    np.testing.assert_allclose(fw.hold_kw(bank(), np.array([0.0, 0.5]), DT_S), [0.05 / 0.9, 0.0])


def test_a_fixed_standby_rate_is_used_as_given() -> None:
    # A step split in parts keeps its start-of-step loss rate: 1 kW for 60 s = 1/60 kWh.
    s = fw.step(bank(), one(1.0), one(0.0), DT_S, standby_kw=one(1.0))
    assert s.standby_loss_kwh[0] == pytest.approx(1 / 60)
    assert s.soc[0] == pytest.approx(1 - 1 / 60 / 4)


def test_nearly_empty_bank_delivers_only_what_is_left() -> None:
    # SoC 0.01 → E = 0.04 kWh; standby at ω² = 0.25 + 0.0075: 0.2 · 0.2575 = 0.0515 kW →
    # 0.00085833 kWh. Deliverable over 60 s: (0.04 − 0.00085833) · 0.8 · 60 = 1.8788 kW
    # (below the derated 14.3 kW limit). The bank ends exactly empty.
    p = bank()
    assert fw.max_discharge_kw(p, one(0.01), DT_S)[0] == pytest.approx(1.8788)
    s = fw.step(p, one(0.01), one(10.0), DT_S)
    assert s.power_kw[0] == pytest.approx(1.8788)
    assert s.soc[0] == pytest.approx(0.0, abs=1e-12)


def test_full_bank_accepts_only_its_standby_loss() -> None:
    # At SoC 1 the only room is what standby loss frees: 0.2 kW · 1/60 h / 0.9 → 0.2222 kW.
    p = bank()
    assert fw.max_charge_kw(p, one(1.0), DT_S)[0] == pytest.approx(0.2 / 0.9)
    s = fw.step(p, one(1.0), one(-20.0), DT_S)
    assert s.soc[0] == pytest.approx(1.0)


@st.composite
def banks(draw: st.DrawFn) -> fw.FlywheelParams:
    modules = draw(st.integers(0, 6))
    speed_min = draw(st.floats(0.1, 0.8))
    return bank(
        modules=modules,
        faulted=draw(st.integers(0, modules)),
        module_power_kw=draw(st.floats(0.5, 500.0)),
        module_energy_kwh=draw(st.floats(0.05, 50.0)),
        speed_min_ratio=speed_min,
        base_speed_ratio=draw(st.floats(speed_min + 0.01, 1.0)),
        eta_c=draw(st.floats(0.5, 1.0)),
        eta_d=draw(st.floats(0.5, 1.0)),
        loss_fraction=draw(st.floats(0.0, 0.05)),
        fixed_share=draw(st.floats(0.0, 1.0)),
    )


@settings(max_examples=200, deadline=None)
@given(
    banks(),
    st.floats(0.0, 1.0),
    st.lists(st.floats(-2000.0, 2000.0), min_size=1, max_size=30),
    st.sampled_from([0.1, 1.0, 10.0, 60.0, 300.0]),
)
def test_energy_balance_and_soc_bounds(
    p: fw.FlywheelParams, soc0: float, setpoints: list[float], dt_s: float
) -> None:
    soc = one(soc0)
    cap = float(p.capacity_kwh[0])
    dt_h = dt_s / 3600.0
    for sp in setpoints:
        before_kwh = float(soc[0]) * cap
        s = fw.step(p, soc, one(sp), dt_s)
        after_kwh = float(s.soc[0]) * cap
        dis = max(float(s.power_kw[0]), 0.0)
        chg = max(-float(s.power_kw[0]), 0.0)
        # ΔE = η_c·P_c·dt − P_d·dt/η_d − loss.
        expected = (
            float(p.charge_efficiency[0]) * chg * dt_h
            - dis * dt_h / float(p.discharge_efficiency[0])
            - float(s.standby_loss_kwh[0])
        )
        assert after_kwh - before_kwh == pytest.approx(expected, abs=1e-9 * max(cap, 1.0))
        assert 0.0 <= float(s.soc[0]) <= 1.0
        # The loss taken is never more than the ω² model gives at the start of the step.
        assert float(s.standby_loss_kwh[0]) <= float(fw.standby_loss_kw(p, soc)[0]) * dt_h + 1e-12
        # Never more than asked (plus the hold power of an empty rotor), never more than the
        # (derated) power limit.
        limit = float(fw.power_limit_kw(p, soc)[0])
        hold = float(fw.standby_loss_kw(p, soc)[0] / p.charge_efficiency[0])
        assert float(s.power_kw[0]) <= max(sp, 0.0) + 1e-9
        assert -float(s.power_kw[0]) <= max(-sp, 0.0) + hold + 1e-9
        assert abs(float(s.power_kw[0])) <= limit + hold + 1e-9
        # Grid-side bookkeeping: energy in − energy out − stored = the losses reported.
        grid_net_kwh = (chg - dis) * dt_h
        assert grid_net_kwh - (after_kwh - before_kwh) == pytest.approx(
            float(s.loss_kwh[0]), abs=1e-9 * max(cap, 1.0)
        )
        soc = s.soc
