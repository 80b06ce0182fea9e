"""Telemetry batches kept on disk while the database is down, so they survive a restart.

One JSON line per batch, appended and fsync'ed before the write is acknowledged. Replay reads
the lines in order; what could not be written is rewritten atomically (temp file + rename). A
crash in the middle of a replay can write a batch twice (at-least-once), never lose one. A line
cut short by a crash during an append was never acknowledged: it is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from wattwheel.domain.telemetry import PowerSample

log = logging.getLogger(__name__)

SPILL_NAME = "telemetry-spill.jsonl"


def encode_batch(samples: Sequence[PowerSample]) -> str:
    """One line: a JSON list of ``[timestamp_s, source, rack_id, server_id, kind, power_w]``."""
    rows = [[s.timestamp_s, s.source, s.rack_id, s.server_id, s.kind, s.power_w] for s in samples]
    return json.dumps(rows, separators=(",", ":")) + "\n"


def decode_batch(line: str) -> list[PowerSample]:
    """Inverse of :func:`encode_batch`; ValueError on a corrupt line."""
    try:
        rows = json.loads(line)
        return [
            PowerSample(src, rack, srv, float(ts), float(p), kind)
            for ts, src, rack, srv, kind, p in rows
        ]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"corrupt spill line {line[:80]!r}: {exc}") from exc


class SpillFile:
    """An append-only file of telemetry batches under ``directory``, bounded in bytes."""

    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / SPILL_NAME
        self.max_bytes = max_bytes
        self.items = sum(len(b) for _, b in self._read())

    def _read(self) -> list[tuple[str, list[PowerSample]]]:
        """Valid ``(line, batch)`` pairs in file order; corrupt lines are logged and skipped."""
        if not self.path.exists():
            return []
        out = []
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append((line if line.endswith("\n") else line + "\n", decode_batch(line)))
                except ValueError as exc:
                    log.warning("%s line %d skipped (never acknowledged): %s", self.path, n, exc)
        return out

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def append(self, samples: Sequence[PowerSample]) -> bool:
        """Durably append a batch; False (nothing written) if it would exceed ``max_bytes``."""
        line = encode_batch(samples)
        if self.size_bytes + len(line.encode()) > self.max_bytes:
            return False
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.items += len(samples)
        return True

    def batches(self) -> list[list[PowerSample]]:
        """Every spilled batch, oldest first."""
        return [b for _, b in self._read()]

    def keep_last(self, n_batches: int) -> None:
        """Drop all but the last ``n_batches`` (the ones not yet written), atomically."""
        rows = self._read()
        remaining = rows[len(rows) - n_batches :] if n_batches else []
        if not remaining:
            self.path.unlink(missing_ok=True)
            self.items = 0
            return
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(line for line, _ in remaining)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self.items = sum(len(b) for _, b in remaining)
