"""Run metrics (DESIGN §2): stable names that tools read, per domain and per site, and the cost.

``cost_total`` is the weighted sum of the other metrics, weights from the site file's
``[costs]`` table keyed by metric name (a missing weight counts zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Metrics summed over domains for the site figure. The reserve is one machine: a domain's
#: ``reserve_activations``, ``reserve_machine_starts``, ``reserve_seconds`` and
#: ``reserve_warm_seconds`` are its *share* of the machine's starts and running / pre-warmed
#: time (see :mod:`wattwheel.domain.reserve`), so they add up to the machine's figures.
EXTENSIVE = (
    "reserve_energy_kwh",
    "reserve_activations",
    "reserve_machine_starts",
    "reserve_seconds",
    "reserve_warm_seconds",
    "overload_energy_kwh",
    "overload_seconds",
    "breaker_trips",
    "capped_energy_kwh",
    "critical_capped_energy_kwh",
    "shifted_energy_kwh",
    "deferred_energy_kwh",
    "kes_losses_kwh",
    "kes_throughput_kwh",
)
METRIC_NAMES = (
    *EXTENSIVE,
    "kes_equivalent_cycles",
    "peak_grid_kw",
    "max_grid_ramp_kw_per_s",
    "cost_total",
    "steps",
    "wall_seconds",
)


def cost_total(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted sum of metrics; ``cost_total``, ``steps`` and ``wall_seconds`` carry no cost."""
    skip = {"cost_total", "steps", "wall_seconds"}
    return float(sum(w * metrics.get(k, 0.0) for k, w in weights.items() if k not in skip))


@dataclass
class MetricsAccumulator:
    """Accumulates per-domain metrics step by step (arrays of shape (D,))."""

    n_domains: int
    totals: dict[str, FloatArray] = field(default_factory=dict)
    peak_grid_kw: FloatArray = field(init=False)
    max_ramp_kw_per_s: FloatArray = field(init=False)
    site_peak_grid_kw: float = 0.0
    steps: int = 0
    _last_grid_kw: FloatArray | None = None

    def __post_init__(self) -> None:
        self.totals = {k: np.zeros(self.n_domains) for k in EXTENSIVE}
        self.peak_grid_kw = np.zeros(self.n_domains)
        self.max_ramp_kw_per_s = np.zeros(self.n_domains)

    def add(self, name: str, values: FloatArray) -> None:
        self.totals[name] += values

    def observe_grid(self, grid_kw: FloatArray, dt_s: float) -> None:
        self.peak_grid_kw = np.maximum(self.peak_grid_kw, grid_kw)
        self.site_peak_grid_kw = max(self.site_peak_grid_kw, float(grid_kw.sum()))
        if self._last_grid_kw is not None:
            ramp = np.abs(grid_kw - self._last_grid_kw) / dt_s
            self.max_ramp_kw_per_s = np.maximum(self.max_ramp_kw_per_s, ramp)
        self._last_grid_kw = grid_kw.copy()
        self.steps += 1

    def domain_metrics(
        self, capacity_kwh: FloatArray, weights: Mapping[str, float], wall_seconds: float
    ) -> list[dict[str, float]]:
        out = []
        for d in range(self.n_domains):
            m = {k: float(v[d]) for k, v in self.totals.items()}
            cap = float(capacity_kwh[d])
            m["kes_equivalent_cycles"] = m["kes_throughput_kwh"] / (2 * cap) if cap > 0 else 0.0
            m["peak_grid_kw"] = float(self.peak_grid_kw[d])
            m["max_grid_ramp_kw_per_s"] = float(self.max_ramp_kw_per_s[d])
            m["steps"] = float(self.steps)
            m["wall_seconds"] = wall_seconds
            m["cost_total"] = cost_total(m, weights)
            out.append(m)
        return out

    def site_metrics(
        self, capacity_kwh: FloatArray, weights: Mapping[str, float], wall_seconds: float
    ) -> dict[str, float]:
        m = {k: float(v.sum()) for k, v in self.totals.items()}
        cap = float(capacity_kwh.sum())
        m["kes_equivalent_cycles"] = m["kes_throughput_kwh"] / (2 * cap) if cap > 0 else 0.0
        m["peak_grid_kw"] = self.site_peak_grid_kw
        # The ramp limit is per domain (each feed), so the site figure is the worst domain's.
        m["max_grid_ramp_kw_per_s"] = float(self.max_ramp_kw_per_s.max(initial=0.0))
        m["steps"] = float(self.steps)
        m["wall_seconds"] = wall_seconds
        m["cost_total"] = cost_total(m, weights)
        return m
