"""The live state, mirrored into another process (``wattwheel serve``'s API process).

:class:`MirroredLiveState` is a :class:`LiveState` that also queues every write it takes (the
method name and its arguments) in a :class:`StateMirror`. Whoever drains the mirror replays the
writes, in order, on a plain :class:`LiveState` elsewhere (:func:`apply_write`), which then holds
the same snapshots, rings, latency window, counters and mode, and publishes the same messages to
its own SSE subscribers.

The writer never waits for the reader: a write is queued under a short lock and the mirror is
bounded. A reader that falls behind (or is gone) costs the writer nothing; when the queue
overflows its writes are dropped and the next reader starts from a full :meth:`LiveState.dump`
(``resync``). Queuing a write and taking a dump hold the same lock, so a dump never misses a
write nor sees one twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from wattwheel.runtime.state import (
    DecisionRecord,
    DomainSnapshot,
    EventRecord,
    LiveState,
    Mode,
    RackSnapshot,
)

#: The LiveState writes a mirror carries (and a replica accepts).
WRITES: frozenset[str] = frozenset(
    {
        "update_domains",
        "update_racks",
        "record_decisions",
        "record_event",
        "record_tick",
        "count_telemetry",
        "count_tick_failure",
        "count_error",
        "set_degraded",
        "set_mode",
    }
)

#: A queued message: ("write", (name, args)), ("dump", state dump) or any other kind the
#: sender and receiver agree on (replies, extras), which a resync never drops.
Message = tuple[str, Any]


class StateMirror:
    """A bounded FIFO of messages for one reader at a time (see the module docstring).

    Args:
        max_items: writes kept while the reader is behind; past it they are dropped and the
            reader gets a full dump next.
    """

    def __init__(self, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self.lock = threading.Condition(threading.RLock())
        self._items: deque[Message] = deque()
        self._writes = 0
        self._resync = False
        self.active = False
        #: Times the queue overflowed and the reader was resynchronised.
        self.overflows = 0

    def start(self) -> None:
        """A new reader: it starts from a full dump; nothing older is sent."""
        with self.lock:
            self._items.clear()
            self._writes = 0
            self._resync = True
            self.active = True
            self.lock.notify_all()

    def stop(self) -> None:
        """No reader: writes are not queued."""
        with self.lock:
            self.active = False
            self._items.clear()
            self._writes = 0
            self.lock.notify_all()

    def write(self, name: str, args: tuple[Any, ...]) -> None:
        """Queue one LiveState write (call with :attr:`lock` held, see MirroredLiveState)."""
        if not self.active:
            return
        if self._writes >= self.max_items:
            self._items = deque(m for m in self._items if m[0] != "write")
            self._writes = 0
            self._resync = True
            self.overflows += 1
        self._items.append(("write", (name, args)))
        self._writes += 1
        self.lock.notify_all()

    def put(self, kind: str, payload: Any) -> None:
        """Queue a message that is not a state write (never dropped while a reader is on)."""
        with self.lock:
            if self.active:
                self._items.append((kind, payload))
                self.lock.notify_all()

    def take(self, state: LiveState, timeout_s: float, linger_s: float = 0.0) -> list[Message]:
        """What to send next, oldest first, waiting up to ``timeout_s`` for something, then
        ``linger_s`` more for what follows it: a resync starts with ``("dump", state.dump())``
        taken under the lock."""
        with self.lock:
            if not self._items and not self._resync:
                self.lock.wait(timeout_s)
            woken = bool(self._items) and not self._resync
        if woken and linger_s > 0:
            # One batch per tick: the rest of the tick's writes join the first one, instead
            # of the reader taking the interpreter lock at each write while the tick runs.
            time.sleep(linger_s)
        with self.lock:
            out: list[Message] = []
            if self._resync and self.active:
                kept = [m for m in self._items if m[0] != "write"]
                out.append(("dump", state.dump()))
                out.extend(kept)
                self._resync = False
            else:
                out.extend(self._items)
            self._items.clear()
            self._writes = 0
            return out


class MirroredLiveState(LiveState):
    """A :class:`LiveState` whose writes are also queued in ``mirror``."""

    def __init__(self, domain_ids: Sequence[str], mirror: StateMirror, **kwargs: Any) -> None:
        super().__init__(domain_ids, **kwargs)
        self.mirror = mirror

    def update_domains(self, snapshots: Iterable[DomainSnapshot]) -> None:
        snaps = list(snapshots)
        with self.mirror.lock:
            super().update_domains(snaps)
            self.mirror.write("update_domains", (snaps,))

    def update_racks(self, racks: Iterable[RackSnapshot]) -> None:
        rows = list(racks)
        with self.mirror.lock:
            super().update_racks(rows)
            self.mirror.write("update_racks", (rows,))

    def record_decisions(self, records: Iterable[DecisionRecord]) -> None:
        rows = list(records)
        with self.mirror.lock:
            super().record_decisions(rows)
            self.mirror.write("record_decisions", (rows,))

    def record_event(self, event: EventRecord) -> None:
        with self.mirror.lock:
            super().record_event(event)
            self.mirror.write("record_event", (event,))

    def record_tick(self, latency_s: float) -> None:
        with self.mirror.lock:
            super().record_tick(latency_s)
            self.mirror.write("record_tick", (latency_s,))

    def count_telemetry(self, n_samples: int) -> None:
        with self.mirror.lock:
            super().count_telemetry(n_samples)
            self.mirror.write("count_telemetry", (n_samples,))

    def count_tick_failure(self) -> None:
        with self.mirror.lock:
            super().count_tick_failure()
            self.mirror.write("count_tick_failure", ())

    def count_error(self, kind: str, n: int = 1) -> None:
        with self.mirror.lock:
            super().count_error(kind, n)
            self.mirror.write("count_error", (kind, n))

    def set_degraded(self, key: str, problem: str | None) -> None:
        with self.mirror.lock:
            super().set_degraded(key, problem)
            self.mirror.write("set_degraded", (key, problem))

    def set_mode(self, mode: Mode) -> None:
        with self.mirror.lock:
            super().set_mode(mode)
            self.mirror.write("set_mode", (mode,))


def apply_write(state: LiveState, name: str, args: Sequence[Any]) -> None:
    """Replay one mirrored write on a replica (only the names in :data:`WRITES`)."""
    if name not in WRITES:
        raise ValueError(f"not a LiveState write: {name!r}")
    getattr(state, name)(*args)


def apply_messages(state: LiveState, messages: Iterable[Message]) -> list[Message]:
    """Replay the writes and dumps among ``messages``; return the others, in order."""
    rest: list[Message] = []
    for kind, payload in messages:
        if kind == "write":
            apply_write(state, *payload)
        elif kind == "dump":
            state.load(payload)
        else:
            rest.append((kind, payload))
    return rest


__all__ = [
    "WRITES",
    "Message",
    "MirroredLiveState",
    "StateMirror",
    "apply_messages",
    "apply_write",
]
