"""The site file: every bad input gives a ConfigError naming the key; relative capacities
resolve against the trace (percentiles, fractions of peak, fraction of the excess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import parse_site, resolve_site

SITES = Path(__file__).resolve().parents[1] / "data" / "sites"
TINY = (SITES / "tiny.toml").read_text()


def mutate(old: str, new: str, count: int = 1) -> str:
    assert old in TINY, f"test setup: {old!r} not in tiny.toml"
    return TINY.replace(old, new, count)


def test_the_tiny_site_parses() -> None:
    config = parse_site(TINY)
    assert [d.name for d in config.domains] == ["A", "B"]
    assert config.rack_ids == ["a1", "a2", "b1"]


BAD = {
    "unknown key": (mutate('name = "tiny"', 'name = "tiny"\nnmae = "typo"'), "site.nmae"),
    "unknown kes key": (
        mutate("modules = 2", "modules = 2\nmodulez = 3"),
        "domain_defaults.kes.modulez",
    ),
    "negative capacity": (
        mutate("primary_capacity_kw = 100", "primary_capacity_kw = -5"),
        "domains[0].primary_capacity_kw",
    ),
    "NaN capacity": (
        mutate("primary_capacity_kw = 100", "primary_capacity_kw = nan"),
        "domains[0].primary_capacity_kw",
    ),
    "negative kes power": (
        mutate("module_power_kw = 5", "module_power_kw = -5"),
        "domain_defaults.kes.module_power_kw",
    ),
    "fraction above 1": (
        mutate("noncritical_fraction = 0.3", "noncritical_fraction = 1.3"),
        "domain_defaults.flex.noncritical_fraction",
    ),
    "string where a number goes": (
        mutate("capacity_kw = 50", 'capacity_kw = "fifty"'),
        "reserve.capacity_kw",
    ),
    "both reserve capacities": (
        mutate("capacity_kw = 50", "capacity_kw = 50\ncapacity_fraction_of_excess = 0.5"),
        "capacity_fraction_of_excess",
    ),
    "neither reserve capacity": (mutate("capacity_kw = 50\n", ""), "capacity_kw"),
    "both kes powers": (
        mutate("module_power_kw = 5", "module_power_kw = 5\npower_fraction_of_peak = 0.05"),
        "power_fraction_of_peak",
    ),
    "bad percentile (no p)": (
        mutate("primary_capacity_kw = 100", 'primary_capacity = "97%"'),
        "primary_capacity",
    ),
    "bad percentile (over 100)": (
        mutate("primary_capacity_kw = 100", 'primary_capacity = "p970"'),
        "primary_capacity",
    ),
    "unknown cost name": (mutate("kes_losses_kwh = 0.5", "kes_lossez = 0.5"), "costs.kes_lossez"),
    "negative cost": (
        mutate("kes_losses_kwh = 0.5", "kes_losses_kwh = -1"),
        "costs.kes_losses_kwh",
    ),
    "infinite cost": (
        mutate("kes_losses_kwh = 0.5", "kes_losses_kwh = inf"),
        "costs.kes_losses_kwh",
    ),
    "malformed TOML": (mutate("[reserve]", "[reserve"), "tiny-under-test.toml"),
    "duplicate domain names": (mutate('name = "B"', 'name = "A"'), "domain names must be unique"),
    "rack in two domains": (
        mutate('racks = ["b1"]', 'racks = ["a2"]'),
        "a rack belongs to more than one domain",
    ),
    "domain without racks": (mutate('racks = ["b1"]', "racks = []"), "domains[1].racks"),
    "no domains": (TINY.split("[[domains]]")[0], "domains"),
    "breaker curve not inverse": (
        TINY + "\n[breaker]\ncurve_ratio = [1.1, 2.0]\ncurve_seconds = [10, 100]\n",
        "curve_seconds",
    ),
    "more faulted than installed": (
        mutate(
            "primary_capacity_kw = 100\n\n",
            "primary_capacity_kw = 100\nkes = { faulted_modules = 3 }\n\n",
        ),
        "faulted_modules",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_site_file_names_the_key(case: str) -> None:
    text, needle = BAD[case]
    with pytest.raises(ConfigError) as info:
        parse_site(text, source="tiny-under-test.toml")
    assert needle in str(info.value), f"{case}: {info.value}"


def test_duplicate_domain_error_names_the_domains_key_and_the_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(mutate('name = "B"', 'name = "A"'))
    assert info.value.key.startswith("domains")
    assert "'A'" in info.value.why or '"A"' in info.value.why


def test_rack_in_two_domains_error_names_the_rack() -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(mutate('racks = ["b1"]', 'racks = ["a2"]'))
    assert info.value.key.startswith("domains")
    assert "a2" in info.value.why


def test_infinite_capacity_is_rejected() -> None:
    with pytest.raises(ConfigError, match="primary_capacity_kw"):
        parse_site(mutate("primary_capacity_kw = 100", "primary_capacity_kw = inf"))


RELATIVE = """
[site]
name = "relative"

