"""Adding servers adds load drawn from real racks (other PDUs, whole-day shifts), not copies."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.sim.growth import (
    baseline_servers,
    donor_plan,
    grown_scenario,
    split_servers,
)
from wattwheel.sim.scenario import Scenario, bundled_site, load_scenario


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(bundled_site())


def test_split_is_proportional_and_exact() -> None:
    assert split_servers([40, 40, 40], 121) == [41, 40, 40]
    assert split_servers([40, 80], 30) == [10, 20]
    assert sum(split_servers([40, 40, 80], 1001)) == 1001


def test_baseline_is_the_scenario_itself(scenario: Scenario) -> None:
    base = baseline_servers(scenario, 40)
    assert base == 120
    for method in ("traces", "naive"):
        same = grown_scenario(scenario, base, 40, method)  # type: ignore[arg-type]
        np.testing.assert_array_equal(same.demand_kw, scenario.demand_kw)
        np.testing.assert_array_equal(same.critical_kw, scenario.critical_kw)
        assert same.site is scenario.site


def test_new_racks_replay_other_pdus_shifted_by_whole_days(scenario: Scenario) -> None:
    plan = donor_plan(scenario, 0, 3)
    rack_ids = scenario.trace.rack_ids
    # pdu6's new racks come from pdu7 and pdu8, then pdu7 again a day later.
    assert [rack_ids[d.rack] for d in plan] == ["cella_pdu7", "cella_pdu8", "cella_pdu7"]
    assert [d.shift_steps for d in plan] == [288, 288, 576]  # 1, 1, 2 days of 5-min steps
    grown = grown_scenario(scenario, 130, 40, "traces")  # +4 servers in pdu6, +3 in 7 and 8
    added = grown.demand_kw[:, 0] - scenario.demand_kw[:, 0]
    donor = np.roll(scenario.trace.power_w[:, rack_ids.index("cella_pdu7")], 288) / 1000.0
    np.testing.assert_allclose(added, donor * 4 / 40)
    crit_added = grown.critical_kw[:, 0] - scenario.critical_kw[:, 0]
    np.testing.assert_allclose(crit_added, added * (1 - scenario.site.flex.noncritical_fraction[0]))


def test_trace_growth_peaks_lower_than_naive_scaling(scenario: Scenario) -> None:
    traces = grown_scenario(scenario, 180, 40, "traces")
    naive = grown_scenario(scenario, 180, 40, "naive")
    # Same energy to within a few percent (other racks of the same site)...
    ratio = traces.demand_kw.sum() / naive.demand_kw.sum()
    assert 0.95 < ratio < 1.05
    # ...but the new peaks do not all fall on the old ones.
    assert traces.demand_kw.sum(axis=1).max() < naive.demand_kw.sum(axis=1).max()
    np.testing.assert_allclose(naive.demand_kw, scenario.demand_kw * 1.5)


def test_fewer_servers_scale_down(scenario: Scenario) -> None:
    small = grown_scenario(scenario, 60, 40, "traces")
    np.testing.assert_allclose(small.demand_kw, scenario.demand_kw * 0.5)
    zero = grown_scenario(scenario, 0, 40, "traces")
    assert not zero.demand_kw.any()


def test_bad_input_is_refused(scenario: Scenario) -> None:
    with pytest.raises(ConfigError, match="servers"):
        grown_scenario(scenario, -1, 40, "traces")
    with pytest.raises(ConfigError, match="growth"):
        grown_scenario(scenario, 10, 40, "doubling")  # type: ignore[arg-type]


def test_single_rack_site_draws_on_itself_a_day_later(scenario: Scenario) -> None:
    one = scenario.trace.select(["cella_pdu8"])
    from wattwheel.sim.scenario import build_scenario

    single = build_scenario(scenario.config, one)
    plan = donor_plan(single, 0, 2)
    assert [(d.rack, d.shift_steps) for d in plan] == [(0, 288), (0, 576)]
