"""Continuous learning rules: when a fine-tuned shadow model replaces the live one, when a
promoted model is rolled back, and when the calibration scores say the data drifted.

Models are compared on the *same* rolling backtest: each is scored at the same forecast origins
(the error of its point forecast at the first horizon, mean over series, in the series' units),
and only origins after a model's training data count for it (out of sample). A
:class:`Scoreboard` keeps those errors per model version; the rules read it:

- **promotion**: the shadow's MAE on the last ``window`` origins both were scored on is at least
  ``margin`` (relative) below the live model's, over at least ``min_origins`` of them;
- **rollback**: after a promotion, the promoted model's MAE on the origins since its promotion is
  ``rollback_margin`` above its predecessor's (still scored beside it), or above the shipped
  model's (the *anchor*, always scored), over at least ``min_origins`` of them;
- **drift**: the share of recent actuals outside the live model's calibrated 90 % interval is
  further from 10 % than ``z`` binomial standard deviations (the calibration no longer holds:
  fine-tune early).

:class:`Lineup` and :func:`step` hold and advance which version is live, which is the shadow and
which is the predecessor a rollback returns to. Pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from wattwheel.forecast.backtest import BacktestRun

Transition = Literal["promote", "rollback", "reject"]


@dataclass(frozen=True)
class LearningRules:
    """Thresholds of the promotion, rollback and drift rules.

    Attributes:
        margin: relative MAE gain a shadow needs over the live model (0.02 = 2 % lower).
        min_origins: common scored origins needed before any verdict.
        window: most recent common origins compared (older ones age out).
        rollback_margin: relative MAE loss of a promoted model vs its predecessor that rolls it
            back.
        max_shadow_origins: a shadow not promoted after this many scored origins is rejected
            (a fine-tune that did not help is dropped, and the next one starts from live).
        drift_nominal: nominal miss rate of the monitored interval (0.1 for a 90 % interval).
        drift_window: recent interval checks the drift test reads.
        drift_z: standard deviations of the binomial miss count that flag drift.
    """

    margin: float = 0.02
    min_origins: int = 288
    window: int = 2016
    rollback_margin: float = 0.02
    max_shadow_origins: int = 2016
    drift_nominal: float = 0.1
    drift_window: int = 288
    drift_z: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1 or not 0 <= self.rollback_margin < 1:
            raise ValueError("margin and rollback_margin must be in [0, 1)")
        if self.min_origins < 1 or self.window < self.min_origins:
            raise ValueError("min_origins must be >= 1 and window >= min_origins")
        if self.max_shadow_origins < self.min_origins:
            raise ValueError("max_shadow_origins must be >= min_origins")
        if not 0 < self.drift_nominal < 1 or self.drift_window < 1 or self.drift_z <= 0:
            raise ValueError("drift_nominal in (0, 1), drift_window >= 1, drift_z > 0")


@dataclass(frozen=True)
class Comparison:
    """Two models' MAE on the same origins.

    Attributes:
        n_origins: common origins compared.
        mae_a, mae_b: mean error of each over those origins (NaN if none).
    """

    n_origins: int
    mae_a: float
    mae_b: float

    @property
    def gain(self) -> float:
        """Relative MAE reduction of b vs a (0.05: b is 5 % lower); NaN without origins."""
        if self.n_origins == 0 or not self.mae_a > 0:
            return math.nan
        return 1.0 - self.mae_b / self.mae_a


@dataclass
class Scoreboard:
    """Errors per model version and forecast origin (epoch s -> error, series units)."""

    errors: dict[str, dict[float, float]] = field(default_factory=dict)

    def add(self, version: str, origins_s: Iterable[float], errors: Iterable[float]) -> None:
        """Record errors (NaN ones are skipped: a missing actual scores no model)."""
        book = self.errors.setdefault(version, {})
        for o, e in zip(origins_s, errors, strict=True):
            if math.isfinite(e):
                book[float(o)] = float(e)

    def count(self, version: str, since_s: float = -math.inf) -> int:
        return sum(1 for o in self.errors.get(version, {}) if o >= since_s)

    def last_origin_s(self, version: str) -> float:
        book = self.errors.get(version)
        return max(book) if book else -math.inf

    def compare(self, a: str, b: str, window: int, since_s: float = -math.inf) -> Comparison:
        """MAE of ``a`` and ``b`` over their last ``window`` common origins at or after
        ``since_s``."""
        ea, eb = self.errors.get(a, {}), self.errors.get(b, {})
        common = sorted(o for o in ea.keys() & eb.keys() if o >= since_s)[-window:]
        if not common:
            return Comparison(0, math.nan, math.nan)
        return Comparison(
            len(common),
            float(np.mean([ea[o] for o in common])),
            float(np.mean([eb[o] for o in common])),
        )

    def mae(self, version: str, since_s: float, until_s: float) -> float:
        """Mean error of a version over origins in [since_s, until_s) (NaN if none)."""
        vals = [e for o, e in self.errors.get(version, {}).items() if since_s <= o < until_s]
        return float(np.mean(vals)) if vals else math.nan

    def forget(self, version: str) -> None:
        self.errors.pop(version, None)

    def trim(self, keep: int) -> None:
        """Keep the newest ``keep`` origins of each version (bounded memory)."""
        for version, book in self.errors.items():
            if len(book) > keep:
                newest = sorted(book)[-keep:]
                self.errors[version] = {o: book[o] for o in newest}


@dataclass(frozen=True)
class Lineup:
    """Which model version serves forecasts, which is on trial, and which a rollback restores.

    Attributes:
        live: the version the controller uses.
        shadow: a fine-tuned candidate scored beside it (None: none on trial).
        predecessor: the version live replaced at its promotion (None: no rollback possible).
        promoted_at_s: when ``live`` was promoted (origins from then on judge a rollback).
        anchor: the shipped model, always scored: a live model worse than it since its
            promotion is rolled back to it (so the site never ends worse than where it started).
    """

    live: str
    shadow: str | None = None
    predecessor: str | None = None
    promoted_at_s: float = -math.inf
    anchor: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What :func:`step` did and why (for the model history and the event log)."""

    transition: Transition
    version: str
    against: str
    comparison: Comparison
    reason: str


