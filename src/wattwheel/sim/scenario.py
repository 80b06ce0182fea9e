"""Loading a site file with its trace and resolving it into simulation inputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError, TraceError
from wattwheel.domain.site import SiteConfig, SiteParams, parse_site, resolve_site
from wattwheel.domain.trace import Trace
from wattwheel.sim.trace_io import read_trace

FloatArray = NDArray[np.float64]
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
DEFAULT_SCENARIO = "cella-oversub"


@dataclass(frozen=True)
class Scenario:
    """A resolved site plus the per-domain demand it is replayed on.

    Attributes:
        demand_kw: (T, D) total IT demand per domain (kW).
        critical_kw: (T, D) critical part (kW): from the trace's ``critical_w`` when present,
            else ``(1 - noncritical_fraction) * demand``.
    """

    config: SiteConfig
    site: SiteParams
    trace: Trace
    timestamps_s: FloatArray
    demand_kw: FloatArray
    critical_kw: FloatArray

    @property
    def dt_s(self) -> float:
        return self.trace.step_s


def load_site_config(path: Path) -> SiteConfig:
    if not path.is_file():
        raise ConfigError("site", str(path), "site file not found")
    return parse_site(path.read_text(), source=str(path))


def default_trace_path(site_path: Path, config: SiteConfig) -> Path:
    if config.site.trace is None:
        raise ConfigError(
            "site.trace", None, "no trace given on the command line or in the site file"
        )
    return (site_path.parent / config.site.trace).resolve()


def load_scenario(site_path: Path, trace_path: Path | None = None) -> Scenario:
    """Read the site file and its trace (``trace_path`` or the one the site names)."""
    config = load_site_config(site_path)
    trace = read_trace(trace_path or default_trace_path(site_path, config))
    return build_scenario(config, trace)


def bind_racks(config: SiteConfig, trace: Trace) -> SiteConfig:
    """Apply the site's ``rack_binding`` rule: with ``in-order``, a trace that does not hold
    every named rack (another PDU trace of the same format) is bound to the domains in order."""
    complete = all(r in trace.rack_ids for r in config.rack_ids)
    if config.site.rack_binding == "in-order" and not complete:
        return config.rebound(trace.rack_ids)
    return config


def build_scenario(config: SiteConfig, trace: Trace) -> Scenario:
    config = bind_racks(config, trace)
    missing = [r for r in config.rack_ids if r not in trace.rack_ids]
    if missing:
        raise TraceError(
            f"the site names racks that are not in the trace: {', '.join(missing[:5])}"
            f"{'...' if len(missing) > 5 else ''} (trace racks: {', '.join(trace.rack_ids[:5])}"
            f"{'...' if len(trace.rack_ids) > 5 else ''})"
        )
    if trace.n_steps < 2:
        raise TraceError("the trace needs at least two time steps")
    demand = np.column_stack(
        [trace.select(d.racks).power_w.sum(axis=1) / 1000.0 for d in config.domains]
    )
    site = resolve_site(config, {d.name: demand[:, i] for i, d in enumerate(config.domains)})
    if trace.critical_w is not None:
        critical = np.column_stack(
            [trace.select(d.racks).critical_w.sum(axis=1) / 1000.0 for d in config.domains]  # type: ignore[union-attr]
        )
    else:
        critical = demand * (1.0 - site.flex.noncritical_fraction)
    return Scenario(config, site, trace, trace.timestamps_s, demand, critical)


def with_latency(scenario: Scenario, latency_s: float | None) -> Scenario:
    """The scenario with another measurement latency (None: keep the site file's)."""
    if latency_s is None:
        return scenario
    site = dataclasses.replace(scenario.site, measurement_latency_s=float(latency_s))
    return dataclasses.replace(scenario, site=site)


def bundled_site(name: str = DEFAULT_SCENARIO) -> Path:
    path = SCENARIO_DIR / name / "site.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in SCENARIO_DIR.glob("*/site.toml"))
        raise ConfigError("scenario", name, f"no bundled scenario by that name (known: {known})")
    return path
