"""Builders for the control tests: the tiny two-domain site, observations, small scenarios."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wattwheel.control.base import RESERVE_OFF, Observation
from wattwheel.domain import flywheel
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.domain.trace import Trace
from wattwheel.sim.scenario import Scenario, build_scenario

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DT_S = 60.0

SiteFactory = Callable[..., SiteParams]
ObsFactory = Callable[..., Observation]
ScenarioFactory = Callable[..., Scenario]


def site_text(*replacements: tuple[str, str]) -> str:
    text = TINY
    for old, new in replacements:
        assert old in text, f"test setup: {old!r} not in tiny.toml"
        text = text.replace(old, new, 1)
    return text


@pytest.fixture
def make_site() -> SiteFactory:
    """tiny.toml (A and B, 100 kW primary each, 10 kW / 2 kWh KES, 50 kW reserve) resolved
    against peaks of 100 kW (A) and 50 kW (B) unless told otherwise."""

    def build(
        *replacements: tuple[str, str], peaks: tuple[float, float] = (100.0, 50.0)
    ) -> SiteParams:
        demand = {"A": np.array([peaks[0]]), "B": np.array([peaks[1]])}
        return resolve_site(parse_site(site_text(*replacements)), demand)

    return build


@pytest.fixture
def make_obs() -> ObsFactory:
    """An observation with critical = 70 % of demand, no shifts or debt, reserve off."""

    def build(
        site: SiteParams,
        demand: tuple[float, float],
        soc: tuple[float, float] = (1.0, 1.0),
        reserve_mode: tuple[int, int] = (RESERVE_OFF, RESERVE_OFF),
        now_s: float = 0.0,
    ) -> Observation:
        d = np.array(demand, dtype=float)
        s = np.array(soc, dtype=float)
        z = np.zeros(2)
        return Observation(
            now_s=now_s,
            dt_s=DT_S,
            demand_kw=d,
            critical_kw=0.7 * d,
            shift_out_kw=z,
            shift_in_kw=z.copy(),
            due_repay_kw=z.copy(),
            debt_kwh=z.copy(),
            kes_soc=s,
            kes_max_discharge_kw=flywheel.max_discharge_kw(site.kes, s, DT_S),
            kes_max_charge_kw=flywheel.max_charge_kw(site.kes, s, DT_S),
            reserve_mode=np.array(reserve_mode, dtype=np.int64),
            reserve_ready_in_s=z.copy(),
            reserve_min_on_left_s=z.copy(),
            breaker_heat=z.copy(),
            last_grid_kw=d.copy(),
        )

    return build


@pytest.fixture
def make_scenario() -> ScenarioFactory:
    """A scenario on tiny.toml from per-domain demand in kW (A split over racks a1, a2)."""

    def build(a_kw: object, b_kw: object, *replacements: tuple[str, str]) -> Scenario:
        a = np.asarray(a_kw, dtype=float)
        b = np.asarray(b_kw, dtype=float)
        ts = 1.7e9 + np.arange(a.size) * DT_S
        power_w = np.column_stack([a * 500.0, a * 500.0, b * 1000.0])
        trace = Trace(ts, ("a1", "a2", "b1"), power_w)
        return build_scenario(parse_site(site_text(*replacements)), trace)

    return build
