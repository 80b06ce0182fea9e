"""Writes kept on disk while the database is down, so an acknowledged write survives a crash.

The spill is a journal: one JSON line per write (a telemetry batch, a forecast, a batch of
decision rows, an event), appended and fsync'ed before the write is acknowledged. Replay streams
the lines in order from a committed offset, merging consecutive small telemetry (or decision)
batches into one database write of up to 10,000 items; after each write the offset is saved
(temp file + fsync + rename), so a crash in the middle of a replay repeats at most that one
write (at-least-once) and never loses one. When everything is replayed both files go.
A line cut short by a crash during an append was never acknowledged: it is logged and skipped.

Line format (version 1): ``{"t": TABLE, "rows": ...}`` where TABLE is one of ``telemetry``,
``forecasts``, ``decisions``, ``events``; a bare JSON list (the format before version 1) is a
telemetry batch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

log = logging.getLogger(__name__)

SPILL_NAME = "spill.jsonl"
OFFSET_NAME = "spill.offset"
LOCK_NAME = "spill.lock"
#: The file of the first version (telemetry only), still replayed if found.
LEGACY_NAME = "telemetry-spill.jsonl"


class SpillInUse(WattwheelError):
    """Another live process holds this spill directory (two writers would corrupt it)."""


@dataclass(frozen=True)
class Entry:
    """One journalled write: the :class:`~wattwheel.adapters.store.base.Store` method to call,
    its argument and how many items (rows) it holds."""

    method: str
    payload: Any
    n_items: int


# ---------------------------------------------------------------------------- encoding


def _sample_row(s: PowerSample) -> list[Any]:
    return [s.timestamp_s, s.source, s.rack_id, s.server_id, s.kind, s.power_w]


def encode_batch(samples: Sequence[PowerSample]) -> str:
    """A telemetry batch as one journal line."""
    return _line("telemetry", [_sample_row(s) for s in samples])


def encode_entry(entry: Entry) -> str:
    """One journal line (with its newline) for any write."""
    p = entry.payload
    if entry.method == "write_telemetry":
        return encode_batch(p)
    if entry.method == "write_decisions":
        return _line("decisions", [asdict(r) for r in p])
    if entry.method == "write_event":
        return _line("events", asdict(p))
    if entry.method == "write_forecast":
        fc: Forecast = p
        body = {
            "issued_at_s": fc.issued_at_s,
            "series_ids": list(fc.series_ids),
            "horizons_s": list(fc.horizons_s),
            "quantiles": list(fc.quantiles),
            "values": np.asarray(fc.values).tolist(),
            "point": np.asarray(fc.point).tolist(),
        }
        return _line("forecasts", body)
    raise ValueError(f"cannot spill {entry.method!r}")


def _line(table: str, rows: Any) -> str:
    # NaN (a decision's soc_target, say) round-trips: only this module reads the file.
    return json.dumps({"t": table, "rows": rows}, separators=(",", ":"), default=str) + "\n"


def decode_line(line: str) -> Entry:
    """Inverse of :func:`encode_entry`; ValueError on a corrupt line."""
    try:
        body = json.loads(line)
        if isinstance(body, list):  # the telemetry-only format
            body = {"t": "telemetry", "rows": body}
        table, rows = body["t"], body["rows"]
        if table == "telemetry":
            samples = [
                PowerSample(src, rack, srv, float(ts), float(p), kind)
                for ts, src, rack, srv, kind, p in rows
            ]
            return Entry("write_telemetry", samples, len(samples))
        if table == "decisions":
            records = [DecisionRecord(**r) for r in rows]
            return Entry("write_decisions", records, len(records))
        if table == "events":
            return Entry("write_event", EventRecord(**rows), 1)
        if table == "forecasts":
            fc = Forecast(
                float(rows["issued_at_s"]),
                tuple(rows["series_ids"]),
                tuple(float(h) for h in rows["horizons_s"]),
                tuple(float(q) for q in rows["quantiles"]),
                np.asarray(rows["values"], dtype=float),
                np.asarray(rows["point"], dtype=float),
            )
            return Entry("write_forecast", fc, len(fc.series_ids) * len(fc.horizons_s))
        raise ValueError(f"unknown table {table!r}")
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"corrupt spill line {line[:80]!r}: {exc}") from exc


def decode_batch(line: str) -> list[PowerSample]:
    """A telemetry line's samples; ValueError on a corrupt or non-telemetry line."""
    entry = decode_line(line)
    if entry.method != "write_telemetry":
        raise ValueError(f"not a telemetry line: {entry.method}")
    return list(entry.payload)


# ---------------------------------------------------------------------------- the journal


