"""The site's shared reserve as ONE machine (DESIGN §2, §8). Pure: time is passed in.

One genset / rotary UPS serves every power domain. Domains *request* it (with an assigned
power); the machine runs while any domain requests it, and at least ``min_on_s`` after each
start. States:

- ``OFF``: stopped and cold. A start takes ``start_delay_s`` before it delivers.
- ``WARM``: pre-warmed (a plan expects it may be needed). Physically: engine block and oil held
  at temperature, or a rotary set spun up unloaded; a start from WARM delivers after
  ``warm_start_delay_s`` (shorter), and every warm second costs (metered as
  ``reserve_warm_seconds``: idle fuel, heater power). Pre-warming is *not* a start.
- ``STARTING``: started, delivering nothing until ``ready_at_s``.
- ``ON``: delivering to the domains that request it, shared within ``capacity_kw``.

The machine is metered once: ``starts`` (every OFF/WARM -> STARTING), ``running_s``
(STARTING or ON) and ``warm_s``. Per-domain figures are *shares* of those: a start is shared by
the domains whose request started it, a running (warm) second by the domains requesting
(pre-warming) it then, or else by those that started it. The shares add up to the machine's
figures; they never count one start once per domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

RESERVE_OFF, RESERVE_STARTING, RESERVE_ON, RESERVE_WARM = 0, 1, 2, 3
_EPS_S = 1e-9


def is_running(mode: IntArray) -> BoolArray:
    """Started (STARTING or ON): the states that count as running and hold a minimum on-time."""
    running: BoolArray = (mode == RESERVE_STARTING) | (mode == RESERVE_ON)
    return running


@dataclass(frozen=True)
class ReserveView:
    """What a domain's controller sees of the machine (arrays (D,), the machine's state for all)."""

    mode: IntArray
    ready_in_s: FloatArray
    min_on_left_s: FloatArray


@dataclass
class ReserveMachine:
    """The shared reserve's state machine and its meter.

    ``command`` / ``command_all`` change requests at ``now_s``; ``advance`` moves the clock on
    (STARTING becomes ON at ``ready_at_s``) and meters the time in between.
    """

    n_domains: int
    capacity_kw: float
    start_delay_s: float
    min_on_s: float
    warm_start_delay_s: float | None = None
    mode: int = RESERVE_OFF
    ready_at_s: float = 0.0
    started_at_s: float = 0.0
    #: Meter of the machine (the site figures).
    starts: int = 0
    running_s: float = 0.0
    warm_s: float = 0.0
    #: Per-domain shares of the machine's starts, running and warm seconds.
    domain_starts: FloatArray = field(init=False)
    domain_running_s: FloatArray = field(init=False)
    domain_warm_s: FloatArray = field(init=False)
    requested: BoolArray = field(init=False)
    assigned_kw: FloatArray = field(init=False)
    warm_wanted: BoolArray = field(init=False)
    _owners: FloatArray = field(init=False)
    _clock_s: float | None = None

    def __post_init__(self) -> None:
        d = self.n_domains
        self.domain_starts = np.zeros(d)
        self.domain_running_s = np.zeros(d)
        self.domain_warm_s = np.zeros(d)
        self._owners = np.full(d, 1.0 / d) if d else np.zeros(0)
        self.requested = np.zeros(d, dtype=bool)
        self.assigned_kw = np.zeros(d)
        self.warm_wanted = np.zeros(d, dtype=bool)

    # ---- commands ----
    def command(
        self, now_s: float, domain: int, on: bool, power_kw: float, warm: bool = False
    ) -> None:
        """One domain's request (the live path: one command per domain)."""
        on_all = self.requested.copy()
        kw_all = self.assigned_kw.copy()
        warm_all = self.warm_wanted.copy()
        on_all[domain], kw_all[domain], warm_all[domain] = on, power_kw if on else 0.0, warm
        self.command_all(now_s, on_all, kw_all, warm_all)

    def command_all(
        self,
        now_s: float,
        on: BoolArray,
        power_kw: FloatArray,
        warm: BoolArray | None = None,
    ) -> bool:
        """Every domain's request at once; returns True if this started the machine."""
        self.advance(now_s)
        self.requested = np.asarray(on, dtype=bool).copy()
        self.assigned_kw = np.where(on, np.maximum(power_kw, 0.0), 0.0)
        self.warm_wanted = (
            np.zeros(self.n_domains, dtype=bool) if warm is None else np.asarray(warm, dtype=bool)
        )
        return self._transition(now_s)

    def _transition(self, now_s: float) -> bool:
        wanted, warm = bool(self.requested.any()), bool(self.warm_wanted.any())
        if wanted and self.mode in (RESERVE_OFF, RESERVE_WARM):
            delay = self.start_delay_s
            if self.mode == RESERVE_WARM and self.warm_start_delay_s is not None:
                delay = min(self.warm_start_delay_s, self.start_delay_s)
            self.mode = RESERVE_STARTING if delay > 0 else RESERVE_ON
            self.ready_at_s, self.started_at_s = now_s + delay, now_s
            self.starts += 1
            self._owners = _shares(self.requested, self._owners)
            self.domain_starts += self._owners
            return True
        running = self.mode in (RESERVE_STARTING, RESERVE_ON)
        if (
            not wanted and running and now_s - self.started_at_s >= self.min_on_s - _EPS_S
        ) or not running:
            self.mode = RESERVE_WARM if warm else RESERVE_OFF
        return False

    # ---- time ----
    def advance(self, now_s: float) -> None:
        """Move to ``now_s``: meter the time since the last call, start delivering if ready."""
        last = now_s if self._clock_s is None else self._clock_s
        dt = max(now_s - last, 0.0)
        self._clock_s = max(now_s, last)
        if self.mode in (RESERVE_STARTING, RESERVE_ON):
            self.running_s += dt
            self.domain_running_s += _shares(self.requested, self._owners) * dt
        elif self.mode == RESERVE_WARM:
            self.warm_s += dt
            self.domain_warm_s += _shares(self.warm_wanted, self._owners) * dt
        if self.mode == RESERVE_STARTING and self.ready_at_s <= now_s + _EPS_S:
            self.mode = RESERVE_ON

    def on_fraction(self, now_s: float, dt_s: float) -> float:
        """Share of [now_s, now_s + dt_s) during which the machine delivers."""
        if self.mode == RESERVE_ON:
            return 1.0
        if self.mode != RESERVE_STARTING or dt_s <= 0:
            return 0.0
        return float(np.clip((now_s + dt_s - self.ready_at_s) / dt_s, 0.0, 1.0))

    # ---- delivery ----
    def delivery_kw(self, need_kw: FloatArray) -> FloatArray:
        """Power per domain once delivering: what was assigned, no more than needed, within
        the shared capacity (scaled down in proportion if over-assigned)."""
        if self.mode not in (RESERVE_STARTING, RESERVE_ON) or self.capacity_kw <= 0:
            return np.zeros(self.n_domains)
        kw = np.where(self.requested, np.clip(self.assigned_kw, 0.0, np.maximum(need_kw, 0.0)), 0.0)
        total = float(kw.sum())
        if total > self.capacity_kw:
            kw = kw * (self.capacity_kw / total)
        out: FloatArray = kw
        return out

    def view(self, now_s: float) -> ReserveView:
        """The machine's state as every domain sees it at ``now_s``."""
        d = self.n_domains
        ready = self.ready_at_s - now_s if self.mode == RESERVE_STARTING else 0.0
        running = self.mode in (RESERVE_STARTING, RESERVE_ON)
        left = self.min_on_s - (now_s - self.started_at_s) if running else 0.0
        return ReserveView(
            np.full(d, self.mode, dtype=np.int64),
            np.full(d, max(ready, 0.0)),
            np.full(d, max(left, 0.0)),
        )


def _shares(who: BoolArray, otherwise: FloatArray) -> FloatArray:
    """Equal shares among ``who``; ``otherwise`` when nobody."""
    n = int(who.sum())
    if n == 0:
        return otherwise.copy()
    out: FloatArray = who.astype(float) / n
    return out
