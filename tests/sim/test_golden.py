"""Golden regression of the default scenario, and the ordering the backbone promises.

The pinned figures live in ``tests/data/golden/cella-oversub.json``; regenerate them on purpose
with ``WATTWHEEL_REGEN_GOLDEN=1 pytest tests/sim/test_golden.py`` and explain why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from wattwheel.sim.bench import baseline_forecaster, run_policy
from wattwheel.sim.scenario import bundled_site, load_scenario

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "cella-oversub.json"
PINNED = (
    "cost_total",
    "reserve_energy_kwh",
    "reserve_activations",
    "overload_energy_kwh",
    "breaker_trips",
    "capped_energy_kwh",
    "critical_capped_energy_kwh",
    "shifted_energy_kwh",
    "kes_losses_kwh",
    "kes_throughput_kwh",
    "peak_grid_kw",
)
# Six whole-month runs in one fixture: CPU-bound, not a hang; on a busy 2-core machine they
# can take longer than the suite's 600 s hang guard.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, float]]:
    """Every policy once over the whole default scenario (a fresh baseline forecaster per run,
    calibrated online from the trace's past only)."""
    sc = load_scenario(bundled_site())
    out = {}
    for name in ("none", "reactive", "seed", "predictive", "oracle", "optimum"):
        fc = baseline_forecaster() if name in ("seed", "predictive") else None
        out[name] = run_policy(sc, name, fc).site_metrics
    return out


def test_default_scenario_matches_golden(results: dict[str, dict[str, float]]) -> None:
    figures = {p: {k: round(m[k], 6) for k in PINNED} for p, m in results.items()}
    if os.environ.get("WATTWHEEL_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(figures) == set(golden)
    for policy, metrics in golden.items():
        for key, value in metrics.items():
            assert figures[policy][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (policy, key)


def test_default_scenario_ordering_and_safety(results: dict[str, dict[str, float]]) -> None:
    """What the backbone promises on the baseline forecaster (the LSTM variant runs in
    tests/cli/test_sim_cli.py): no trip and no critical cap for the controllers that must
    never cause one; predictive <= reactive < none, oracle <= reactive and predictive <= seed
    (issue 9 item 8: plans priced on the forecast median, the reactive floor on the banks,
    shifts on measured excess); and the offline LP bound below every policy's cost on the
    plant."""
    cost = {name: m["cost_total"] for name, m in results.items()}
    for name in ("reactive", "predictive", "oracle"):
        assert results[name]["breaker_trips"] == 0, name
        assert results[name]["critical_capped_energy_kwh"] == 0, name
    assert cost["oracle"] <= cost["reactive"] < cost["none"], cost
    assert cost["predictive"] <= cost["reactive"], cost
    assert cost["predictive"] <= cost["seed"], cost
    bound = results["optimum"]["lp_lower_bound"]
    for name, value in cost.items():
        assert bound <= value + 1e-6, (name, bound, value)