class SpillFile:
    """An append-only journal under ``directory``, bounded in bytes (``max_bytes``).

    ``items`` and ``pending_bytes`` count what is not replayed yet. One process at a time: an
    exclusive lock on ``spill.lock`` (released by the kernel when the process dies, even by
    ``kill -9``) makes a second one raise :class:`SpillInUse`. Not thread-safe: the
    :class:`~wattwheel.adapters.store.buffer.BufferedStore` holds its lock around every call.
    """

    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(directory / LOCK_NAME)
        self.directory = directory
        self.path = directory / SPILL_NAME
        self._offset_path = directory / OFFSET_NAME
        self.max_bytes = max_bytes
        self._adopt_legacy(directory / LEGACY_NAME)
        self._end_torn_line()
        self.offset = self._load_offset()
        self.items = sum(e.n_items for _, e in self._entries())

    def _adopt_legacy(self, legacy: Path) -> None:
        """Append a first-version telemetry spill to the journal (once), then remove it."""
        if not legacy.exists():
            return
        with legacy.open("rb") as src, self.path.open("ab") as dst:
            data = src.read()
            dst.write(data if data.endswith(b"\n") or not data else data + b"\n")
            dst.flush()
            os.fsync(dst.fileno())
        legacy.unlink()
        _fsync_dir(self.directory)

    def _load_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0
        return min(max(offset, 0), self.size_bytes)

    def _save_offset(self, offset: int) -> None:
        tmp = self._offset_path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as f:
            f.write(str(offset))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._offset_path)
        self.offset = offset

    def _entries(self) -> Iterator[tuple[int, Entry]]:
        """``(end_offset, entry)`` of each valid line after the replay offset, in file order;
        corrupt lines are logged and skipped."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            pos = self.offset
            for raw in f:
                pos += len(raw)
                if not raw.strip():
                    continue
                try:
                    entry = decode_line(raw.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    log.warning(
                        "%s: line at byte %d skipped (never acknowledged): %s",
                        self.path,
                        pos - len(raw),
                        exc,
                    )
                    continue
                yield pos, entry

    @property
    def size_bytes(self) -> int:
        """The journal file's size (replayed lines included until it is removed)."""
        return self.path.stat().st_size if self.path.exists() else 0

    @property
    def pending_bytes(self) -> int:
        """Bytes not replayed yet."""
        return max(self.size_bytes - self.offset, 0)

    def append_entry(self, entry: Entry) -> bool:
        """Durably append a write (fsync'ed before returning True); False, with nothing
        written, if the journal would exceed ``max_bytes``."""
        line = encode_entry(entry).encode("utf-8")
        if self.size_bytes + len(line) > self.max_bytes:
            return False
        new_file = not self.path.exists()
        with self.path.open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if new_file:
            _fsync_dir(self.directory)  # the file's name must survive a crash too
        self.items += entry.n_items
        return True

    def append(self, samples: Sequence[PowerSample]) -> bool:
        """Durably append a telemetry batch (see :meth:`append_entry`)."""
        return self.append_entry(Entry("write_telemetry", list(samples), len(samples)))

    def _end_torn_line(self) -> None:
        """A crash during an append can leave a line without its newline: end it, so the next
        append starts a line of its own (the torn line is then skipped as corrupt)."""
        if not self.size_bytes:
            return
        with self.path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def replay(self, write: Any, max_group_items: int = 10_000) -> None:
        """Call ``write(entry)`` for the pending entries, oldest first, and save the offset after
        each call; an exception from ``write`` stops the replay (that call's entries stay
        pending). Consecutive telemetry batches (or decision batches) are merged into one write
        of at most ``max_group_items`` items: one transaction and one offset save for many
        small ingester batches, so a crash during a replay repeats at most that one write."""
        group: list[Entry] = []
        group_end = self.offset

        def commit() -> None:
            merged = _merge(group)
            write(merged)
            self.items -= merged.n_items
            self._save_offset(group_end)
            group.clear()

        for end, entry in self._entries():
            if group and not _mergeable(group, entry, max_group_items):
                commit()
            group.append(entry)
            group_end = end
        if group:
            commit()
        self._clear()

    def _clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self._offset_path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self.offset = 0
        self.items = 0

    # ---- telemetry-only helpers (kept for callers of the first version) ----

    def batches(self) -> list[list[PowerSample]]:
        """Every pending telemetry batch, oldest first."""
        return [list(e.payload) for _, e in self._entries() if e.method == "write_telemetry"]

    def close(self) -> None:
        """Release the directory (the journal stays for the next start)."""
        self._lock_file.close()


def _lock(path: Path) -> Any:
    f = path.open("a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SpillInUse(
            f"spill directory {path.parent} is in use by another process: give each "
            "controller instance its own (wattwheel serve --spill-dir)"
        ) from None
    return f


_MERGEABLE = ("write_telemetry", "write_decisions")


def _mergeable(group: list[Entry], entry: Entry, max_items: int) -> bool:
    return (
        entry.method == group[0].method
        and entry.method in _MERGEABLE
        and sum(e.n_items for e in group) + entry.n_items <= max_items
    )


def _merge(group: list[Entry]) -> Entry:
    if len(group) == 1:
        return group[0]
    rows = [row for e in group for row in e.payload]
    return Entry(group[0].method, rows, len(rows))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