[reserve]
capacity_fraction_of_excess = 0.5

[domain_defaults.kes]
modules = 4
power_fraction_of_peak = 0.05
minutes_at_rated = 10

[[domains]]
name = "A"
racks = ["a1"]
primary_capacity = "p97"

[[domains]]
name = "B"
racks = ["b1"]
primary_capacity = "p97.5"

[[domains]]
name = "C"
racks = ["c1"]
primary_capacity_kw = 1000
"""


def test_relative_capacities_resolve_against_the_trace() -> None:
    rng = np.random.default_rng(7)
    demand = {
        "A": rng.uniform(100.0, 200.0, 500),
        "B": rng.uniform(300.0, 400.0, 500),
        "C": np.full(500, 50.0),
    }
    site = resolve_site(parse_site(RELATIVE), demand)
    p_a = float(np.percentile(demand["A"], 97))
    p_b = float(np.percentile(demand["B"], 97.5))
    np.testing.assert_allclose(site.primary_kw, [p_a, p_b, 1000.0])
    peaks = np.array([demand[k].max() for k in "ABC"])
    # KES power 5 % of the domain peak, over 4 modules; 10 min at rated power.
    np.testing.assert_allclose(site.kes.module_power_kw, 0.05 * peaks / 4)
    np.testing.assert_allclose(site.kes.rated_power_kw, 0.05 * peaks)
    np.testing.assert_allclose(site.kes.capacity_kwh, 0.05 * peaks * 10 / 60)
    # Reserve: half the sum of per-domain peak excesses (C has none: never above 1000 kW).
    excess = (peaks[0] - p_a) + (peaks[1] - p_b)
    assert site.reserve.capacity_kw == pytest.approx(0.5 * excess)


def test_absolute_values_and_speed_ratios_resolve() -> None:
    demand = {"A": np.full(10, 90.0), "B": np.full(10, 80.0)}
    site = resolve_site(parse_site(TINY), demand)
    np.testing.assert_allclose(site.primary_kw, [100.0, 100.0])
    np.testing.assert_allclose(site.kes.rated_power_kw, [10.0, 10.0])
    np.testing.assert_allclose(site.kes.capacity_kwh, [2.0, 2.0])
    # 18,000 / 36,000 rpm = 0.5; 25,200 / 36,000 = 0.7.
    np.testing.assert_allclose(site.kes.speed_min_ratio, [0.5, 0.5])
    np.testing.assert_allclose(site.kes.base_speed_ratio, [0.7, 0.7])
    assert site.reserve.capacity_kw == 50.0
    assert site.horizon_s == 360.0
    # Shift limit 20 % of the domain peak.
    np.testing.assert_allclose(site.flex.shift_max_kw, [18.0, 16.0])


def test_resolving_without_a_demand_series_names_the_domain() -> None:
    with pytest.raises(ConfigError, match=r"domains\.B"):
        resolve_site(parse_site(TINY), {"A": np.ones(3)})


def test_domain_kes_overrides_the_defaults() -> None:
    text = mutate(
        "primary_capacity_kw = 100\n\n", "primary_capacity_kw = 100\nkes = { modules = 3 }\n\n"
    )
    site = resolve_site(parse_site(text), {"A": np.ones(3), "B": np.ones(3)})
    np.testing.assert_allclose(site.kes.rated_power_kw, [15.0, 10.0])


def test_a_boolean_capacity_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"reserve\.capacity_kw"):
        parse_site(mutate("capacity_kw = 50", "capacity_kw = true"))


@pytest.mark.parametrize(
    "curve",
    [
        "curve_ratio = [-1.1, 2.0]\ncurve_seconds = [10, 1]",
        "curve_ratio = [1.1, 2.0]\ncurve_seconds = [10, 0]",
    ],
)
def test_breaker_curve_values_must_be_positive(curve: str) -> None:
    with pytest.raises(ConfigError, match="breaker"):
        parse_site(TINY + f"\n[breaker]\n{curve}\n")


def test_an_error_in_domain_defaults_names_domain_defaults() -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(mutate("[domain_defaults.kes]", "[domain_defaults.kes]\nmodulez = 3"))
    assert info.value.key == "domain_defaults.kes.modulez"


def test_faulted_modules_in_the_site_file_reduce_the_bank() -> None:
    text = mutate(
        "primary_capacity_kw = 100\n\n",
        "primary_capacity_kw = 100\nkes = { faulted_modules = 1 }\n\n",
    )
    site = resolve_site(parse_site(text), {"A": np.ones(3), "B": np.ones(3)})
    # A: 2 modules, 1 faulted → 5 kW / 1 kWh; B untouched → 10 kW / 2 kWh.
    np.testing.assert_allclose(site.kes.rated_power_kw, [5.0, 10.0])
    np.testing.assert_allclose(site.kes.capacity_kwh, [1.0, 2.0])


PRESET_SITE = """
[site]
name = "presets"

