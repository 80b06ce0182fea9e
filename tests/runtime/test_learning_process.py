"""Continuous learning end to end on real parts: telemetry in a SQLite store rebuilt into domain
demand, the shipped 5-minute model scored and fine-tuned in the separate worker process
(torch), the fine-tuned model directory loadable with ONNX Runtime, the model history in the
store's table."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from wattwheel.adapters.model_artifact import load_model, read_metadata, shipped_model_for_step
from wattwheel.adapters.model_jobs import ProcessModelJobs, score_job, torch_missing
from wattwheel.adapters.store import MemoryStore, open_store
from wattwheel.adapters.store.demand import StoredDemand, assemble, demand_history
from wattwheel.adapters.store.models import model_history_for
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.online import LearningRules
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.learning import ContinuousLearner, LearnerConfig
from wattwheel.sim.trace_io import read_trace

TRACE = Path(__file__).resolve().parents[2] / "src/wattwheel/scenarios/cella-oversub/trace.csv"
STEP_S = 300.0
RACKS = {"r1": "row-a", "r2": "row-a", "r3": "row-b"}


def _store_pdu_days(store: object, days: int) -> float:
    """The cella PDUs as three racks' PDU readings every 60 s; returns the last time."""
    trace = read_trace(TRACE)
    rows = days * 288
    samples = []
    for i in range(rows):
        for j, rack in enumerate(RACKS):
            for k in range(5):  # five readings per 5-minute step, averaged by the rebuild
                t = float(trace.timestamps_s[i]) + 60.0 * k
                samples.append(PowerSample("pdu", rack, None, t, float(trace.power_w[i, j]), "pdu"))
    store.write_telemetry(samples)  # type: ignore[attr-defined]
    return float(trace.timestamps_s[rows - 1]) + STEP_S


def test_demand_rebuild_sums_racks_prefers_totals_and_leaves_gaps() -> None:
    buckets = [
        (10, "r1", "", "pdu", 100.0),
        (10, "r1", "s1", "server", 40.0),  # a total exists: servers are not added to it
        (10, "r2", "s1", "server", 30.0),
        (10, "r2", "s2", "server", 20.0),
        (10, "r3", "", "pdu", 7.0),
        (11, "r1", "", "pdu", 110.0),  # r2 silent at step 11: row-a unknown, not lower
        (11, "r3", "", "pdu", 8.0),
        (11, "elsewhere", "", "pdu", 1e9),
    ]
    h = assemble(buckets, RACKS, ("row-a", "row-b"), STEP_S)
    assert h is not None
    assert h.timestamps_s.tolist() == [3000.0, 3300.0]
    assert h.values[0].tolist() == [150.0, 7.0]
    assert math.isnan(h.values[1, 0]) and h.values[1, 1] == 8.0


@pytest.mark.slow
@pytest.mark.skipif(torch_missing() is not None, reason="fine-tuning needs torch")
def test_fine_tune_and_score_in_the_worker_process_from_stored_telemetry(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    end_s = _store_pdu_days(store, 4)
    history = demand_history(store, RACKS, ("row-a", "row-b"), STEP_S, 0.0, end_s)
    assert history is not None and history.values.shape == (4 * 288, 2)
    trace = read_trace(TRACE)
    np.testing.assert_allclose(
        history.values[:, 0], trace.power_w[: 4 * 288, 0] + trace.power_w[: 4 * 288, 1]
    )
    shipped = shipped_model_for_step(STEP_S)
    assert shipped is not None
    clock = FakeClock(start_s=end_s)
    installed: list[str] = []
    jobs = ProcessModelJobs()
    learner = ContinuousLearner(
        str(shipped),
        lambda since, until: demand_history(store, RACKS, ("row-a", "row-b"), STEP_S, since, until),
        installed.append,
        jobs,
        clock,
        LearnerConfig(
            models_dir=str(tmp_path / "models"),
            cycle_s=3600.0,
            finetune_every_s=3600.0,
            epochs=1,
            rules=LearningRules(min_origins=12, window=288, max_shadow_origins=288),
        ),
        models=model_history_for(store),
    )
    try:
        clock.advance(3600.0)
        asyncio.run(learner.cycle())
    finally:
        jobs.close()
    assert learner.lineup.shadow == "v1"
    scored = learner.board.count("v0")
    assert scored > 1000  # the shipped model scored on the stored days (out of sample for it)
    assert 1000.0 < learner.board.mae("v0", -math.inf, math.inf) < 50_000.0
    meta = read_metadata(tmp_path / "models" / "v1")
    assert meta["step_s"] == STEP_S
    assert meta["training_data"]["parent"] == str(shipped)
    assert meta["training_data"]["until_s"] == history.end_s
    load_model(tmp_path / "models" / "v1", backend="onnx")  # what serve installs
    stored = {r.version: r.status for r in model_history_for(store).models()}  # type: ignore[union-attr]
    assert stored == {"v0": "live", "v1": "shadow"}
    store.close()


class _CountingStore(MemoryStore):
    """Records the ``since_s`` of every telemetry read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[float | None] = []

    def telemetry(
        self, rack_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> list[tuple[int, PowerSample]]:
        self.reads.append(since_s)
        return super().telemetry(rack_id, since_s, limit)


def test_stored_demand_reads_only_new_steps_and_matches_a_full_read() -> None:
    store = _CountingStore()
    domains = ("row-a", "row-b")

    def write(t0: float, n: int) -> None:
        store.write_telemetry(
            [
                PowerSample("pdu", rack, None, t0 + 60.0 * i, 1000.0 + i + 10 * k, "pdu")
                for i in range(n)
                for k, rack in enumerate(RACKS)
            ]
        )

    write(0.0, 50)  # 0 .. 2940 s: steps 0..9, the last one complete
    cached = StoredDemand(store, RACKS, domains, STEP_S)
    first = cached(0.0, 3000.0)
    assert first is not None and first.values.shape == (10, 2)
    write(3000.0, 40)  # up to 5340 s
    second = cached(0.0, 5400.0)
    assert store.reads[-1] == 2700.0  # from the newest step it had, not from the start
    full = demand_history(store, RACKS, domains, STEP_S, 0.0, 5400.0, limit=10**6)
    assert second is not None and full is not None
    np.testing.assert_allclose(second.values, full.values)
    np.testing.assert_allclose(second.timestamps_s, full.timestamps_s)
    window = cached(3000.0, 5400.0)
    assert window is not None and window.timestamps_s[0] == 3000.0


def test_scoring_survives_a_domain_with_no_recent_reading() -> None:
    """A domain dark for longer than the model's context cannot be forecast: those origins
    score the other domains only, and the job does not fail (it would stall learning)."""
    trace = read_trace(TRACE)
    rows = 2 * 288
    values = np.array(trace.power_w[:rows, :2], dtype=float)
    values[200:520, 0] = np.nan
    shipped = shipped_model_for_step(STEP_S)
    assert shipped is not None
    origins, errors, misses = score_job(
        str(shipped),
        trace.timestamps_s[:rows].tolist(),
        ["a", "b"],
        values.tolist(),
        float(trace.timestamps_s[0]),
    )
    assert len(origins) == len(errors) == len(misses) > 400
    assert all(math.isfinite(e) for e in errors)
