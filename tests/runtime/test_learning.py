"""The continuous-learning schedule (runtime/learning.py) with fake jobs and a fake clock:
fine-tune when due, score the shadow only after its training data, promote, roll back, watch
drift, record the model history, and run without torch."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from wattwheel.adapters.store.models import MemoryModelHistory
from wattwheel.forecast.base import History
from wattwheel.forecast.online import LearningRules
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.learning import ContinuousLearner, LearnerConfig, Scores

STEP_S = 300.0
HOUR_S = 3600.0
RULES = LearningRules(margin=0.05, min_origins=24, window=288, max_shadow_origins=96)
ErrorFn = Callable[[str, float], float]


class FakeJobs:
    """Errors per model directory and origin from ``error``; fine-tunes write nothing."""

    def __init__(self, error: ErrorFn, missing: str | None = None, miss: float = 0.1) -> None:
        self.error = error
        self.missing = missing
        self.miss = miss
        self.fine_tunes: list[tuple[str, str, float]] = []
        self.scored_since: list[tuple[str, float]] = []

    def fine_tune_unavailable(self) -> str | None:
        return self.missing

    async def score(self, model_dir: str, history: History, since_s: float) -> Scores:
        self.scored_since.append((model_dir, since_s))
        ts = history.timestamps_s[:-1]
        origins = [float(t) for t in ts if t >= since_s]
        return origins, [self.error(model_dir, t) for t in origins], [self.miss] * len(origins)

    async def fine_tune(
        self, parent_dir: str, history: History, out_dir: str, epochs: int
    ) -> Mapping[str, Any]:
        self.fine_tunes.append((parent_dir, out_dir, history.end_s))
        return {"val_mae_norm": [0.9, 1.0], "val_persistence_mae_norm": [1.0, 1.1]}


class Harness:
    def __init__(self, jobs: FakeJobs, finetune_every_s: float = 6 * HOUR_S) -> None:
        self.clock = FakeClock(start_s=1_000_000.0)
        self.start_s = self.clock.now_s()
        self.installed: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.log = MemoryModelHistory()
        self.jobs = jobs
        self.learner = ContinuousLearner(
            "/models/shipped",
            self.history,
            self.installed.append,
            jobs,
            self.clock,
            LearnerConfig(
                models_dir="/models/site",
                cycle_s=HOUR_S,
                finetune_every_s=finetune_every_s,
                min_train_rows=12,
                rules=RULES,
            ),
            models=self.log,
            event=lambda kind, message: self.events.append((kind, message)),
        )

    def history(self, since_s: float, until_s: float) -> History:
        first = max(since_s, self.start_s - 86400.0)
        ts = np.arange(math.ceil(first / STEP_S) * STEP_S, until_s, STEP_S)
        return History(ts, ("row-a",), np.full((ts.size, 1), 1000.0))

    def hours(self, n: int) -> None:
        async def run() -> None:
            for _ in range(n):
                self.clock.advance(HOUR_S)
                await self.learner.cycle()

        asyncio.run(run())

    def statuses(self) -> dict[str, str]:
        return {r.version: r.status for r in self.log.models()}


def _by_dir(errors: Mapping[str, float]) -> ErrorFn:
    return lambda model_dir, t: errors.get(model_dir.rsplit("/", 1)[-1], 10.0)


def test_a_better_fine_tune_is_promoted_after_enough_out_of_sample_origins() -> None:
    h = Harness(FakeJobs(_by_dir({"shipped": 10.0, "v1": 9.0})))
    h.hours(5)
    assert h.jobs.fine_tunes == [] and h.learner.lineup.live == "v0"
    h.hours(1)  # 6 h: due
    [(parent, out_dir, until_s)] = h.jobs.fine_tunes
    assert (parent, out_dir) == ("/models/shipped", "/models/site/v1")
    assert h.learner.lineup.shadow == "v1" and h.statuses()["v1"] == "shadow"
    h.hours(1)
    # the shadow is scored only on origins after its training data
    since = [s for d, s in h.jobs.scored_since if d.endswith("v1")]
    assert since and min(since) > until_s
    assert h.learner.lineup.live == "v0"  # 11 origins scored < 24
    hours = 1
    while h.learner.lineup.live == "v0" and hours < 10:
        h.hours(1)
        hours += 1
    assert hours == 3  # 11, 23, then 35 >= 24 origins
    assert h.learner.lineup.live == "v1" and h.installed == ["/models/site/v1"]
    assert h.statuses() == {"v1": "live", "v0": "predecessor"}
    assert [k for k, _ in h.events] == ["model.shadow", "model.promote"]
    rec = h.log.models()[0]
    assert rec.version == "v1" and rec.metrics["scored_origins"] == 35
    assert rec.metrics["vs_live_gain"] == 0.1  # scored beside v0 while it was the shadow


def test_a_promoted_model_that_turns_worse_is_rolled_back() -> None:
    def error(model_dir: str, t: float) -> float:
        if model_dir.endswith("v1"):
            return 9.0 if t < 1_000_000.0 + 9 * HOUR_S else 12.0  # good on trial, then worse
        return 10.0

    h = Harness(FakeJobs(error))
    h.hours(9)  # fine-tuned at 6 h, promoted at 9 h
    assert h.learner.lineup.live == "v1"
    h.hours(3)
    assert h.learner.lineup.live == "v0"
    assert h.installed == ["/models/site/v1", "/models/shipped"]
    assert h.statuses()["v1"] == "rolled_back" and h.statuses()["v0"] == "live"
    assert "model.rollback" in [k for k, _ in h.events]


def test_a_live_model_worse_than_the_shipped_one_goes_back_to_it() -> None:
    turn_s = 1_000_000.0 + 15 * HOUR_S

    def error(model_dir: str, t: float) -> float:
        late = t >= turn_s
        if model_dir.endswith("v1"):
            return 13.0 if late else 9.0
        if model_dir.endswith("v2"):
            return 12.0 if late else 8.0
        return 10.0

    h = Harness(FakeJobs(error))
    h.hours(15)  # v1 promoted at 9 h, v2 (fine-tuned from v1 at 12 h) at 15 h
    assert (h.learner.lineup.live, h.learner.lineup.predecessor) == ("v2", "v1")
    h.hours(3)  # v2 beats its predecessor but not the shipped model, which is still scored
    assert h.learner.lineup.live == "v0" and h.installed[-1] == "/models/shipped"
    statuses = h.statuses()
    assert (statuses["v0"], statuses["v1"], statuses["v2"]) == ("live", "retired", "rolled_back")
    assert "shipped" in next(m for k, m in h.events if k == "model.rollback")


def test_a_shadow_that_does_not_beat_live_by_the_margin_is_rejected() -> None:
    h = Harness(FakeJobs(_by_dir({"shipped": 10.0, "v1": 9.8})), finetune_every_s=1e9)
    h.learner.last_finetune_s = -math.inf
    h.hours(1)
    assert h.learner.lineup.shadow == "v1"
    h.hours(9)  # 96 origins scored
    assert h.learner.lineup == type(h.learner.lineup)("v0", anchor="v0")
    assert h.statuses()["v1"] == "rejected" and h.installed == []


def test_drift_on_the_interval_misses_fine_tunes_before_the_period() -> None:
    h = Harness(FakeJobs(_by_dir({}), miss=0.5), finetune_every_s=1e9)
    h.learner.cfg = LearnerConfig(
        models_dir="/models/site",
        cycle_s=HOUR_S,
        finetune_every_s=1e9,
        min_train_rows=12,
        rules=LearningRules(min_origins=24, window=288, drift_window=24),
    )
    h.hours(1)  # a day of stored history scored at once: half the actuals outside the interval
    assert len(h.jobs.fine_tunes) == 1
    assert h.events[0][0] == "model.drift" and "50.0%" in h.events[0][1]
    assert h.learner.status()["drift"] is False  # cleared by the fine-tune it started


def test_without_torch_it_scores_and_says_fine_tuning_is_off() -> None:
    h = Harness(FakeJobs(_by_dir({}), missing="torch is not installed"))
    h.hours(12)
    assert h.jobs.fine_tunes == []
    status = h.learner.status()
    assert status["fine_tuning"] == "off: torch is not installed"
    assert status["live"] == "v0" and status["state"] == "running"
    scored = h.log.models()[0].metrics["scored_origins"]
    assert scored == h.learner.board.count("v0") and scored >= 12 * 12


def test_no_stored_history_yet_waits() -> None:
    h = Harness(FakeJobs(_by_dir({})))
    h.learner.history_source = lambda since_s, until_s: None
    h.hours(1)
    assert h.learner.status()["state"] == "waiting for stored history"


def test_a_model_history_that_cannot_be_written_is_retried() -> None:
    h = Harness(FakeJobs(_by_dir({})))
    h.log.available = False
    h.hours(1)
    assert h.log.models() == []
    h.log.available = True
    h.hours(1)
    assert [r.version for r in h.log.models()] == ["v0"]


def test_a_restart_carries_on_from_the_stored_model_history() -> None:
    first = Harness(FakeJobs(_by_dir({"shipped": 10.0, "v1": 9.0})))
    first.hours(9)
    assert first.learner.lineup.live == "v1"
    again = Harness(FakeJobs(_by_dir({"shipped": 10.0, "v1": 9.0, "v2": 8.0})))
    again.log = first.log
    again.learner.model_log = first.log
    again.learner.restore(first.log.models())
    assert again.learner.lineup == type(again.learner.lineup)("v1", None, "v0", anchor="v0")

    async def start() -> None:
        task = asyncio.ensure_future(again.learner.run())
        for _ in range(100):
            if again.installed:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(start())
    assert again.installed == ["/models/site/v1"]  # the restored live model serves again
    again.learner.last_finetune_s = -math.inf
    again.hours(1)
    assert again.learner.lineup.shadow == "v2"  # numbered after the stored versions
    assert again.jobs.fine_tunes[-1][0] == "/models/site/v1"


def test_a_history_from_another_base_model_is_not_resumed() -> None:
    first = Harness(FakeJobs(_by_dir({"shipped": 10.0, "v1": 9.0})))
    first.hours(9)
    other = Harness(FakeJobs(_by_dir({})))
    other.learner.records["v0"] = type(other.learner.records["v0"])(
        "v0", None, 0.0, "live", -math.inf, "/models/another", {}
    )
    other.learner.restore(first.log.models())
    assert other.learner.lineup.live == "v0"
    other.learner.last_finetune_s = -math.inf
    other.hours(1)
    assert other.learner.lineup.shadow == "v2"  # v1 exists in the table: not overwritten