[reserve]
capacity_kw = 50

[domain_defaults.kes]
preset = "energy-storage"
module_power_kw = 10

[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100

[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
kes = { preset = "ups", standby_loss_fraction = 0.02 }

[[domains]]
name = "C"
racks = ["c1"]
primary_capacity_kw = 100
kes = { preset = "ups", module_energy_kwh = 0.5 }
"""


def test_flywheel_presets_fill_what_the_file_does_not_write() -> None:
    site = resolve_site(parse_site(PRESET_SITE), {n: np.array([90.0]) for n in "ABC"})
    kes = site.kes
    # A: energy-storage, 4 modules x 10 kW for 10 min -> 4 x 10/6 kWh; ω_min = ½ω_max.
    assert kes.capacity_kwh[0] == pytest.approx(4 * 10 / 6)
    assert kes.speed_min_ratio[0] == pytest.approx(0.5)
    assert kes.standby_fixed_share[0] == pytest.approx(0.4)
    # B: a UPS flywheel holds 20 s at rated power (4 x 10 kW x 20 s), VYCON's speed range;
    # the loss the domain writes wins over the preset's.
    assert kes.capacity_kwh[1] == pytest.approx(4 * 10 * 20 / 3600)
    assert kes.speed_min_ratio[1] == pytest.approx(14000 / 36750)
    assert kes.standby_loss_fraction[1] == pytest.approx(0.02)
    # C: an energy written in the file replaces the preset's duration.
    assert kes.capacity_kwh[2] == pytest.approx(4 * 0.5)


def test_an_unknown_flywheel_preset_names_the_key() -> None:
    text = PRESET_SITE.replace('preset = "ups", module', 'preset = "battery", module')
    with pytest.raises(ConfigError, match=r"domains\[2\]\.kes\.preset"):
        parse_site(text)
