"""Per-domain demand history rebuilt from the stored telemetry (what continuous learning
fine-tunes and scores on).

Each grid step's demand of a rack is the mean of each of its sources' readings in that step:
the rack or PDU total when there is one, else the sum over its servers (or outlets). A domain's
demand is the sum of its racks; a step where one of its racks has no reading is NaN (a gap the
forecaster handles), never a lower demand.

On a SQL store the averaging per step runs in the database (one GROUP BY over the time index);
any other store is read through :meth:`Store.telemetry` (bounded by ``limit``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Engine

from wattwheel.forecast.base import History

#: (step index, rack id, server id or "", kind, mean power W)
Bucket = tuple[int, str, str, str, float]


def demand_history(
    store: object,
    rack_domain: Mapping[str, str],
    domain_ids: tuple[str, ...],
    step_s: float,
    since_s: float,
    until_s: float,
    limit: int = 5_000_000,
) -> History | None:
    """Demand (W) per domain on the ``step_s`` grid for steps in [since_s, until_s), or None
    when the store holds no reading of these racks there."""
    engine = _engine(store)
    if engine is not None:
        buckets = _sql_buckets(engine, step_s, since_s, until_s)
    else:
        buckets = _python_buckets(store, step_s, since_s, until_s, limit)
    return assemble(buckets, rack_domain, domain_ids, step_s)


class StoredDemand:
    """:func:`demand_history` read incrementally: each call queries only the steps after the
    last complete one it has (the newest step is re-read: readings may still arrive in it), and
    keeps ``max_rows`` steps. The learner calls it every cycle over a 14-day window: the
    database then aggregates one cycle's telemetry, not 14 days of it."""

    def __init__(
        self,
        store: object,
        rack_domain: Mapping[str, str],
        domain_ids: tuple[str, ...],
        step_s: float,
        max_rows: int = 20_000,
    ) -> None:
        self.store = store
        self.rack_domain = dict(rack_domain)
        self.domain_ids = domain_ids
        self.step_s = step_s
        self.max_rows = max_rows
        self._rows: dict[int, np.ndarray] = {}
        self._read_until_s = -math.inf

    def __call__(self, since_s: float, until_s: float) -> History | None:
        first_s = max(since_s, self._read_until_s)
        newest = max(self._rows) if self._rows else None
        if newest is not None:
            first_s = min(first_s, newest * self.step_s)  # the newest step again
        fresh = demand_history(
            self.store, self.rack_domain, self.domain_ids, self.step_s, first_s, until_s
        )
        if fresh is not None:
            for t, row in zip(fresh.timestamps_s, fresh.values, strict=True):
                self._rows[round(t / self.step_s)] = row
        self._read_until_s = max(self._read_until_s, until_s)
        for b in sorted(self._rows)[: -self.max_rows]:
            del self._rows[b]
        lo, hi = math.floor(since_s / self.step_s), math.floor(until_s / self.step_s)
        steps = [b for b in self._rows if lo <= b <= hi]
        if len(steps) < 2:
            return None
        first, last = min(steps), max(steps)
        values = np.full((last - first + 1, len(self.domain_ids)), np.nan)
        for b in steps:
            values[b - first] = self._rows[b]
        timestamps = np.arange(first, last + 1, dtype=np.float64) * self.step_s
        return History(timestamps, self.domain_ids, values)


def assemble(
    buckets: Iterable[Bucket],
    rack_domain: Mapping[str, str],
    domain_ids: tuple[str, ...],
    step_s: float,
) -> History | None:
    """Domain demand from per-step source means (see the module docstring)."""
    totals: dict[tuple[int, str], float] = {}
    parts: dict[tuple[int, str], float] = defaultdict(float)
    steps: set[int] = set()
    for b, rack, _server, kind, power_w in buckets:
        if rack not in rack_domain or not math.isfinite(power_w):
            continue
        steps.add(b)
        if kind in ("rack", "pdu"):
            totals[(b, rack)] = max(totals.get((b, rack), 0.0), power_w)
        else:
            parts[(b, rack)] += power_w
    if not steps:
        return None
    first, last = min(steps), max(steps)
    n = last - first + 1
    col = {d: i for i, d in enumerate(domain_ids)}
    racks_of: dict[str, list[str]] = defaultdict(list)
    for rack, dom in rack_domain.items():
        racks_of[dom].append(rack)
    values = np.full((n, len(domain_ids)), np.nan)
    for b in range(first, last + 1):
        for dom, racks in racks_of.items():
            if dom not in col:
                continue
            total = 0.0
            for rack in racks:
                v = totals.get((b, rack), parts.get((b, rack)))
                if v is None:
                    total = math.nan
                    break
                total += v
            values[b - first, col[dom]] = total
    timestamps = (np.arange(first, last + 1, dtype=np.float64)) * step_s
    if n == 1:
        return None
    return History(timestamps, domain_ids, values)


def _engine(store: object) -> Engine | None:
    engine = getattr(store, "engine", None)
    if isinstance(engine, Engine):
        return engine
    inner = getattr(store, "inner", None)
    return _engine(inner) if inner is not None else None


def _sql_buckets(engine: Engine, step_s: float, since_s: float, until_s: float) -> list[Bucket]:
    step_expr = (
        "FLOOR(timestamp_s / :step)"
        if engine.dialect.name == "postgresql"
        else "CAST(timestamp_s / :step AS INTEGER)"
    )
    sql = text(
        f"SELECT {step_expr} AS b, rack_id, COALESCE(server_id, '') AS sid, kind, "
        "AVG(power_w) AS p FROM telemetry WHERE timestamp_s >= :since AND timestamp_s < :until "
        "GROUP BY b, rack_id, sid, kind"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"step": step_s, "since": since_s, "until": until_s}).all()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]


def _python_buckets(
    store: object, step_s: float, since_s: float, until_s: float, limit: int
) -> list[Bucket]:
    read = getattr(store, "telemetry", None)
    if read is None:
        return []
    sums: dict[tuple[int, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for _id, s in read(since_s=since_s, limit=limit):
        if s.timestamp_s >= until_s:
            continue
        acc = sums[(math.floor(s.timestamp_s / step_s), s.rack_id, s.server_id or "", s.kind)]
        acc[0] += s.power_w
        acc[1] += 1
    return [(b, r, sid, k, acc[0] / acc[1]) for (b, r, sid, k), acc in sums.items()]
