"""Where ``wattwheel serve``'s two processes run: the CPUs of the control process and of its
API process (``--api-cpus``), so that HTTP work never runs on a core the control loop waits for.

- ``auto`` (the default): with at least two CPUs allowed to ``serve``, the API process (every
  thread of it) runs on the last one and the control process (every thread: the loop, the
  pollers, the store writer, the API feeder) on the others; with one CPU, nothing is pinned.
- a CPU list (``"1"``, ``"2-3"``, ``"1,3"``): the API process on those CPUs, the control
  process on the other allowed ones (at least one must remain).
- ``off``: no pinning (both processes may run on any allowed CPU).

The API process also runs at a lower CPU priority (``--api-nice``, see :mod:`.process`). Both
are deployment choices: a host whose controller shares its cores with other services may prefer
``off`` and its own cgroup/cpuset policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

AUTO, OFF = "auto", "off"


def parse_cpus(spec: str) -> frozenset[int]:
    """``"0,2-3"`` -> {0, 2, 3}; ValueError for anything else (empty, negative, reversed)."""
    cpus: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise ValueError(f"not a CPU list: {spec!r} (e.g. 1 or 2-3 or 1,3)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"not a CPU list: {spec!r} ({part}: reversed range)")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def split_cpus(spec: str, allowed: Iterable[int]) -> tuple[frozenset[int], frozenset[int]] | None:
    """``(control CPUs, API CPUs)`` for ``--api-cpus spec`` on the CPUs ``allowed`` to serve,
    or None when nothing is pinned (``off``, or ``auto`` with fewer than two CPUs).
    ValueError when ``spec`` names a CPU not allowed or leaves none to the control process."""
    free = frozenset(allowed)
    spec = spec.strip().lower()
    if spec == OFF:
        return None
    if spec == AUTO:
        if len(free) < 2:
            return None
        api = frozenset({max(free)})
        return free - api, api
    api = parse_cpus(spec)
    if not api <= free:
        raise ValueError(
            f"--api-cpus {spec}: CPU(s) {sorted(api - free)} not available "
            f"(serve may run on {_show(free)})"
        )
    control = free - api
    if not control:
        raise ValueError(
            f"--api-cpus {spec}: leaves no CPU to the control loop (serve may run on "
            f"{_show(free)}; give the API fewer, or 'off')"
        )
    return control, api


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on (all online CPUs where affinity is not supported)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:  # pragma: no cover - not Linux
        return frozenset(range(os.cpu_count() or 1))
    return frozenset(getter(0))


def pin_process(cpus: Iterable[int]) -> None:
    """Run every thread of this process on ``cpus`` (threads started later inherit it from
    the thread that starts them). Raises OSError where the kernel refuses."""
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:  # pragma: no cover - not Linux
        raise OSError("CPU affinity is not supported on this platform")
    mask = set(cpus)
    setter(0, mask)
    tasks = Path("/proc/self/task")
    if tasks.is_dir():
        for task in tasks.iterdir():
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                setter(int(task.name), mask)


def describe(split: tuple[frozenset[int], frozenset[int]] | None) -> str:
    """One line for serve's start-up banner."""
    if split is None:
        return "not pinned (--api-cpus off, or one CPU)"
    control, api = split
    return f"control loop on CPU {_show(control)}, API process on CPU {_show(api)}"


def _show(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


__all__ = ["AUTO", "OFF", "allowed_cpus", "describe", "parse_cpus", "pin_process", "split_cpus"]
