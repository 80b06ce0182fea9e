"""Loading a site file with its trace: relative trace path, per-domain demand, critical share,
rack binding, and clear errors for a missing rack, a missing file or a missing trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError, TraceError
from wattwheel.domain.site import parse_site
from wattwheel.domain.trace import Trace
from wattwheel.sim.scenario import (
    build_scenario,
    bundled_site,
    default_trace_path,
    load_scenario,
    load_site_config,
)
from wattwheel.sim.trace_io import write_trace

SITES = Path(__file__).resolve().parents[1] / "data" / "sites"
TINY = (SITES / "tiny.toml").read_text()


def trace(racks: tuple[str, ...] = ("a1", "a2", "b1"), n: int = 6, critical: bool = False) -> Trace:
    ts = 1.7e9 + np.arange(n) * 60.0
    power = np.column_stack([np.full(n, 40_000.0 + 1000.0 * i) for i in range(len(racks))])
    power[:, 0] += np.arange(n) * 1000.0
    crit = 0.5 * power if critical else None
    return Trace(ts, racks, power, crit)


def test_domain_demand_sums_its_racks_in_kw() -> None:
    sc = build_scenario(parse_site(TINY), trace())
    # A = a1 + a2 = (40 + t) + 41 kW; B = b1 = 42 kW.
    np.testing.assert_allclose(sc.demand_kw[:, 0], 81.0 + np.arange(6))
    np.testing.assert_allclose(sc.demand_kw[:, 1], 42.0)
    # No critical_w in the trace: the site's non-critical share (30 %) applies.
    np.testing.assert_allclose(sc.critical_kw, 0.7 * sc.demand_kw)
    assert sc.dt_s == 60.0
    assert sc.site.domain_names == ("A", "B")


def test_critical_power_from_the_trace_wins() -> None:
    sc = build_scenario(parse_site(TINY), trace(critical=True))
    np.testing.assert_allclose(sc.critical_kw, 0.5 * sc.demand_kw)


def test_a_rack_missing_from_the_trace_is_a_clear_trace_error() -> None:
    with pytest.raises(TraceError, match="b1") as info:
        build_scenario(parse_site(TINY), trace(racks=("a1", "a2", "c9")))
    assert "not in the trace" in str(info.value)


def test_strict_binding_refuses_a_trace_of_other_racks() -> None:
    with pytest.raises(TraceError, match="a1"):
        build_scenario(parse_site(TINY), trace(racks=("x", "y", "z")))


def test_in_order_binding_replays_on_a_trace_of_other_racks() -> None:
    text = TINY.replace('name = "tiny"', 'name = "tiny"\nrack_binding = "in-order"')
    sc = build_scenario(parse_site(text), trace(racks=("x", "y", "z")))
    # Rack i goes to domain i mod 2: A = x + z, B = y.
    assert sc.site.domain_racks == (("x", "z"), ("y",))
    np.testing.assert_allclose(sc.demand_kw[:, 1], 41.0)


def test_load_scenario_reads_the_trace_named_relative_to_the_site(tmp_path: Path) -> None:
    write_trace(trace(), tmp_path / "data" / "t.csv")
    site = tmp_path / "site.toml"
    site.write_text(TINY.replace('name = "tiny"', 'name = "tiny"\ntrace = "data/t.csv"'))
    config = load_site_config(site)
    assert default_trace_path(site, config) == (tmp_path / "data" / "t.csv").resolve()
    sc = load_scenario(site)
    assert sc.demand_kw.shape == (6, 2)
    # An explicit trace wins over the one the site names.
    write_trace(trace(n=4), tmp_path / "other.csv")
    assert load_scenario(site, tmp_path / "other.csv").demand_kw.shape == (4, 2)


def test_missing_site_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_site_config(tmp_path / "nope.toml")


def test_a_site_without_trace_needs_one_given(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(TINY)
    with pytest.raises(ConfigError, match=r"site\.trace"):
        load_scenario(site)


def test_a_bad_site_file_on_disk_names_the_key(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(TINY.replace("capacity_kw = 50", "capacity_kw = -50"))
    with pytest.raises(ConfigError, match=r"reserve\.capacity_kw"):
        load_site_config(site)


def test_unknown_bundled_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="cella-oversub"):
        bundled_site("no-such-scenario")


def test_the_bundled_default_scenario_loads() -> None:
    sc = load_scenario(bundled_site())
    assert sc.site.n_domains >= 1
    assert sc.demand_kw.shape[1] == sc.site.n_domains
    assert np.all(sc.site.primary_kw > 0)
    # Primary capacities resolve below the domain peaks: the site is oversubscribed.
    assert np.all(sc.site.primary_kw < sc.demand_kw.max(axis=0))
