"""Watch the device map ``serve`` was wired from. When the emulator (or whoever writes the map)
restarts, its devices come back on new ports and the map changes: ``serve`` still talks to the
old addresses, so it must say it is degraded instead of looking ``normal``.

The watcher polls the file (its size and modification time, then its JSON when those moved,
compared with the map serve was wired from) and calls ``on_change(problem)`` when the answer
changes: a message when the map is missing or differs from the wiring, None when it matches
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DeviceMapWatch:
    """``path``: the device map file; ``wired``: the map serve was wired from (default: the
    file as it is now); ``period_s``: how often to look."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[str | None], None],
        wired: Mapping[str, Any] | None = None,
        period_s: float = 1.0,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.period_s = period_s
        self._wired = dict(wired) if wired is not None else json.loads(path.read_text())
        self._seen: tuple[int, int] | None = None  # the first look compares the map
        self._problem: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self) -> str | None:
        """What is wrong with the wiring now (None: the map is the one serve was wired from)."""
        stat = self._stat()
        if stat is None:
            return f"device map {self.path} is gone (emulator stopped?): devices may not answer"
        if stat == self._seen and self._problem is None:
            return None  # untouched since the last look
        self._seen = stat
        try:
            same = json.loads(self.path.read_text()) == self._wired
        except (OSError, ValueError):
            return f"device map {self.path} cannot be read as JSON"
        if same:
            return None
        return (
            f"device map {self.path} changed since serve started (emulator restarted, new "
            "ports?): serve still talks to the old addresses; restart serve to re-wire"
        )

    def report(self, problem: str | None) -> None:
        """Pass a new answer of :meth:`check` on (nothing when it did not change)."""
        if problem == self._problem:
            return
        self._problem = problem
        if problem is None:
            log.info("device map %s matches the wiring again", self.path)
        else:
            log.warning("%s", problem)
        self.on_change(problem)

    async def run(self) -> None:
        """Look every ``period_s`` (the file is read off the event loop; ``on_change`` runs on
        it)."""
        while True:
            await asyncio.sleep(self.period_s)
            self.report(await asyncio.to_thread(self.check))