def step(
    lineup: Lineup, board: Scoreboard, rules: LearningRules, now_s: float
) -> tuple[Lineup, Verdict | None]:
    """Apply the rollback rule, then the promotion rule; at most one transition per call."""
    if lineup.predecessor is not None:
        cmp = board.compare(
            lineup.predecessor, lineup.live, rules.window, since_s=lineup.promoted_at_s
        )
        if cmp.n_origins >= rules.min_origins and -cmp.gain > rules.rollback_margin:
            verdict = Verdict(
                "rollback",
                lineup.live,
                lineup.predecessor,
                cmp,
                f"MAE {cmp.mae_b:.4g} vs predecessor {cmp.mae_a:.4g} on {cmp.n_origins} origins "
                f"since promotion ({-cmp.gain:+.1%} > {rules.rollback_margin:.1%})",
            )
            return Lineup(lineup.predecessor, lineup.shadow, anchor=lineup.anchor), verdict
    anchor = lineup.anchor
    if anchor is not None and lineup.live != anchor:
        cmp = board.compare(anchor, lineup.live, rules.window, since_s=lineup.promoted_at_s)
        if cmp.n_origins >= rules.min_origins and -cmp.gain > rules.rollback_margin:
            verdict = Verdict(
                "rollback",
                lineup.live,
                anchor,
                cmp,
                f"MAE {cmp.mae_b:.4g} vs the shipped model's {cmp.mae_a:.4g} on {cmp.n_origins} "
                f"origins since promotion ({-cmp.gain:+.1%} > {rules.rollback_margin:.1%})",
            )
            return Lineup(anchor, lineup.shadow, None, now_s, anchor), verdict
    if lineup.shadow is None:
        return lineup, None
    cmp = board.compare(lineup.live, lineup.shadow, rules.window)
    if cmp.n_origins >= rules.min_origins and cmp.gain >= rules.margin:
        verdict = Verdict(
            "promote",
            lineup.shadow,
            lineup.live,
            cmp,
            f"MAE {cmp.mae_b:.4g} vs live {cmp.mae_a:.4g} on {cmp.n_origins} origins "
            f"({cmp.gain:.1%} >= {rules.margin:.1%})",
        )
        return Lineup(lineup.shadow, None, lineup.live, now_s, lineup.anchor), verdict
    if board.count(lineup.shadow) >= rules.max_shadow_origins:
        verdict = Verdict(
            "reject",
            lineup.shadow,
            lineup.live,
            cmp,
            f"not better by {rules.margin:.1%} after {cmp.n_origins} origins (gain {cmp.gain:.1%})",
        )
        return replace(lineup, shadow=None), verdict
    return lineup, None


