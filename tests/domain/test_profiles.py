"""Cost profiles: weights rescaled or re-priced, unknown names named in the error."""

from __future__ import annotations

import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.profiles import PROFILES, parse_profiles, profile

COSTS = {
    "capped_energy_kwh": 2.0,
    "shifted_energy_kwh": 0.05,
    "deferred_energy_kwh": 0.2,
    "kes_losses_kwh": 0.12,
    "kes_throughput_kwh": 0.02,
    "overload_energy_kwh": 20.0,
}


def test_default_changes_nothing() -> None:
    assert profile("default").apply(COSTS) == COSTS


def test_factors_scale_only_their_metrics() -> None:
    out = profile("capping-x3").apply(COSTS)
    assert out["capped_energy_kwh"] == pytest.approx(6.0)
    assert {k: v for k, v in out.items() if k != "capped_energy_kwh"} == {
        k: v for k, v in COSTS.items() if k != "capped_energy_kwh"
    }
    standby = profile("standby-x2").apply(COSTS)
    assert standby["kes_losses_kwh"] == pytest.approx(0.24)
    assert standby["kes_throughput_kwh"] == pytest.approx(0.04)


def test_priced_like_copies_the_other_weight() -> None:
    out = profile("overload-as-capping").apply(COSTS)
    assert out["overload_energy_kwh"] == pytest.approx(2.0)


def test_a_metric_without_a_weight_stays_unpriced() -> None:
    assert "capped_energy_kwh" not in profile("capping-x3").apply({"kes_losses_kwh": 1.0})


def test_parse_all_and_lists() -> None:
    assert [p.name for p in parse_profiles("all")] == list(PROFILES)
    assert [p.name for p in parse_profiles("standby-x2, default,standby-x2")] == [
        "standby-x2",
        "default",
    ]


@pytest.mark.parametrize("spec", ["cheap", "default,,capping-x3"])
def test_bad_names_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_profiles(spec)
    assert "--profile" in str(err.value)
