"""Reserve capacity budgets for shard processes: the site coordinator's rule, the shards'
summaries it works from, and the fallback a shard uses when the coordinator is silent.

With one process per shard (``serve --only-shard``) each shard plans and commands the shared
reserve for its own domains. Left alone, every shard would plan with the reserve's whole
capacity ``C`` and together they could over-plan it. The site coordinator (one elected role
among the shard processes) hands each shard a **budget**: the reserve capacity (kW) that
shard's planner and fast loop may use. The rule (:func:`compute_budgets`):

1. a shard with no live summary (its process is down, or it has not published yet) is held
   at its **static share** ``C · rated_s / Σ rated`` (rated: the sum of the shard's primary
   feeds, its share of the site's rated load), so a shard that runs on its fallback (below)
   is never counted twice;
2. the rest is given **critical load first**: each live shard's critical load over its feeds
   (``critical_over_kw``: what no cap may touch and only the reserve can carry), in
   proportion when they ask for more than there is;
3. what is left, **in proportion to each shard's forecast excess**: the peak over the blocks
   the reserve may start in of the shard's summed excess over primary (the weight by which
   :mod:`wattwheel.control.decomposed`'s repair shares out the capacity its shards left), by
   static share when no shard expects an excess.

The budgets always sum to ``C`` (to within rounding) and none is negative.

**Fallback** (:func:`effective_budget`): a shard that has seen no new budget version for
``ttl_s`` seconds (on its own monotonic clock: no clock is compared across hosts), or is not
named in the coordinator's budgets, uses its static share, never the whole reserve. The static
shares sum to ``C`` too. What is not covered: while the coordinator's budgets are fresh for
some shards and others are already on their static share (a shard cut off from etcd while the
coordinator still sees its summary), the sum can exceed ``C`` for up to ``ttl_s``; the
reserve machine then shares its capacity among the domains that call on it (it is commanded
per domain). Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
#: Version of the JSON layout of summaries and grants.
FORMAT = 1


# ---------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class ShardSummary:
    """What a shard publishes each plan period (kW; per-block tuples start at ``issued_at_s``).

    Attributes:
        shard: the shard's name.
        rated_kw: the sum of its domains' primary feeds.
        critical_over_kw: measured critical load over the feeds, summed over its domains.
        excess_kw: per block, the summed forecast excess over primary (median forecast; the
            measured demand as one block when there is no forecast).
        headroom_kw: per block, the summed room under primary.
        reserve_need_kw: the peak of ``excess_kw`` over the blocks the reserve may start in.
        block_s: a block's length (s).
        issued_at_s: epoch seconds of the forecast (or measurement) it was built from.
    """

    shard: str
    rated_kw: float
    critical_over_kw: float
    excess_kw: tuple[float, ...]
    headroom_kw: tuple[float, ...]
    reserve_need_kw: float
    block_s: float
    issued_at_s: float

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **_rounded(self.__dict__)}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> ShardSummary:
        """Parse a published summary; ValueError when it is not one."""
        raw = _object(text)
        try:
            summary = ShardSummary(
                shard=str(raw["shard"]),
                rated_kw=_num(raw["rated_kw"]),
                critical_over_kw=_num(raw["critical_over_kw"]),
                excess_kw=tuple(_num(v) for v in raw["excess_kw"]),
                headroom_kw=tuple(_num(v) for v in raw["headroom_kw"]),
                reserve_need_kw=_num(raw["reserve_need_kw"]),
                block_s=_num(raw["block_s"]),
                issued_at_s=_num(raw["issued_at_s"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a shard summary: {exc!r}") from None
        if min(summary.rated_kw, summary.critical_over_kw, summary.reserve_need_kw) < 0:
            raise ValueError("a shard summary with a negative power")
        return summary


def summarize(
    shard: str,
    primary_kw: FloatArray,
    demand_kw: FloatArray,
    critical_kw: FloatArray,
    reserve_blocks: int,
    block_s: float,
    issued_at_s: float,
) -> ShardSummary:
    """A shard's summary from its domains' demand ``(D, K)`` (kW, per block) and measured
    critical load ``(D,)``; ``reserve_blocks``: how many leading blocks the reserve may start in
    (the forecast horizon), at least one."""
    demand = np.asarray(demand_kw, dtype=np.float64)
    if demand.ndim == 1:
        demand = demand[:, None]
    prim = np.asarray(primary_kw, dtype=np.float64)
    excess = np.maximum(demand - prim[:, None], 0.0).sum(axis=0)
    headroom = np.maximum(prim[:, None] - demand, 0.0).sum(axis=0)
    blocks = max(min(reserve_blocks, excess.shape[0]), 1)
    crit = np.maximum(np.asarray(critical_kw, dtype=np.float64) - prim, 0.0)
    return ShardSummary(
        shard=shard,
        rated_kw=float(prim.sum()),
        critical_over_kw=float(np.nansum(crit)),
        excess_kw=tuple(float(v) for v in excess),
        headroom_kw=tuple(float(v) for v in headroom),
        reserve_need_kw=float(excess[:blocks].max(initial=0.0)),
        block_s=float(block_s),
        issued_at_s=float(issued_at_s),
    )


# ---------------------------------------------------------------------------- budgets
def static_shares_kw(capacity_kw: float, rated_kw: Mapping[str, float]) -> dict[str, float]:
    """Each shard's static share of the reserve: ``C · rated_s / Σ rated`` (equal shares when
    nothing is rated). Sums to ``C``."""
    names = sorted(rated_kw)
    if not names:
        return {}
    weights = np.array([max(float(rated_kw[n]), 0.0) for n in names])
    if weights.sum() <= 0:
        weights = np.ones(len(names))
    shares = max(capacity_kw, 0.0) * weights / weights.sum()
    return {n: float(s) for n, s in zip(names, shares, strict=True)}


Basis = Literal["summary", "static"]


@dataclass(frozen=True)
class Budgets:
    """The coordinator's split: kW per shard, and whether a shard's budget came from its
    summary or is its static share held for it (no live summary)."""

    budgets_kw: dict[str, float]
    basis: dict[str, Basis]


def compute_budgets(
    capacity_kw: float,
    static_kw: Mapping[str, float],
    summaries: Mapping[str, ShardSummary],
) -> Budgets:
    """Split the reserve among the shards of ``static_kw`` (see the module docstring). Summaries
    of shards not in ``static_kw`` are ignored."""
    cap = max(float(capacity_kw), 0.0)
    names = sorted(static_kw)
    live = [n for n in names if n in summaries]
    held = {n: max(float(static_kw[n]), 0.0) for n in names if n not in summaries}
    room = max(cap - sum(held.values()), 0.0)
    out: dict[str, float] = dict(held)
    basis: dict[str, Basis] = dict.fromkeys(held, "static")
    if live:
        must = np.array([summaries[n].critical_over_kw for n in live])
        alloc = _share(must, room)
        rest = max(room - float(alloc.sum()), 0.0)
        weight = np.array([summaries[n].reserve_need_kw for n in live])
        if weight.sum() <= 0:
            weight = np.array([max(float(static_kw[n]), 0.0) for n in live])
        if weight.sum() <= 0:
            weight = np.ones(len(live))
        alloc = alloc + rest * weight / weight.sum()
        for n, kw in zip(live, alloc, strict=True):
            out[n] = float(kw)
            basis[n] = "summary"
    return Budgets({n: out[n] for n in names}, {n: basis[n] for n in names})


def _share(want: FloatArray, room: float) -> FloatArray:
    want = np.maximum(np.nan_to_num(want), 0.0)
    total = float(want.sum())
    if total <= room or total <= 0:
        return want
    scaled: FloatArray = want * (room / total)
    return scaled


@dataclass(frozen=True)
class BudgetGrant:
    """What the coordinator publishes: its budgets with a version (``token``: the coordinator
    role's fencing token, ``seq``: its count of grants under that token) and its issue time."""

    token: int
    seq: int
    coordinator: str
    issued_at_s: float
    capacity_kw: float
    budgets_kw: dict[str, float]
    basis: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return f"{self.token}.{self.seq}"

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **_rounded(self.__dict__)}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> BudgetGrant:
        """Parse a published grant; ValueError when it is not one."""
        raw = _object(text)
        try:
            grant = BudgetGrant(
                token=int(raw["token"]),
                seq=int(raw["seq"]),
                coordinator=str(raw["coordinator"]),
                issued_at_s=_num(raw["issued_at_s"]),
                capacity_kw=_num(raw["capacity_kw"]),
                budgets_kw={str(k): _num(v) for k, v in dict(raw["budgets_kw"]).items()},
                basis={str(k): str(v) for k, v in dict(raw.get("basis", {})).items()},
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a budget grant: {exc!r}") from None
        if any(v < 0 for v in grant.budgets_kw.values()) or grant.capacity_kw < 0:
            raise ValueError("a budget grant with a negative power")
        return grant


# ---------------------------------------------------------------------------- shard side
@dataclass(frozen=True)
class BudgetSeen:
    """The newest grant a shard has read and when (its monotonic clock) it first saw it."""

    grant: BudgetGrant | None = None
    revision: int = 0
    seen_s: float = -math.inf


def observe(seen: BudgetSeen, grant: BudgetGrant | None, revision: int, now_s: float) -> BudgetSeen:
    """A read of the published grant (None: none published, or unreadable). A new revision
    restarts the staleness clock; the same one, or none, leaves the last grant as it was."""
    if grant is None or revision == seen.revision:
        return seen
    return BudgetSeen(grant, revision, now_s)


@dataclass(frozen=True)
class EffectiveBudget:
    """The reserve capacity a shard plans and commands with now, and why."""

    budget_kw: float
    source: Literal["coordinator", "fallback"]
    reason: str
    version: str | None
    coordinator: str | None
    age_s: float | None


def effective_budget(
    seen: BudgetSeen,
    shard: str,
    static_kw: float,
    capacity_kw: float,
    ttl_s: float,
    now_s: float,
) -> EffectiveBudget:
    """The coordinator's budget for ``shard`` while a new version came within ``ttl_s``,
    else the static share (never more than ``capacity_kw``)."""
    static = min(max(static_kw, 0.0), max(capacity_kw, 0.0))
    grant = seen.grant
    if grant is None:
        return EffectiveBudget(
            static, "fallback", "no budget from a coordinator yet", None, None, None
        )
    age = now_s - seen.seen_s
    if age > ttl_s:
        why = f"coordinator {grant.coordinator} silent for {age:.1f} s (> {ttl_s:g} s)"
        return EffectiveBudget(static, "fallback", why, grant.version, grant.coordinator, age)
    if shard not in grant.budgets_kw:
        why = f"shard {shard} not in coordinator {grant.coordinator}'s budgets"
        return EffectiveBudget(static, "fallback", why, grant.version, grant.coordinator, age)
    kw = min(max(grant.budgets_kw[shard], 0.0), max(capacity_kw, 0.0))
    why = f"budget {grant.version} from coordinator {grant.coordinator}"
    return EffectiveBudget(kw, "coordinator", why, grant.version, grant.coordinator, age)


# ---------------------------------------------------------------------------- helpers
def _rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    def r(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 3)
        if isinstance(v, tuple | list):
            return [r(x) for x in v]
        if isinstance(v, dict):
            return {k: r(x) for k, x in v.items()}
        return v

    return {k: r(v) for k, v in values.items()}


def _object(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"expected a JSON object of format {FORMAT}")
    return raw


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise TypeError(f"expected a finite number, got {value!r}")
    return out
