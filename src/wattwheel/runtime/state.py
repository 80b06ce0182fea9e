"""The live read model shared by the runtime loop (writer) and the API (reader), and the operator
overrides the API sets and the loop obeys.

No I/O here: the runtime loop calls :meth:`LiveState.update` (and friends) each tick; the API reads
snapshots and subscribes to changes for its SSE stream. Subscribers get an :class:`asyncio.Queue`
bound to their own event loop, so the writer may run in another thread. Every mutation takes a
lock, and readers get immutable snapshots. Power in kW, time in epoch seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from wattwheel.control.base import RESERVE_ON, RESERVE_STARTING, RESERVE_WARM, Decision

#: ``tick-fallback``: the last tick raised; it acted on the reactive safety loop instead.
#: ``degraded``: the controller runs but its wiring is in doubt (see ``LiveState.set_degraded``).
Mode = Literal["normal", "reactive-fallback", "tick-fallback", "maintenance", "degraded"]
MODES: tuple[Mode, ...] = (
    "normal",
    "reactive-fallback",
    "tick-fallback",
    "maintenance",
    "degraded",
)
ReserveMode = Literal["off", "starting", "on", "warm"]

#: Upper bounds (s) of the loop-latency histogram buckets (Prometheus ``le``), +Inf implied.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def reserve_mode_name(code: int) -> ReserveMode:
    """Map ``control.base`` reserve codes (0 off, 1 starting, 2 on, 3 warm) to their names."""
    names: dict[int, ReserveMode] = {
        RESERVE_ON: "on",
        RESERVE_STARTING: "starting",
        RESERVE_WARM: "warm",
    }
    return names.get(code, "off")


@dataclass(frozen=True)
class ForecastBand:
    """Forecast demand for one domain ``horizon_s`` after the snapshot time (kW)."""

    horizon_s: float
    p05_kw: float
    p50_kw: float
    p95_kw: float


@dataclass(frozen=True)
class DomainSnapshot:
    """The latest state of one power domain (kW unless named otherwise).

    ``cap_kw`` is the non-critical load capped this period; ``forecast`` may be empty (no forecast
    or a stale one); ``stale`` is True when the domain's measurement could not be trusted.
    """

    domain_id: str
    timestamp_s: float
    demand_kw: float
    primary_kw: float
    kes_soc: float
    kes_kw: float
    kes_max_discharge_kw: float = 0.0
    soc_target: float = math.nan
    reserve_mode: ReserveMode = "off"
    reserve_kw: float = 0.0
    cap_kw: float = 0.0
    forecast: tuple[ForecastBand, ...] = ()
    stale: bool = False
    #: thermal state of the domain's primary breaker (0 cold, trips at 1).
    breaker_heat: float = 0.0


@dataclass(frozen=True)
class RackSnapshot:
    """One rack: measured power and the cap applied to it (None: uncapped), kW."""

    rack_id: str
    domain_id: str
    power_kw: float
    cap_kw: float | None = None
    timestamp_s: float = 0.0


@dataclass(frozen=True)
class DecisionRecord:
    """One domain's share of a :class:`Decision`: a row of the audit log (kW)."""

    timestamp_s: float
    domain_id: str
    policy: str
    kes_kw: float
    cap_kw: float
    reserve_on: bool
    reserve_kw: float
    shift_out_kw: float
    shift_in_kw: float
    defer_kw: float
    repay_kw: float
    soc_target: float
    reason: str
    mode: Mode = "normal"


@dataclass(frozen=True)
class EventRecord:
    """Something that happened: an override, a fallback, a device fault, a start-up.

    ``kind`` is a dotted name (``override.pin_cap``, ``mode``, ``device.fault``); ``actor`` names
    who did it (an API token's owner, ``"runtime"``).
    """

    timestamp_s: float
    kind: str
    message: str
    domain_id: str | None = None
    actor: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def decision_records(
    decision: Decision,
    domain_ids: Sequence[str],
    now_s: float,
    policy: str,
    mode: Mode = "normal",
) -> list[DecisionRecord]:
    """Split a per-domain :class:`Decision` into one audit row per domain."""
    n = len(domain_ids)
    if len(decision.kes_kw) != n:
        raise ValueError(f"decision has {len(decision.kes_kw)} domains, expected {n}")
    reasons = list(decision.reasons) + [""] * (n - len(decision.reasons))
    return [
        DecisionRecord(
            timestamp_s=now_s,
            domain_id=d,
            policy=policy,
            kes_kw=float(decision.kes_kw[i]),
            cap_kw=float(decision.cap_kw[i]),
            reserve_on=bool(decision.reserve_on[i]),
            reserve_kw=float(decision.reserve_kw[i]),
            shift_out_kw=float(decision.shift_out_kw[i]),
            shift_in_kw=float(decision.shift_in_kw[i]),
            defer_kw=float(decision.defer_kw[i]),
            repay_kw=float(decision.repay_kw[i]),
            soc_target=float(decision.soc_target[i]),
            reason=reasons[i],
            mode=mode,
        )
        for i, d in enumerate(domain_ids)
    ]