def offer(lineup: Lineup, version: str) -> Lineup:
    """Put a new candidate on trial (replaces a shadow still on trial)."""
    return replace(lineup, shadow=version)


def first_horizon_errors(run: BacktestRun) -> tuple[np.ndarray, np.ndarray]:
    """(abs error of the point forecast at the first horizon, mean over series; interval miss
    share at the first horizon) per origin of a backtest run, NaN where no actual."""
    actual = run.actual[:, :, 0]
    err = np.abs(actual - run.point[:, :, 0])
    qs = np.asarray(run.quantiles)
    lo = run.values[:, :, 0, int(np.argmin(np.abs(qs - 0.05)))]
    hi = run.values[:, :, 0, int(np.argmin(np.abs(qs - 0.95)))]
    ok = np.isfinite(actual)
    miss = np.where(ok, ((actual < lo) | (actual > hi)).astype(np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        return _nanmean_rows(err), _nanmean_rows(miss)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a)
    total = np.where(ok, a, 0.0).sum(axis=1)
    n = ok.sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


@dataclass(frozen=True)
class DriftCheck:
    """The drift test on the live model's interval misses.

    Attributes:
        drift: the miss rate is off nominal by more than ``z`` standard deviations.
        miss_rate: share of recent actuals outside the interval.
        n: checks read.
        z: the statistic, (misses - n p) / sqrt(n p (1 - p)).
    """

    drift: bool
    miss_rate: float
    n: int
    z: float


def drift_check(misses: Sequence[float], rules: LearningRules) -> DriftCheck:
    """Binomial test of the recent miss shares (each in [0, 1]; NaN skipped) against
    ``rules.drift_nominal``; no verdict (drift False) until ``drift_window`` checks."""
    recent = [m for m in misses if math.isfinite(m)][-rules.drift_window :]
    n = len(recent)
    if n == 0:
        return DriftCheck(False, math.nan, 0, 0.0)
    p = rules.drift_nominal
    rate = float(np.mean(recent))
    z = (rate - p) * math.sqrt(n) / math.sqrt(p * (1 - p))
    return DriftCheck(n >= rules.drift_window and abs(z) > rules.drift_z, rate, n, z)


@dataclass(frozen=True)
class ModelRecord:
    """One model version in the history (what the store and the API show).

    Attributes:
        version: a unique name (``v0`` the shipped model, then ``v1``...).
        parent: the version it was fine-tuned from (None for the shipped one).
        created_at_s: when it was made (epoch s).
        status: ``live``, ``shadow``, ``predecessor``, ``retired``, ``rejected`` or
            ``rolled_back``.
        trained_until_s: last timestamp of its training data (it is scored only after it).
        model_dir: where its files are.
        metrics: rolling-backtest MAE and the like, plain data.
    """

    version: str
    parent: str | None
    created_at_s: float
    status: str
    trained_until_s: float
    model_dir: str
    metrics: Mapping[str, float | int | str | None] = field(default_factory=dict)
