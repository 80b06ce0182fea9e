"""Where an emulated server's power demand comes from (the trace-driven site plugs in here)."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Protocol


class PowerSource(Protocol):
    """The power a server would draw uncapped, in watts, at the moment of the call."""

    def power_w(self, server_id: str) -> float: ...


class StaticPowerSource:
    """Demand per server held in memory and settable from any thread (tests, demos)."""

    def __init__(self, demand_w: Mapping[str, float], default_w: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._demand_w = dict(demand_w)
        self._default_w = default_w

    def set(self, server_id: str, power_w: float) -> None:
        """Set one server's demand (watts)."""
        if not math.isfinite(power_w) or power_w < 0:
            raise ValueError(
                f"demand for {server_id!r} must be a finite number >= 0 W, got {power_w!r}"
            )
        with self._lock:
            self._demand_w[server_id] = power_w

    def power_w(self, server_id: str) -> float:
        with self._lock:
            return self._demand_w.get(server_id, self._default_w)
