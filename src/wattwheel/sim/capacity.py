"""Capacity planning: the largest number of servers a site can host, per policy and flywheel
size, within operating limits.

Each candidate server count is one whole simulation (:func:`wattwheel.sim.bench.run_policy`)
of the site with that many servers (:mod:`wattwheel.sim.growth`). A candidate is *feasible*
when it trips no breaker, caps no critical load and stays within every user limit. Per point
(policy, flywheel size) a :class:`BracketSearch` brackets the boundary with exponentially
growing steps from the baseline, then bisects on the integer server count.

Where the candidates run is an :class:`Executor` (serial here, Ray in
:mod:`wattwheel.sim.capacity_ray`); :func:`run_capacity` drives every point's search at once,
so independent simulations can run in parallel, and the result does not depend on the order in
which they finish.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import wattwheel
from wattwheel.control.registry import make_policy
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.metrics import METRIC_NAMES
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecaster
from wattwheel.sim.bench import baseline_forecaster, run_policy
from wattwheel.sim.growth import GrowthMethod, grown_scenario
from wattwheel.sim.scenario import Scenario

#: Policies a capacity run may compare (``optimum`` solves a whole-trace LP per candidate).
CAPACITY_POLICIES = ("none", "reactive", "seed", "predictive", "oracle")
#: Limits derived from the metrics: share of non-critical energy capped, and reserve running
#: hours scaled from the replayed trace's duration to a year.
DERIVED_LIMITS = ("noncritical_capped_pct", "reserve_hours_per_year")
#: Always enforced: an outage is never an acceptable price for more servers.
HARD_LIMITS = (("breaker_trips", 0.0), ("critical_capped_energy_kwh", 0.0))
#: Binding constraint reported when the search stopped at its upper bound.
SEARCH_LIMIT = "search_limit"
YEAR_S = 365.25 * 86400.0
_LIMIT = re.compile(r"^\s*([a-z_]+)\s*<=\s*(\S+)\s*$")


@dataclass(frozen=True)
class Limit:
    name: str
    max_value: float

    def __str__(self) -> str:
        return f"{self.name}<={self.max_value:g}"


def parse_limits(text: str) -> tuple[Limit, ...]:
    """``"noncritical_capped_pct<=1,reserve_hours_per_year<=50"`` -> limits. A name is a derived
    limit or any site metric (its total over the replayed trace)."""
    limits: list[Limit] = []
    for part in (p for p in text.split(",") if p.strip()):
        m = _LIMIT.match(part)
        if m is None:
            raise ConfigError("--limits", part.strip(), "expected NAME<=NUMBER")
        name, raw = m.group(1), m.group(2)
        if name not in DERIVED_LIMITS and name not in METRIC_NAMES:
            known = ", ".join(DERIVED_LIMITS)
            raise ConfigError("--limits", name, f"unknown limit (use {known} or a metric name)")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError("--limits", part.strip(), "the bound must be a finite number >= 0")
        limits.append(Limit(name, value))
    return tuple(limits)


def all_limits(limits: Sequence[Limit]) -> tuple[Limit, ...]:
    return tuple(Limit(n, v) for n, v in HARD_LIMITS) + tuple(limits)


def violated(metrics: Mapping[str, float], limits: Sequence[Limit]) -> list[str]:
    """Names of the limits ``metrics`` break: the hard ones first, then the user's in order."""
    return [lim.name for lim in all_limits(limits) if metrics[lim.name] > lim.max_value + 1e-9]


@dataclass(frozen=True)
class CapacityInputs:
    """Everything a candidate needs; shared once (Ray's object store) by every task."""

    base: Scenario
    kes_sites: Mapping[float, SiteParams]
    forecaster: Forecaster | None
    servers_per_rack: int
    growth: GrowthMethod


@dataclass(frozen=True)
class Candidate:
    policy: str
    kes_fraction: float
    servers: int


