"""Continuous learning in ``serve``: the schedule around the pure rules of
:mod:`wattwheel.forecast.online`.

Every ``cycle_s`` the learner reads the stored demand history (a store read, in a thread),
scores each model version on the lineup (live, shadow, predecessor) on the origins it has not
scored yet, after its training data (the same rolling backtest for all), applies the rollback
and promotion rules, installs the new live model if one changed, and, when fine-tuning is due
(``finetune_every_s``, or at once when the drift test fires on the live model's interval misses)
and no shadow is on trial, fine-tunes the live model on the last ``train_window_s`` of history:
the shadow of the next cycles. Every version, its status and metrics go to the model history.

Nothing heavy runs here: scoring and fine-tuning are :class:`ModelJobs` (``serve`` runs them in
a separate, lower-priority process, so torch's training never holds the control loop's GIL or
core), and the learner itself runs on its own thread's event loop. A new site starts from the
shipped global model (``v0``). Without torch (the lean live install) the learner still scores
the live model and watches for drift, and says in :attr:`ContinuousLearner.status` that
fine-tuning is off.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from wattwheel.forecast.base import History
from wattwheel.forecast.online import (
    LearningRules,
    Lineup,
    ModelRecord,
    Scoreboard,
    Verdict,
    drift_check,
    offer,
    step,
)
from wattwheel.runtime.clock import Clock

log = logging.getLogger(__name__)

#: (origin epoch s, first-horizon error, interval miss share) per scored origin.
Scores = tuple[Sequence[float], Sequence[float], Sequence[float]]


class ModelJobs(Protocol):
    """The heavy work, away from the control loop (see :mod:`wattwheel.adapters.model_jobs`)."""

    def fine_tune_unavailable(self) -> str | None:
        """Why fine-tuning cannot run here (e.g. torch missing), or None."""
        ...

    async def score(self, model_dir: str, history: History, since_s: float) -> Scores:
        """The model's first-horizon errors at each origin of ``history`` at or after
        ``since_s`` whose target ``history`` holds."""
        ...

    async def fine_tune(
        self, parent_dir: str, history: History, out_dir: str, epochs: int
    ) -> Mapping[str, Any]:
        """Fine-tune the model in ``parent_dir`` on ``history`` into ``out_dir``; its
        validation metrics."""
        ...


class ModelLog(Protocol):
    """Where the model history goes (the store's ``model_versions`` table)."""

    def write_model(self, record: ModelRecord, now_s: float) -> None: ...


@dataclass(frozen=True)
class LearnerConfig:
    """Schedule of continuous learning (seconds)."""

    models_dir: str
    cycle_s: float = 3600.0
    finetune_every_s: float = 86400.0
    train_window_s: float = 14 * 86400.0
    min_train_rows: int = 600
    epochs: int = 4
    rules: LearningRules = field(default_factory=LearningRules)

    def __post_init__(self) -> None:
        if not (self.cycle_s > 0 and self.finetune_every_s > 0 and self.train_window_s > 0):
            raise ValueError("cycle_s, finetune_every_s and train_window_s must be > 0")


class ContinuousLearner:
    """Scores, fine-tunes, promotes and rolls back forecasting models (module docstring).

    Args:
        base_dir: the model a new site starts from (the shipped global model).
        history: ``(since_s, until_s) -> History`` of stored demand on the model's grid
            (blocking: called in a thread), or None when there is none yet.
        install: ``model_dir -> None``: make this model the controller's forecaster (blocking,
            called in a thread).
        jobs: where scoring and fine-tuning run.
        models: the model history (None: kept in memory only, see :attr:`records`).
        event: ``(kind, message)`` for the event log.
    """

    def __init__(
        self,
        base_dir: str,
        history: Callable[[float, float], History | None],
        install: Callable[[str], None],
        jobs: ModelJobs,
        clock: Clock,
        config: LearnerConfig,
        models: ModelLog | None = None,
        event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.history_source = history
        self.install = install
        self.jobs = jobs
        self.clock = clock
        self.cfg = config
        self.model_log = models
        self.event = event or (lambda kind, message: None)
        now = clock.now_s()
        self.records: dict[str, ModelRecord] = {
            "v0": ModelRecord("v0", None, now, "live", -math.inf, base_dir, {"source": "shipped"})
        }
        self.lineup = Lineup("v0", anchor="v0")
        self.board = Scoreboard()
        self.scored_until: dict[str, float] = {}
        self.misses: list[float] = []
        self.last_finetune_s = now
        self.drift = False
        self.cycles = 0
        self.fine_tuning = False
        self.state = "starting"
        self._dirty: set[str] = {"v0"}
        self._next = 1

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What ``/api/v1/models`` and ``/status`` show of the learner."""
        why_not = self.jobs.fine_tune_unavailable()
        return {
            "state": self.state,
            "live": self.lineup.live,
            "shadow": self.lineup.shadow,
            "predecessor": self.lineup.predecessor,
            "fine_tuning": "off: " + why_not if why_not else "on",
            "fine_tune_running": self.fine_tuning,
            "drift": self.drift,
            "cycles": self.cycles,
        }

    # ------------------------------------------------------------------ loop
    def restore(self, stored: Sequence[ModelRecord]) -> None:
        """Carry on from the model history of an earlier run on this store: the versions it
        made keep their names (new ones are numbered after them) and, when it started from the
        same base model, its live, shadow and predecessor take their places again (call
        :meth:`run` next: it installs the live model). Scores start afresh."""
        base = self.records["v0"]
        earlier = {r.version: r for r in stored if r.version != "v0"}
        self._next = 1 + max((_number(v) for v in earlier), default=0)
        same_base = any(r.version == "v0" and r.model_dir == base.model_dir for r in stored)
        if not same_base:
            return
        self.records.update(earlier)
        roles = {r.status: r.version for r in stored if r.version in earlier or r.version == "v0"}
        live = roles.get("live", "v0")
        self.lineup = Lineup(live, roles.get("shadow"), roles.get("predecessor"), anchor="v0")
        role = {self.lineup.live: "live", self.lineup.predecessor: "predecessor"}.get("v0")
        self.records["v0"] = replace(base, status=role or "retired")
        self._dirty.update(self.records)

    async def run(self) -> None:
        """Forever: a cycle every ``cycle_s`` (a failing cycle is logged, the next one runs)."""
        if self.lineup.live != "v0":
            try:
                await asyncio.to_thread(self.install, self.records[self.lineup.live].model_dir)
            except Exception as exc:  # its files are gone: start again from the base model
                log.warning("restored live model %s not installed: %s", self.lineup.live, exc)
                self._set_status(self.lineup.live, "retired")
                self.lineup = Lineup("v0", anchor="v0")
                self._set_status("v0", "live")
        self._flush_records()
        while True:
            await self.clock.sleep(self.cfg.cycle_s)
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing cycle must not end continuous learning
                self.state = f"error: {type(exc).__name__}: {exc}"
                log.warning("continuous learning cycle failed: %s", exc)

    async def cycle(self) -> None:
        """Score, apply the rules, then fine-tune if due."""
        self.cycles += 1
        now = self.clock.now_s()
        since = now - self.cfg.train_window_s
        history = await asyncio.to_thread(self.history_source, since, now)
        if history is None or history.values.shape[0] < 2:
            self.state = "waiting for stored history"
            return
        await self._score_lineup(history)
        self._watch_drift()
        self.lineup, verdict = step(self.lineup, self.board, self.cfg.rules, now)
        if verdict is not None:
            await self._apply(verdict, now)
        await self._maybe_fine_tune(history, now)
        self.board.trim(4 * self.cfg.rules.window)
        self._flush_records()
        self.state = "running"

    # ------------------------------------------------------------------ steps
    async def _score_lineup(self, history: History) -> None:
        lineup = self.lineup
        on_lineup = (lineup.live, lineup.shadow, lineup.predecessor, lineup.anchor)
        for version in dict.fromkeys(on_lineup):
            if version is None:
                continue
            rec = self.records[version]
            since = max(self.scored_until.get(version, -math.inf), rec.trained_until_s + 1e-9)
            origins, errors, misses = await self.jobs.score(rec.model_dir, history, since)
            if len(origins) == 0:
                continue
            self.board.add(version, origins, errors)
            self.scored_until[version] = float(max(origins)) + 1e-9
            if version == lineup.live:
                self.misses.extend(float(m) for m in misses)
            self._update_metrics(version)

    def _watch_drift(self) -> None:
        rules = self.cfg.rules
        self.misses = self.misses[-rules.drift_window :]
        check = drift_check(self.misses, rules)
        if check.drift and not self.drift:
            self.event(
                "model.drift",
                f"{self.lineup.live}: {check.miss_rate:.1%} of the last {check.n} actuals "
                f"outside the 90 % interval (z {check.z:+.1f}): fine-tuning now",
            )
        self.drift = check.drift

    async def _apply(self, verdict: Verdict, now: float) -> None:
        message = f"{verdict.transition} {verdict.version} (vs {verdict.against}): {verdict.reason}"
        if verdict.transition == "reject":
            self._set_status(verdict.version, "rejected")
        else:
            live = self.lineup.live
            await asyncio.to_thread(self.install, self.records[live].model_dir)
            self.misses.clear()
            if verdict.transition == "promote":
                self._set_status(verdict.version, "live")
                self._set_status(verdict.against, "predecessor")
            else:
                self._set_status(verdict.version, "rolled_back")
                self._set_status(verdict.against, "live")
        # a previous predecessor no longer reachable by a rollback is retired
        for version, rec in self.records.items():
            if rec.status == "predecessor" and version != self.lineup.predecessor:
                self._set_status(version, "retired")
        log.warning("continuous learning: %s", message)
        self.event(f"model.{verdict.transition}", message)

    async def _maybe_fine_tune(self, history: History, now: float) -> None:
        if self.lineup.shadow is not None or self.fine_tuning:
            return
        due = now - self.last_finetune_s >= self.cfg.finetune_every_s or self.drift
        if not due or self.jobs.fine_tune_unavailable() is not None:
            return
        if history.values.shape[0] < self.cfg.min_train_rows:
            self.state = f"waiting for {self.cfg.min_train_rows} rows of history to fine-tune"
            return
        parent = self.lineup.live
        version = f"v{self._next}"
        self._next += 1
        out_dir = f"{self.cfg.models_dir.rstrip('/')}/{version}"
        self.fine_tuning = True
        try:
            metrics = await self.jobs.fine_tune(
                self.records[parent].model_dir, history, out_dir, self.cfg.epochs
            )
        finally:
            self.fine_tuning = False
        self.last_finetune_s = now
        self.drift = False
        self.misses.clear()
        self.records[version] = ModelRecord(
            version,
            parent,
            now,
            "shadow",
            history.end_s,
            out_dir,
            {
                "source": "fine-tuned",
                "train_rows": int(history.values.shape[0]),
                "val_mae_norm_h1": _first(metrics.get("val_mae_norm")),
                "val_persistence_mae_norm_h1": _first(metrics.get("val_persistence_mae_norm")),
            },
        )
        self._dirty.add(version)
        self.lineup = offer(self.lineup, version)
        self.event("model.shadow", f"{version} fine-tuned from {parent}: on trial")

    # ------------------------------------------------------------------ records
    def _set_status(self, version: str, status: str) -> None:
        rec = self.records[version]
        if rec.status != status:
            self.records[version] = replace(rec, status=status)
            self._dirty.add(version)

    def _update_metrics(self, version: str) -> None:
        rec = self.records[version]
        live = self.lineup.live
        metrics = dict(rec.metrics)
        metrics["scored_origins"] = self.board.count(version)
        metrics["rolling_mae"] = _round(self.board.compare(version, version, 10**9).mae_a)
        if version != live:
            cmp = self.board.compare(live, version, self.cfg.rules.window)
            metrics["vs_live_origins"] = cmp.n_origins
            metrics["vs_live_mae"] = _round(cmp.mae_a)
            metrics["vs_live_gain"] = _round(cmp.gain)
        self.records[version] = replace(rec, metrics=metrics)
        self._dirty.add(version)

    def _flush_records(self) -> None:
        if self.model_log is None:
            self._dirty.clear()
            return
        now = self.clock.now_s()
        for version in sorted(self._dirty):
            try:
                self.model_log.write_model(self.records[version], now)
            except Exception as exc:  # the database is down: retry at the next cycle
                log.warning("model history not stored (retrying next cycle): %s", exc)
                return
            self._dirty.discard(version)


def _first(values: object) -> float | None:
    if isinstance(values, Sequence) and values and isinstance(values[0], int | float):
        return float(values[0])
    return None


def _round(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


def _number(version: str) -> int:
    try:
        return int(version.removeprefix("v"))
    except ValueError:
        return 0