@dataclass(frozen=True)
class LatencyStats:
    """Fast-loop tick durations (s): cumulative histogram plus recent percentiles."""

    count: int
    sum_s: float
    bucket_counts: tuple[int, ...]  # cumulative, one per LATENCY_BUCKETS_S bound
    last_s: float
    p50_s: float
    p99_s: float
    max_s: float


class _Latency:
    def __init__(self, window: int) -> None:
        self.recent: deque[float] = deque(maxlen=window)
        self.counts = [0] * len(LATENCY_BUCKETS_S)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.recent.append(seconds)
        self.count += 1
        self.sum_s += seconds
        i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        if i < len(self.counts):
            self.counts[i] += 1

    def after(self, count: int) -> tuple[int, list[float]]:
        """(ticks so far, the durations of those after the first ``count`` still in the
        window)."""
        n_new = min(max(self.count - count, 0), len(self.recent))
        return self.count, list(self.recent)[len(self.recent) - n_new :]

    def stats(self) -> LatencyStats:
        cumulative = tuple(int(c) for c in np.cumsum(self.counts)) if self.counts else ()
        if self.recent:
            arr = np.fromiter(self.recent, dtype=float)
            p50, p99, top = (
                float(np.quantile(arr, 0.5)),
                float(np.quantile(arr, 0.99)),
                float(arr.max()),
            )
        else:
            p50 = p99 = top = math.nan
        last = self.recent[-1] if self.recent else math.nan
        return LatencyStats(self.count, self.sum_s, cumulative, last, p50, p99, top)


