"""Prometheus metrics, computed from :class:`LiveState` at scrape time.

One collector reads the latest snapshot, so the runtime never talks to prometheus-client and the
numbers on ``/metrics`` are exactly the API's. Each app gets its own registry (several apps may
live in one process, e.g. in tests). Names are stable: Grafana and alert rules use them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wattwheel.runtime.state import (
    LATENCY_BUCKETS_S,
    MODES,
    DomainSnapshot,
    LiveState,
    Overrides,
)

RESERVE_STATE_CODE = {"off": 0, "starting": 1, "on": 2, "warm": 3}

#: name -> help; tests check every one is exported.
METRIC_HELP: dict[str, str] = {
    "wattwheel_demand_kw": "Measured IT demand per power domain (kW).",
    "wattwheel_capacity_kw": "Primary (feed/breaker) capacity per power domain (kW).",
    "wattwheel_forecast_kw": "Forecast demand per domain, horizon and quantile (kW).",
    "wattwheel_kes_soc": "Flywheel bank usable state of charge per domain (0..1).",
    "wattwheel_kes_soc_target": "State of charge the planner wants per domain (0..1).",
    "wattwheel_kes_power_kw": "Flywheel setpoint per domain (kW, >0 discharge, <0 charge).",
    "wattwheel_kes_available_kw": "Flywheel discharge power available per domain (kW).",
    "wattwheel_reserve_state": "Reserve (one machine): 0 off, 1 starting, 2 on, 3 warm.",
    "wattwheel_reserve_kw": "Reserve power assigned per domain (kW).",
    "wattwheel_cap_kw": "Non-critical load capped per domain (kW).",
    "wattwheel_rack_power_kw": "Measured power per rack (kW).",
    "wattwheel_rack_cap_kw": "Power cap applied per rack (kW; absent when uncapped).",
    "wattwheel_domain_stale": "1 when a domain's measurement is stale.",
    "wattwheel_breaker_heat": "Thermal state of a domain's primary breaker (0 cold, trips at 1).",
    "wattwheel_leader": "1 when this instance leads the role (shard or coordinator), else 0.",
    "wattwheel_leader_command_left_seconds": "How long this instance's lease still lets it "
    "command the role (s; absent when it does not lead).",
    "wattwheel_leader_resignations": "Times this instance resigned a role because its command "
    "writes to the role's devices kept failing (leadership follows the ability to command).",
    "wattwheel_reserve_budget_kw": "Reserve capacity a shard process may plan and command (kW): "
    "its budget from the site coordinator, or its static share on fallback (absent elsewhere).",
    "wattwheel_reserve_budget_fallback": "1 while a shard process runs on its static reserve "
    "share (no fresh budget from the site coordinator), else 0 (absent elsewhere).",
    "wattwheel_source_disagreements": "Rack-ticks a cross-checked telemetry source disagreed "
    "with the feed meter, per source.",
    "wattwheel_mode": "Controller mode (1 for the current one).",
    "wattwheel_overrides_active": "Operator overrides in force.",
    "wattwheel_last_tick_timestamp_seconds": "Epoch seconds of the last control tick.",
    "wattwheel_loop_latency_seconds": "Fast-loop tick duration (s).",
    "wattwheel_telemetry_ingested": "Telemetry samples accepted.",
    "wattwheel_errors": "Handled faults by kind (device, store, input, forecast...).",
    "wattwheel_tick_failures": "Ticks that raised and acted on the reactive safety loop.",
    "wattwheel_task_restarts": "Restarts of a supervised background task after it crashed.",
    "wattwheel_store_pending_items": "Writes buffered while the database is unavailable.",
    "wattwheel_store_dropped": "Writes refused because the store buffer was full.",
    "wattwheel_store_healthy": "1 when the last database write succeeded, 0 while buffering.",
    "wattwheel_store_spill_bytes": "Bytes in the store's spill journal not yet replayed.",
    "wattwheel_store_spill_max_bytes": "Bound of the spill journal (bytes; 0 without a spill).",
}


class StateCollector(Collector):
    """Exports a :class:`LiveState` (and overrides and store health) as Prometheus metrics."""

    def __init__(
        self,
        state: LiveState,
        overrides: Overrides,
        store_health: Callable[[], Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.overrides = overrides
        self.store_health = store_health
        self.clock = clock

    def _gauge(self, name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, METRIC_HELP[name], labels=labels)

    def collect(self) -> Iterator[Metric]:
        yield from self._domain_metrics()
        yield from self._rack_metrics()
        yield from self._loop_metrics()
        yield from self._store_metrics()
        yield from self._leader_metrics()
        yield from self._telemetry_trust_metrics()
        yield from self._budget_metrics()

    def _domain_metrics(self) -> Iterator[Metric]:
        per_domain: dict[str, Callable[[DomainSnapshot], float]] = {
            "wattwheel_demand_kw": lambda s: s.demand_kw,
            "wattwheel_capacity_kw": lambda s: s.primary_kw,
            "wattwheel_kes_soc": lambda s: s.kes_soc,
            "wattwheel_kes_soc_target": lambda s: s.soc_target,
            "wattwheel_kes_power_kw": lambda s: s.kes_kw,
            "wattwheel_kes_available_kw": lambda s: s.kes_max_discharge_kw,
            "wattwheel_reserve_state": lambda s: RESERVE_STATE_CODE[s.reserve_mode],
            "wattwheel_reserve_kw": lambda s: s.reserve_kw,
            "wattwheel_cap_kw": lambda s: s.cap_kw,
            "wattwheel_domain_stale": lambda s: float(s.stale),
            "wattwheel_breaker_heat": lambda s: s.breaker_heat,
        }
        snaps = self.state.domains()
        for name, get in per_domain.items():
            g = self._gauge(name, ["domain"])
            for s in snaps:
                value = float(get(s))
                if math.isfinite(value):
                    g.add_metric([s.domain_id], value)
            yield g
        fc = self._gauge("wattwheel_forecast_kw", ["domain", "horizon_s", "quantile"])
        for s in snaps:
            for band in s.forecast:
                h = f"{band.horizon_s:g}"
                for q, v in (("0.05", band.p05_kw), ("0.5", band.p50_kw), ("0.95", band.p95_kw)):
                    if math.isfinite(v):
                        fc.add_metric([s.domain_id, h, q], v)
        yield fc

    def _rack_metrics(self) -> Iterator[Metric]:
        power = self._gauge("wattwheel_rack_power_kw", ["domain", "rack"])
        cap = self._gauge("wattwheel_rack_cap_kw", ["domain", "rack"])
        for r in self.state.racks():
            if math.isfinite(r.power_kw):
                power.add_metric([r.domain_id, r.rack_id], r.power_kw)
            if r.cap_kw is not None and math.isfinite(r.cap_kw):
                cap.add_metric([r.domain_id, r.rack_id], r.cap_kw)
        yield power
        yield cap

    def _loop_metrics(self) -> Iterator[Metric]:
        mode = self._gauge("wattwheel_mode", ["mode"])
        for m in MODES:
            mode.add_metric([m], 1.0 if self.state.mode == m else 0.0)
        yield mode
        active = self._gauge("wattwheel_overrides_active")
        active.add_metric([], float(len(self.overrides.active(self.clock()))))
        yield active
        last = self._gauge("wattwheel_last_tick_timestamp_seconds")
        if math.isfinite(self.state.last_tick_s):
            last.add_metric([], self.state.last_tick_s)
        yield last
        lat = self.state.latency()
        buckets = [
            (f"{b:g}", float(c)) for b, c in zip(LATENCY_BUCKETS_S, lat.bucket_counts, strict=True)
        ]
        buckets.append(("+Inf", float(lat.count)))
        yield HistogramMetricFamily(
            "wattwheel_loop_latency_seconds",
            METRIC_HELP["wattwheel_loop_latency_seconds"],
            buckets=buckets,
            sum_value=lat.sum_s,
        )
        yield CounterMetricFamily(
            "wattwheel_telemetry_ingested",
            METRIC_HELP["wattwheel_telemetry_ingested"],
            value=float(self.state.telemetry_ingested),
        )
        errors = CounterMetricFamily(
            "wattwheel_errors", METRIC_HELP["wattwheel_errors"], labels=["kind"]
        )
        for kind, n in sorted(self.state.error_counts().items()):
            errors.add_metric([kind], float(n))
        yield errors
        yield CounterMetricFamily(
            "wattwheel_tick_failures",
            METRIC_HELP["wattwheel_tick_failures"],
            value=float(self.state.tick_failures),
        )
        restarts = CounterMetricFamily(
            "wattwheel_task_restarts", METRIC_HELP["wattwheel_task_restarts"], labels=["task"]
        )
        for task in self.state.tasks() if self.state.tasks else []:
            restarts.add_metric([str(task["name"])], float(task["restarts"]))
        yield restarts

    def _store_metrics(self) -> Iterator[Metric]:
        health = dict(self.store_health()) if self.store_health else {}
        pending = self._gauge("wattwheel_store_pending_items")
        pending.add_metric([], float(health.get("pending_items", 0.0)))
        yield pending
        yield CounterMetricFamily(
            "wattwheel_store_dropped",
            METRIC_HELP["wattwheel_store_dropped"],
            value=float(health.get("dropped", 0.0)),
        )
        for name, key, default in (
            ("wattwheel_store_healthy", "healthy", 1.0),
            ("wattwheel_store_spill_bytes", "spill_bytes", 0.0),
            ("wattwheel_store_spill_max_bytes", "spill_max_bytes", 0.0),
        ):
            g = self._gauge(name)
            g.add_metric([], float(health.get(key, default)))
            yield g

    def _leader_metrics(self) -> Iterator[Metric]:
        roles = self.state.leadership() if self.state.leadership else []
        leader = self._gauge("wattwheel_leader", ["role"])
        left = self._gauge("wattwheel_leader_command_left_seconds", ["role"])
        resigned = CounterMetricFamily(
            "wattwheel_leader_resignations",
            METRIC_HELP["wattwheel_leader_resignations"],
            labels=["role"],
        )
        for r in roles:
            leader.add_metric([str(r["role"])], 1.0 if r.get("leading") else 0.0)
            if r.get("leading") and r.get("command_left_s") is not None:
                left.add_metric([str(r["role"])], float(r["command_left_s"]))
            resigned.add_metric([str(r["role"])], float(r.get("resignations", 0)))
        yield leader
        yield left
        yield resigned

    def _budget_metrics(self) -> Iterator[Metric]:
        budget = self.state.reserve_budget() if self.state.reserve_budget else None
        kw = self._gauge("wattwheel_reserve_budget_kw", ["shard"])
        fallback = self._gauge("wattwheel_reserve_budget_fallback", ["shard"])
        if budget is not None:
            shard = str(budget["shard"])
            kw.add_metric([shard], float(budget["budget_kw"]))
            fallback.add_metric([shard], 1.0 if budget["source"] == "fallback" else 0.0)
        yield kw
        yield fallback

    def _telemetry_trust_metrics(self) -> Iterator[Metric]:
        counts = self.state.source_disagreements() if self.state.source_disagreements else {}
        fam = CounterMetricFamily(
            "wattwheel_source_disagreements",
            METRIC_HELP["wattwheel_source_disagreements"],
            labels=["source"],
        )
        for source, n in sorted(counts.items()):
            fam.add_metric([source], float(n))
        yield fam


def make_registry(collector: StateCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``text/plain; version=0.0.4``)."""
    return generate_latest(registry)
