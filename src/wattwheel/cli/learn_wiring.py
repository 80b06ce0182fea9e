"""``serve --learn``: continuous learning wired to the store, the runtime and the API.

One :class:`~wattwheel.runtime.learning.ContinuousLearner` on its own thread's event loop
(never the control loop's), its scoring and fine-tuning in one separate lower-priority process
(:class:`~wattwheel.adapters.model_jobs.ProcessModelJobs`), fine-tuning on the demand history
rebuilt from the stored telemetry, the model history in the store's ``model_versions`` table,
``/api/v1/models`` and ``/status`` showing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattwheel.runtime.clock import Clock
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.learning import ContinuousLearner, LearnerConfig
from wattwheel.runtime.loop import Runtime
from wattwheel.runtime.state import EventRecord
from wattwheel.runtime.workers import LoopThread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnOptions:
    """``serve``'s continuous-learning options."""

    models_dir: Path
    cycle_s: float = 3600.0
    finetune_every_s: float = 86400.0


class LearningWorker:
    """The learner, its thread and its process; :meth:`stop` ends all three."""

    def __init__(self, learner: ContinuousLearner, thread: LoopThread, jobs: Any) -> None:
        self.learner = learner
        self.thread = thread
        self.jobs = jobs
        self.running = thread.submit(learner.run())

    def stop(self) -> None:
        self.running.cancel()
        self.thread.stop()
        self.jobs.close()


def start_learning(
    options: LearnOptions,
    base_dir: Path,
    runtime: Runtime,
    store: Any,
    inventory: Inventory,
    clock: Clock,
    step_s: float,
) -> LearningWorker:
    """Start continuous learning from ``base_dir`` (the model ``serve`` loaded)."""
    from wattwheel.adapters.model_artifact import load_model
    from wattwheel.adapters.model_jobs import ProcessModelJobs
    from wattwheel.adapters.store.demand import StoredDemand
    from wattwheel.adapters.store.models import model_history_for
    from wattwheel.forecast.conformal import ConformalForecaster

    domain_ids = inventory.domain_ids
    rack_domain = {
        rack: domain_ids[int(d)]
        for rack, d in zip(inventory.rack_ids, inventory.rack_domain, strict=True)
    }

    history = StoredDemand(store, rack_domain, domain_ids, step_s)

    def install(model_dir: str) -> None:
        runtime.decider.forecaster = ConformalForecaster(load_model(Path(model_dir)))

    def event(kind: str, message: str) -> None:
        ev = EventRecord(clock.now_s(), kind, message, None, "learner", {})
        runtime.state.record_event(ev)
        store.write_event(ev)

    options.models_dir.mkdir(parents=True, exist_ok=True)
    jobs = ProcessModelJobs()
    learner = ContinuousLearner(
        str(base_dir),
        history,
        install,
        jobs,
        clock,
        LearnerConfig(
            models_dir=str(options.models_dir.resolve()),
            cycle_s=options.cycle_s,
            finetune_every_s=options.finetune_every_s,
        ),
        models=model_history_for(store),
        event=event,
    )
    history_log = model_history_for(store)
    if history_log is not None:
        try:
            learner.restore(history_log.models(limit=10_000))
        except Exception as exc:  # the database is down at start: begin from the base model
            log.warning("continuous learning: model history not read (%s): starting afresh", exc)
    runtime.state.learning = learner.status
    if jobs.fine_tune_unavailable():
        log.warning("continuous learning: fine-tuning off, %s", jobs.fine_tune_unavailable())
    thread = LoopThread("wattwheel-learn")
    thread.start()
    return LearningWorker(learner, thread, jobs)
