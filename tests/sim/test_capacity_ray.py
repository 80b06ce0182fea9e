"""``wattwheel capacity`` on a real two-node local Ray cluster equals a serial run exactly.

One cluster for the module (Ray start-up is slow): ``ray start --head`` and a second
``ray start --address=...`` node, one CPU each, torn down at the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattwheel.cli import _register, app
from wattwheel.sim.scenario import bundled_site

ray = pytest.importorskip("ray", reason="needs the capacity extra (make install-dev)")

from services_ray import RAY_ENV, RayCluster, start_cluster  # noqa: E402

runner = CliRunner()
_register()
pytestmark = [pytest.mark.slow, pytest.mark.service]

#: 1.5 days of the default scenario, every policy that matters, few candidates per point.
ARGS = [
    "--days",
    "1.5",
    "--policies",
    "none,reactive,predictive",
    "--kes-fractions",
    "0.05",
    "--step-pct",
    "5",
    "--max-factor",
    "1.1",
    "--resolution",
    "6",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("raycluster"))


def _run(out: Path, *extra: str) -> dict[str, object]:
    res = runner.invoke(
        app, ["capacity", "--site", str(bundled_site()), "--out", str(out), *ARGS, *extra]
    )
    assert res.exit_code == 0, res.output
    payload: dict[str, object] = json.loads((out / "capacity.json").read_text())
    return payload


def _cached(out: Path) -> dict[str, object]:
    return {p.name: json.loads(p.read_text()) for p in (out / "cache").glob("*.json")}


def test_two_node_cluster_equals_serial(
    cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    on_ray = _run(tmp_path / "ray", "--ray-address", cluster.address)
    serial = _run(tmp_path / "serial", "--serial")
    executor = on_ray["executor"]
    assert isinstance(executor, dict)
    assert executor["kind"] == "ray-cluster" and executor["nodes"] == 2
    assert serial["executor"] == {"kind": "serial"}
    # Same answers and the same metrics for every candidate, to the last bit.
    assert on_ray["policies"] == serial["policies"]
    assert _cached(tmp_path / "ray") == _cached(tmp_path / "serial")
    # The predictive policy ran with the shipped model shared through the object store.
    assert str(on_ray["forecaster"]).startswith("lstm")
    assert on_ray["forecaster_trained_on"] == serial["forecaster_trained_on"] is not None
    policies = on_ray["policies"]
    assert isinstance(policies, dict) and set(policies) == {"none", "reactive", "predictive"}