class Subscription:
    """One SSE client's queue of ``(kind, payload)`` messages, bounded (oldest dropped)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _put(self, message: tuple[str, dict[str, Any]]) -> None:
        if self.queue.full():  # a slow client loses old messages, never blocks the writer
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)

    def deliver(self, message: tuple[str, dict[str, Any]]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._put(message)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._put, message)


class LiveState:
    """The latest snapshot of the site plus bounded rings of recent decisions and events.

    Args:
        domain_ids: the site's power domains, in ``Decision`` array order.
        history_len: snapshots kept per domain (the dashboard's chart window).
        ring_len: decisions and events kept in memory.
    """

    def __init__(
        self, domain_ids: Sequence[str] = (), history_len: int = 900, ring_len: int = 500
    ) -> None:
        self._lock = threading.Lock()
        self.domain_ids: tuple[str, ...] = tuple(domain_ids)
        self._domains: dict[str, DomainSnapshot] = {}
        self._history: dict[str, deque[DomainSnapshot]] = {}
        self._history_len = history_len
        self._racks: dict[str, RackSnapshot] = {}
        self._decisions: deque[DecisionRecord] = deque(maxlen=ring_len)
        self._events: deque[EventRecord] = deque(maxlen=ring_len)
        self._latency = _Latency(window=1000)
        self._subs: list[Subscription] = []
        self.mode: Mode = "normal"
        self.policy = ""
        self.last_tick_s = math.nan
        self.telemetry_ingested = 0
        self.errors: dict[str, int] = {}
        #: Ticks that raised and fell back to the reactive safety loop.
        self.tick_failures = 0
        self._degraded: dict[str, str] = {}
        #: Who leads which shard, as this instance sees it (set by ``serve``; None: unknown).
        self.leadership: Callable[[], list[dict[str, Any]]] | None = None
        #: per cross-checked source, rack-ticks it disagreed with the feed meter (set by serve).
        self.source_disagreements: Callable[[], Mapping[str, int]] | None = None
        #: The supervised background tasks (restarts, last error; set by the runtime).
        self.tasks: Callable[[], list[dict[str, Any]]] | None = None
        #: Continuous learning's state (live/shadow model, fine-tuning on or off; set by serve).
        self.learning: Callable[[], dict[str, Any]] | None = None
        #: A shard process's reserve budget (coordinator or fallback; set by serve).
        self.reserve_budget: Callable[[], dict[str, Any]] | None = None

    # ---- writer side (the runtime loop) ----

    def update_domains(self, snapshots: Iterable[DomainSnapshot]) -> None:
        """Replace the latest snapshot of each given domain and append it to its history."""
        snaps = list(snapshots)
        with self._lock:
            for s in snaps:
                if s.domain_id not in self.domain_ids:
                    self.domain_ids = (*self.domain_ids, s.domain_id)
                self._domains[s.domain_id] = s
                ring = self._history.setdefault(s.domain_id, deque(maxlen=self._history_len))
                ring.append(s)
                self.last_tick_s = s.timestamp_s
        self._publish("domains", lambda: {"domains": [jsonable(s) for s in snaps]})

    def update_racks(self, racks: Iterable[RackSnapshot]) -> None:
        """Replace the latest reading and cap of each given rack."""
        rows = list(racks)
        with self._lock:
            for r in rows:
                self._racks[r.rack_id] = r
        self._publish("racks", lambda: {"racks": [jsonable(r) for r in rows]})

    def record_decisions(self, records: Iterable[DecisionRecord]) -> None:
        rows = list(records)
        with self._lock:
            self._decisions.extend(rows)
            if rows:
                self.policy = rows[-1].policy
        self._publish("decisions", lambda: {"decisions": [jsonable(r) for r in rows]})

    def record_event(self, event: EventRecord) -> None:
        with self._lock:
            self._events.append(event)
        self._publish("event", lambda: jsonable(event))

    def record_tick(self, latency_s: float) -> None:
        """One fast-loop tick took ``latency_s`` seconds."""
        with self._lock:
            self._latency.observe(latency_s)

    def count_telemetry(self, n_samples: int) -> None:
        with self._lock:
            self.telemetry_ingested += n_samples

    def count_tick_failure(self) -> None:
        with self._lock:
            self.tick_failures += 1

    def count_error(self, kind: str, n: int = 1) -> None:
        """Count a handled fault by kind (``device``, ``store``, ``forecast``, ``input``...)."""
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + n

    def set_degraded(self, key: str, problem: str | None) -> None:
        """Something outside the loop (the device-map watcher, ...) reports a problem with the
        wiring under ``key``, or None when it is over. While any is open the loop's mode is
        ``degraded`` (maintenance excepted)."""
        with self._lock:
            if problem is None:
                self._degraded.pop(key, None)
            else:
                self._degraded[key] = problem

    def degraded(self) -> dict[str, str]:
        with self._lock:
            return dict(self._degraded)

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        with self._lock:
            changed = mode != self.mode
            self.mode = mode
        if changed:
            self._publish("mode", lambda: {"mode": mode})

    # ---- a replica in another process (``runtime/state_mirror.py``) ----

    def dump(self) -> dict[str, Any]:
        """Everything a replica needs to start from: the snapshots, rings, latency window,
        mode and counters (not the subscribers nor the callables)."""
        with self._lock:
            lat = self._latency
            return {
                "domain_ids": self.domain_ids,
                "domains": dict(self._domains),
                "history": {d: list(ring) for d, ring in self._history.items()},
                "racks": dict(self._racks),
                "decisions": list(self._decisions),
                "events": list(self._events),
                "latency": (list(lat.recent), list(lat.counts), lat.count, lat.sum_s),
                "mode": self.mode,
                "policy": self.policy,
                "last_tick_s": self.last_tick_s,
                "telemetry_ingested": self.telemetry_ingested,
                "errors": dict(self.errors),
                "tick_failures": self.tick_failures,
                "degraded": dict(self._degraded),
            }

    def load(self, dump: Mapping[str, Any]) -> None:
        """Become the state :meth:`dump` describes (subscribers are kept; they get a ``mode``
        message when the mode differs)."""
        with self._lock:
            self.domain_ids = tuple(dump["domain_ids"])
            self._domains = dict(dump["domains"])
            self._history = {
                d: deque(rows, maxlen=self._history_len) for d, rows in dump["history"].items()
            }
            self._racks = dict(dump["racks"])
            self._decisions = deque(dump["decisions"], maxlen=self._decisions.maxlen)
            self._events = deque(dump["events"], maxlen=self._events.maxlen)
            recent, counts, count, sum_s = dump["latency"]
            self._latency.recent.clear()
            self._latency.recent.extend(recent)
            self._latency.counts = list(counts)
            self._latency.count, self._latency.sum_s = int(count), float(sum_s)
            changed = dump["mode"] != self.mode
            self.mode = dump["mode"]
            self.policy = dump["policy"]
            self.last_tick_s = dump["last_tick_s"]
            self.telemetry_ingested = dump["telemetry_ingested"]
            self.errors = dict(dump["errors"])
            self.tick_failures = dump["tick_failures"]
            self._degraded = dict(dump["degraded"])
            mode = self.mode
        if changed:
            self._publish("mode", lambda: {"mode": mode})

    # ---- reader side (the API) ----

    def domains(self) -> list[DomainSnapshot]:
        with self._lock:
            return [self._domains[d] for d in self.domain_ids if d in self._domains]

    def domain(self, domain_id: str) -> DomainSnapshot | None:
        with self._lock:
            return self._domains.get(domain_id)

    def history(self, domain_id: str, limit: int | None = None) -> list[DomainSnapshot]:
        with self._lock:
            rows = list(self._history.get(domain_id, ()))
        return rows[-limit:] if limit else rows

    def racks(self, domain_id: str | None = None) -> list[RackSnapshot]:
        with self._lock:
            rows = list(self._racks.values())
        return [r for r in rows if domain_id is None or r.domain_id == domain_id]

    def recent_decisions(self, limit: int = 100) -> list[DecisionRecord]:
        """Newest first."""
        with self._lock:
            return list(self._decisions)[::-1][:limit]

    def recent_events(self, limit: int = 100) -> list[EventRecord]:
        """Newest first."""
        with self._lock:
            return list(self._events)[::-1][:limit]

    def error_counts(self) -> dict[str, int]:
        """A copy of the fault counters by kind (safe while the loop counts)."""
        with self._lock:
            return dict(self.errors)

    def tick_latencies_after(self, count: int) -> tuple[int, list[float]]:
        """(ticks so far, durations in s of the ticks after the first ``count``, as far as the
        recent window reaches): what a benchmark compares between two phases."""
        with self._lock:
            return self._latency.after(count)

    def latency(self) -> LatencyStats:
        with self._lock:
            return self._latency.stats()

    # ---- subscriptions (SSE) ----

    def subscribe(self, maxsize: int = 256) -> Subscription:
        """A queue of ``(kind, payload)`` messages; call from the subscriber's event loop."""
        sub = Subscription(asyncio.get_running_loop(), maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def n_subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def _publish(self, kind: str, payload: Callable[[], dict[str, Any]]) -> None:
        """Send ``(kind, payload())`` to every subscriber; the payload is only built (once) when
        someone listens, so a loop with no SSE client pays nothing."""
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        message = (kind, payload())
        for sub in subs:
            sub.deliver(message)


def jsonable(obj: Any) -> Any:
    """A dataclass (or nested dict/list/tuple of them) as JSON-safe plain values (NaN -> None).

    Walks ``vars()`` rather than ``dataclasses.asdict`` (which deep-copies): the loop publishes
    a thousand rack rows per tick.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "__dataclass_fields__"):
        return {k: jsonable(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------- operator overrides

OverrideKind = Literal["pin_cap", "reserve", "maintenance"]
ReserveAction = Literal["force", "forbid"]
OverrideScope = Literal["rack", "domain", "site"]


@dataclass(frozen=True)
class Override:
    """One operator override, with who set it, when, why and until when.

    Attributes:
        kind: ``pin_cap`` (``target`` = rack or domain id, ``scope`` says which, ``cap_kw``),
            ``reserve`` (``target`` = domain id, ``action`` force/forbid) or ``maintenance``
            (``target`` = ``"site"``).
        expires_s: epoch seconds after which it no longer applies (None: until cleared).
    """

    id: int
    kind: OverrideKind
    target: str
    actor: str
    reason: str
    created_s: float
    expires_s: float | None = None
    scope: OverrideScope = "site"
    cap_kw: float | None = None
    action: ReserveAction | None = None

    def active(self, now_s: float) -> bool:
        return self.expires_s is None or now_s < self.expires_s


class Overrides:
    """The set of operator overrides; one active override per (kind, target), newest wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str, str], Override] = {}
        self._next_id = 1

    def _add(self, **fields: Any) -> Override:
        with self._lock:
            ov = Override(id=self._next_id, **fields)
            self._next_id += 1
            self._by_key[(ov.kind, ov.scope, ov.target)] = ov
        return ov

    @staticmethod
    def _expiry(now_s: float, ttl_s: float | None) -> float | None:
        if ttl_s is not None and not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        return None if ttl_s is None else now_s + ttl_s

    def pin_cap(
        self,
        target: str,
        scope: Literal["rack", "domain"],
        cap_kw: float,
        actor: str,
        reason: str,
        now_s: float,
        ttl_s: float | None = None,
    ) -> Override:
        """Pin the most a rack or a domain may draw at ``cap_kw`` kW (met by capping
        non-critical servers only)."""
        if not (math.isfinite(cap_kw) and cap_kw >= 0):
            raise ValueError(f"cap_kw must be a finite number >= 0, got {cap_kw!r}")
        return self._add(
            kind="pin_cap",
            target=target,
            scope=scope,
            cap_kw=float(cap_kw),
            actor=actor,
            reason=reason,
            created_s=now_s,
            expires_s=self._expiry(now_s, ttl_s),
        )

    def set_reserve(
        self,
        domain_id: str,
        action: ReserveAction,
        actor: str,
        reason: str,
        now_s: float,
        ttl_s: float | None = None,
    ) -> Override:
        """Force the shared reserve on for a domain, or forbid it."""
        if action not in ("force", "forbid"):
            raise ValueError(f"reserve action must be 'force' or 'forbid', got {action!r}")
        return self._add(
            kind="reserve",
            target=domain_id,
            scope="domain",
            action=action,
            actor=actor,
            reason=reason,
            created_s=now_s,
            expires_s=self._expiry(now_s, ttl_s),
        )

    def set_maintenance(
        self, actor: str, reason: str, now_s: float, ttl_s: float | None = None
    ) -> Override:
        """Maintenance mode: the loop keeps safety actions only and holds its settings."""
        return self._add(
            kind="maintenance",
            target="site",
            actor=actor,
            reason=reason,
            created_s=now_s,
            expires_s=self._expiry(now_s, ttl_s),
        )

    def clear(
        self, kind: OverrideKind, target: str, scope: OverrideScope | None = None
    ) -> Override | None:
        """Remove the override of ``kind`` on ``target`` (in ``scope``; any scope if None).

        Returns the removed override, or None if there was none.
        """
        with self._lock:
            for key in list(self._by_key):
                if key[0] == kind and key[2] == target and scope in (None, key[1]):
                    return self._by_key.pop(key)
        return None

    def restore(self, override: Override) -> None:
        """Put back an override recorded earlier (e.g. replayed from the event log at start-up),
        keeping its id, author, reason and expiry."""
        with self._lock:
            self._by_key[(override.kind, override.scope, override.target)] = override
            self._next_id = max(self._next_id, override.id + 1)

    def reset(self, overrides: Iterable[Override]) -> None:
        """Replace every override with ``overrides`` (an API process mirroring the
        controller's set)."""
        rows = list(overrides)
        with self._lock:
            self._by_key = {(o.kind, o.scope, o.target): o for o in rows}
            self._next_id = max([self._next_id, *(o.id + 1 for o in rows)])

    def active(self, now_s: float) -> list[Override]:
        """Overrides in force at ``now_s`` (expired ones are dropped), oldest first."""
        with self._lock:
            for key in [k for k, o in self._by_key.items() if not o.active(now_s)]:
                del self._by_key[key]
            return sorted(self._by_key.values(), key=lambda o: o.id)

    def maintenance(self, now_s: float) -> bool:
        return any(o.kind == "maintenance" for o in self.active(now_s))

    def rack_caps_kw(self, now_s: float) -> dict[str, float]:
        """Pinned rack caps, rack id -> kW."""
        return {
            o.target: float(o.cap_kw or 0.0)
            for o in self.active(now_s)
            if o.kind == "pin_cap" and o.scope == "rack"
        }

    def pinned_cap_kw(self, domain_ids: Sequence[str], now_s: float) -> np.ndarray:
        """Per-domain pinned caps for ``Observation.pinned_cap_kw`` (NaN: none), kW."""
        out = np.full(len(domain_ids), np.nan)
        index = {d: i for i, d in enumerate(domain_ids)}
        for o in self.active(now_s):
            if o.kind == "pin_cap" and o.scope == "domain" and o.target in index:
                out[index[o.target]] = float(o.cap_kw or 0.0)
        return out

    def reserve_override(self, domain_ids: Sequence[str], now_s: float) -> np.ndarray:
        """Per-domain ``Observation.reserve_override``: +1 force, -1 forbid, 0 none."""
        out = np.zeros(len(domain_ids), dtype=np.int64)
        index = {d: i for i, d in enumerate(domain_ids)}
        for o in self.active(now_s):
            if o.kind == "reserve" and o.target in index:
                out[index[o.target]] = 1 if o.action == "force" else -1
        return out