def kes_site(base: SiteParams, fraction: float, peak_kw: np.ndarray[Any, Any]) -> SiteParams:
    """``base`` with each flywheel bank's power at ``fraction`` of its domain's baseline peak,
    keeping the bank's minutes at rated power and module count; 0 = every module out."""
    kes = base.kes
    if fraction <= 0:
        return dataclasses.replace(base, kes=kes.with_faults(kes.modules))
    minutes = np.divide(
        kes.module_energy_kwh * 60.0,
        kes.module_power_kw,
        out=np.zeros_like(kes.module_power_kw),
        where=kes.module_power_kw > 0,
    )
    power = fraction * peak_kw / np.maximum(kes.modules, 1.0)
    new = dataclasses.replace(kes, module_power_kw=power, module_energy_kwh=power * minutes / 60)
    return dataclasses.replace(base, kes=new)


def make_inputs(
    base: Scenario,
    kes_fractions: Sequence[float],
    forecaster: Forecaster | None,
    servers_per_rack: int,
    growth: GrowthMethod,
) -> CapacityInputs:
    peak = base.demand_kw.max(axis=0)
    sites = {f: kes_site(base.site, f, peak) for f in kes_fractions}
    return CapacityInputs(base, sites, forecaster, servers_per_rack, growth)


def evaluate(inputs: CapacityInputs, cand: Candidate) -> dict[str, float]:
    """One whole simulation: the site metrics (without wall time) and the derived limits."""
    grown = grown_scenario(inputs.base, cand.servers, inputs.servers_per_rack, inputs.growth)
    scenario = dataclasses.replace(grown, site=inputs.kes_sites[cand.kes_fraction])
    forecaster: Forecaster | None = None
    if cand.policy in ("predictive", "seed"):
        # A private copy: a run never sees what another run did to its forecaster.
        forecaster = copy.deepcopy(inputs.forecaster) or baseline_forecaster()
    with _single_thread():
        result = run_policy(scenario, cand.policy, forecaster)
    metrics = {k: float(v) for k, v in result.site_metrics.items() if k != "wall_seconds"}
    metrics.update(derived_metrics(scenario, metrics))
    return metrics


def derived_metrics(scenario: Scenario, metrics: Mapping[str, float]) -> dict[str, float]:
    dt = scenario.dt_s
    noncritical_kwh = float(np.sum(scenario.demand_kw - scenario.critical_kw)) * dt / 3600.0
    duration_s = scenario.demand_kw.shape[0] * dt
    capped = metrics["capped_energy_kwh"]
    return {
        "noncritical_capped_pct": 100.0 * capped / noncritical_kwh if noncritical_kwh > 0 else 0.0,
        "reserve_hours_per_year": metrics["reserve_seconds"] / 3600.0 * YEAR_S / duration_s,
    }


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch (if a forecaster loaded it) on one thread, in this process as in a Ray worker,
    so a candidate's result does not depend on where it ran."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the search ----------------------------------------------------------------------------


@dataclass
class BracketSearch:
    """Largest feasible integer in [0, upper]: from ``baseline``, steps of ``step``, 2·step,
    4·step... up (or down) until the feasibility flips, then bisection until the bracket is
    ``resolution`` wide. 0 servers is feasible without a simulation (no load)."""

    baseline: int
    step: int
    upper: int
    resolution: int = 1
    lo: int | None = None
    hi: int | None = None
    hi_violations: list[str] = field(default_factory=list)
    evaluated: int = 0
    _next_step: int = 0
    _pending: int | None = None

    def next(self) -> int | None:
        """The next candidate to evaluate, or None when the search is done."""
        if self._pending is not None:
            return self._pending
        cand = self._choose()
        self._pending = cand
        return cand

    def _choose(self) -> int | None:
        if self.lo is None and self.hi is None:
            return self.baseline
        if self.hi is None:  # going up
            assert self.lo is not None
            if self.lo >= self.upper:
                return None
            return min(self.lo + (self.step << self._next_step), self.upper)
        if self.lo is None:  # going down
            cand = self.hi - (self.step << self._next_step)
            if cand <= 0:
                self.lo = 0
                return self._choose()
            return cand
        if self.hi - self.lo <= self.resolution:
            return None
        return (self.lo + self.hi) // 2

    def record(self, servers: int, violations: list[str]) -> None:
        if servers != self._pending:
            raise ValueError(f"result for {servers} servers, but {self._pending} was asked")
        self._pending = None
        self.evaluated += 1
        if violations:
            self.hi, self.hi_violations = servers, list(violations)
            if self.lo is None and servers != self.baseline:
                self._next_step += 1
        else:
            if self.hi is None and servers != self.baseline:
                self._next_step += 1
            self.lo = servers

    @property
    def done(self) -> bool:
        return self._pending is None and self._choose() is None

    def outcome(self) -> tuple[int, str, list[str]]:
        """(max servers, binding constraint, every limit broken just above)."""
        assert self.lo is not None
        if self.hi is None:
            return self.lo, SEARCH_LIMIT, []
        return self.lo, self.hi_violations[0], self.hi_violations


# --- executors and the driver --------------------------------------------------------------


class Executor(Protocol):
    """Runs candidates; ``wait`` returns one finished (candidate, metrics)."""

    def submit(self, cand: Candidate) -> None: ...

    def wait(self) -> tuple[Candidate, dict[str, float]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Candidates one after another in this process, in submission order."""

    def __init__(self, inputs: CapacityInputs) -> None:
        self.inputs = inputs
        self.queue: list[Candidate] = []

    def submit(self, cand: Candidate) -> None:
        self.queue.append(cand)

    def wait(self) -> tuple[Candidate, dict[str, float]]:
        cand = self.queue.pop(0)
        return cand, evaluate(self.inputs, cand)

    def close(self) -> None:
        self.queue.clear()


@dataclass(frozen=True)
class PointKey:
    policy: str
    kes_fraction: float


@dataclass
class PointResult:
    max_servers: int
    extra_servers_pct: float
    binding: str
    violated_above: list[str]
    candidates: dict[int, list[str]]


@dataclass
class CapacitySettings:
    policies: tuple[str, ...]
    kes_fractions: tuple[float, ...]
    limits: tuple[Limit, ...]
    servers_per_rack: int
    growth: GrowthMethod
    baseline_servers: int
    step: int
    upper: int
    resolution: int


class Cache:
    """Finished candidates as JSON files in ``directory``, keyed by a hash of every input that
    decides their metrics. A file that cannot be read is ignored (recomputed), never trusted."""

    def __init__(self, directory: Path | None, inputs_digest: str) -> None:
        self.directory = directory
        self.digest = inputs_digest
        self.hits = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def key(self, cand: Candidate) -> str:
        raw = json.dumps([self.digest, cand.policy, cand.kes_fraction, cand.servers])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def get(self, cand: Candidate) -> dict[str, float] | None:
        if self.directory is None:
            return None
        path = self.directory / f"{self.key(cand)}.json"
        try:
            payload = json.loads(path.read_text())
            metrics = {str(k): float(v) for k, v in payload["metrics"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        self.hits += 1
        return metrics

    def put(self, cand: Candidate, metrics: Mapping[str, float]) -> None:
        if self.directory is None:
            return
        path = self.directory / f"{self.key(cand)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"candidate": dataclasses.asdict(cand), "metrics": metrics}))
        tmp.replace(path)


#: The packages whose code decides a simulation's metrics (hashed into the cache key).
SIMULATION_CODE = ("domain", "forecast", "control", "sim")


def code_fingerprint() -> str:
    """A hash of the simulator's own source: a cached result never outlives a code change."""
    root = Path(wattwheel.__file__).parent
    h = hashlib.sha256()
    for pkg in SIMULATION_CODE:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def inputs_digest(inputs: CapacityInputs, model_id: str) -> str:
    """A hash of what decides a candidate's metrics: trace, site, growth, model, code."""
    h = hashlib.sha256()
    base = inputs.base
    for arr in (base.timestamps_s, base.demand_kw, base.critical_kw, base.trace.power_w):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    if base.trace.critical_w is not None:
        h.update(np.ascontiguousarray(base.trace.critical_w).tobytes())
    h.update(base.config.model_dump_json().encode())
    meta: list[str | int] = [wattwheel.__version__, code_fingerprint(), model_id]
    meta += [inputs.servers_per_rack, inputs.growth]
    h.update(json.dumps(meta).encode())
    for f in sorted(inputs.kes_sites):
        h.update(repr((f, inputs.kes_sites[f])).encode())
    return h.hexdigest()


def uses_kes(policy: str, site: SiteParams) -> bool:
    """Policies without a flywheel give the same result at every size: one search serves all."""
    return bool(getattr(make_policy(policy, site), "uses_kes", True))


ProgressHook = Callable[[PointKey, BracketSearch], None]


def run_capacity(
    inputs: CapacityInputs,
    settings: CapacitySettings,
    executor: Executor,
    cache: Cache,
    on_progress: ProgressHook | None = None,
) -> dict[PointKey, PointResult]:
    """Search every (policy, flywheel size) at once; candidates run on ``executor``."""
    searches: dict[PointKey, BracketSearch] = {}
    sim_fraction: dict[PointKey, float] = {}
    for policy in settings.policies:
        for f in settings.kes_fractions:
            key = PointKey(policy, f)
            searches[key] = BracketSearch(
                settings.baseline_servers, settings.step, settings.upper, settings.resolution
            )
            own = uses_kes(policy, inputs.kes_sites[f])
            sim_fraction[key] = f if own else settings.kes_fractions[0]
    waiting: dict[Candidate, list[PointKey]] = {}
    results: dict[Candidate, dict[str, float]] = {}

    def feed(key: PointKey, cand: Candidate, metrics: Mapping[str, float]) -> None:
        searches[key].record(cand.servers, violated(metrics, settings.limits))
        if on_progress is not None:
            on_progress(key, searches[key])

    try:
        while True:
            progressed = True
            while progressed:  # answer what the cache and earlier results already know
                progressed = False
                for key, search in searches.items():
                    n = search.next()
                    if n is None:
                        continue
                    cand = Candidate(key.policy, sim_fraction[key], n)
                    if cand in waiting:
                        if key not in waiting[cand]:
                            waiting[cand].append(key)
                        continue
                    known = results.get(cand) or cache.get(cand)
                    if known is not None:
                        results[cand] = known
                        feed(key, cand, known)
                        progressed = True
                    else:
                        waiting[cand] = [key]
                        executor.submit(cand)
            if not waiting:
                break
            cand, metrics = executor.wait()
            results[cand] = metrics
            cache.put(cand, metrics)
            for key in waiting.pop(cand):
                feed(key, cand, metrics)
    finally:
        executor.close()
    out: dict[PointKey, PointResult] = {}
    for key, search in searches.items():
        n, binding, broken = search.outcome()
        history = {
            c.servers: violated(m, settings.limits)
            for c, m in results.items()
            if c.policy == key.policy and c.kes_fraction == sim_fraction[key]
        }
        base = settings.baseline_servers
        out[key] = PointResult(
            n, round(100.0 * (n - base) / base, 3), binding, broken, dict(sorted(history.items()))
        )
    return out


def capacity_payload(
    results: Mapping[PointKey, PointResult],
    settings: CapacitySettings,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """``capacity.json``: per policy and flywheel size the max servers, the extra servers in
    percent of the baseline and the binding constraint, plus settings, limits and provenance."""
    policies: dict[str, Any] = {}
    for key, res in results.items():
        point = policies.setdefault(key.policy, {"kes_fraction": {}})
        point["kes_fraction"][f"{key.kes_fraction:g}"] = {
            "max_servers": res.max_servers,
            "extra_servers_pct": res.extra_servers_pct,
            "binding": res.binding,
            "violated_above": res.violated_above,
            "candidates": {str(n): v for n, v in res.candidates.items()},
        }
    return {
        "policies": policies,
        "baseline_servers": settings.baseline_servers,
        "limits": {
            "hard": {n: v for n, v in HARD_LIMITS},
            "user": {lim.name: lim.max_value for lim in settings.limits},
        },
        "settings": {
            "policies": list(settings.policies),
            "kes_fractions": list(settings.kes_fractions),
            "servers_per_rack": settings.servers_per_rack,
            "growth": settings.growth,
            "search": {
                "step": settings.step,
                "upper": settings.upper,
                "resolution": settings.resolution,
            },
        },
        **provenance,
    }
