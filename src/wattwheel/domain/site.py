"""The site file (TOML): schema, validation with errors that name the key, and resolution of
trace-relative capacities into absolute values.

Capacities may be absolute (``primary_capacity_kw = 755``) or relative to the trace
(``primary_capacity = "p97"``: the 97th percentile of the domain's demand; KES power as a fraction
of the domain peak), so one site file can be replayed on another trace.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wattwheel.domain.breaker import BreakerParams
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.flywheel import FlywheelParams
from wattwheel.domain.metrics import METRIC_NAMES

FloatArray = NDArray[np.float64]
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class SiteSection(_Strict):
    name: str
    description: str = ""
    trace: str | None = Field(None, description="trace file, relative to the site file")
    plan_period_s: float = Field(300.0, gt=0, description="planning loop period (s)")
    horizon_min: float = Field(15.0, gt=0, le=120, description="forecast horizon (min)")
    storage_horizon_min: float | None = Field(
        None,
        gt=0,
        le=240,
        description="longer look-ahead for the flywheel's state of charge (min): beyond the "
        "forecast horizon the planner sees the median forecast and starts no reserve",
    )
    risk_quantile: float = Field(
        0.9, gt=0, lt=1, description="demand quantile at which the planner keeps the banks full"
    )
    measurement_latency_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="age of a demand measurement when the controller acts on it (s); plans "
        "see only what was measured this long before they are made",
    )
    max_grid_ramp_kw_per_s: float | None = Field(
        None, gt=0, description="grid ramp-rate limit per domain the KES enforces (kW/s)"
    )
    servers_per_rack: int = Field(40, ge=1, description="servers per rack for allocation")
    rack_rating_kw: float | None = Field(
        None,
        gt=0,
        description="the most one rack can draw (kW, its feed's rating): live telemetry above "
        "it is rejected as implausible (DESIGN §8); none: only the per-server bound applies",
    )
    plan_decompose_above_domains: int = Field(
        24,
        ge=1,
        description="sites with more domains than this are planned shard by shard "
        "(wattwheel.control.decomposed, price-coordinated), the others with one site-wide MILP",
    )
    plan_shard_domains: int = Field(
        3, ge=1, description="domains per shard of the decomposed plan (contiguous)"
    )
    plan_price_rounds: int = Field(
        4, ge=1, description="price rounds of the decomposed plan at most (plus one repair)"
    )
    rack_binding: Literal["strict", "in-order"] = Field(
        "strict",
        description="'in-order': replayed on a trace without all the named racks, bind the "
        "trace's racks to the domains in order (rack i -> domain i mod D)",
    )


class ReserveSection(_Strict):
    capacity_kw: float | None = Field(None, ge=0, description="shared reserve capacity (kW)")
    capacity_fraction_of_excess: float | None = Field(
        None, ge=0, description="capacity as a fraction of the sum of per-domain peak excesses"
    )
    start_delay_s: float = Field(60.0, ge=0, description="time from start to delivery (s)")
    min_on_s: float = Field(900.0, ge=0, description="minimum on-time once started (s)")
    warm_start_delay_s: float | None = Field(
        None,
        ge=0,
        description="time from start to delivery when pre-warmed (s; <= start_delay_s); "
        "none: the reserve cannot be pre-warmed",
    )

    @model_validator(mode="after")
    def _one_capacity(self) -> ReserveSection:
        if (self.capacity_kw is None) == (self.capacity_fraction_of_excess is None):
            raise ValueError("give exactly one of capacity_kw, capacity_fraction_of_excess")
        if self.warm_start_delay_s is not None and self.warm_start_delay_s > self.start_delay_s:
            raise ValueError("warm_start_delay_s must not exceed start_delay_s")
        return self


class BreakerSection(_Strict):
    pickup_ratio: float = Field(1.0, ge=1.0, description="overload ratio where heating starts")
    curve_ratio: list[float] = Field(default_factory=lambda: [1.1, 1.35, 2.0, 6.0])
    curve_seconds: list[float] = Field(default_factory=lambda: [14400.0, 3600.0, 120.0, 0.05])
    cooling_tau_s: float = Field(900.0, gt=0, description="thermal memory time constant (s)")

    @model_validator(mode="after")
    def _curve(self) -> BreakerSection:
        if any(r < 1.0 for r in self.curve_ratio) or any(t <= 0 for t in self.curve_seconds):
            raise ValueError("curve_ratio must be >= 1 and curve_seconds > 0")
        if len(self.curve_ratio) != len(self.curve_seconds) or len(self.curve_ratio) < 2:
            raise ValueError("curve_ratio and curve_seconds need the same length (>= 2)")
        if any(b <= a for a, b in zip(self.curve_ratio, self.curve_ratio[1:], strict=False)):
            raise ValueError("curve_ratio must increase")
        if any(b >= a for a, b in zip(self.curve_seconds, self.curve_seconds[1:], strict=False)):
            raise ValueError("curve_seconds must decrease (inverse time)")
        return self


#: Flywheel classes a site file can start from (``[domain_defaults.kes] preset = "..."``);
#: keys written in the file win over the preset's. Figures and sources in the README's
#: "Flywheel classes" section and in ``domain/flywheel.py``.
KES_PRESETS: dict[str, dict[str, Any]] = {
    # Energy-storage flywheel: minutes at rated power (Beacon Power's 100 kW / 25 kWh class
    # holds 15 min), rotor usable from half speed, full power down to 70 % speed.
    "energy-storage": {
        "minutes_at_rated": 10.0,
        "speed_min_rpm": 18375.0,
        "speed_max_rpm": 36750.0,
        "base_speed_rpm": 25725.0,
        "charge_efficiency": 0.95,
        "discharge_efficiency": 0.95,
        "standby_loss_fraction": 0.01,
        "standby_fixed_share": 0.4,
    },
    # UPS flywheel: seconds at rated power (Calnetix 100 kW for 15 s; Active Power CleanSource
    # and VYCON VDC ride through 15-30 s at full load), VYCON's 14,000-36,750 rpm range, full
    # power down to half speed (the converter is sized for ride-through at low speed).
    "ups": {
        "minutes_at_rated": 20.0 / 60.0,
        "speed_min_rpm": 14000.0,
        "speed_max_rpm": 36750.0,
        "base_speed_rpm": 18375.0,
        "charge_efficiency": 0.97,
        "discharge_efficiency": 0.97,
        "standby_loss_fraction": 0.005,
        "standby_fixed_share": 0.5,
    },
}
_KES_ENERGY_KEYS = ("module_energy_kwh", "minutes_at_rated")


class KesSection(_Strict):
    preset: Literal["energy-storage", "ups"] | None = Field(
        None, description="flywheel class whose figures fill the keys not written"
    )
    modules: int = Field(4, ge=0)
    faulted_modules: int = Field(0, ge=0)
    module_power_kw: float | None = Field(None, gt=0)
    power_fraction_of_peak: float | None = Field(
        None, gt=0, le=1, description="bank power as a fraction of the domain's peak demand"
    )
    module_energy_kwh: float | None = Field(None, gt=0)
    minutes_at_rated: float | None = Field(None, gt=0, description="usable energy / rated power")
    speed_min_rpm: float = Field(18000.0, gt=0)
    speed_max_rpm: float = Field(36000.0, gt=0)
    base_speed_rpm: float = Field(25200.0, gt=0, description="below this, power derates")
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    standby_loss_fraction: float = Field(
        0.01, ge=0, lt=1, description="whole standby loss at max speed, of rated power"
    )
    standby_fixed_share: float = Field(
        0.4,
        ge=0,
        le=1,
        description="share of the standby loss that does not depend on speed (vacuum pump, "
        "bearing controller, cooling, electronics); the rest grows with speed squared",
    )
    initial_soc: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sizes(self) -> KesSection:
        if (self.module_power_kw is None) == (self.power_fraction_of_peak is None):
            raise ValueError("give exactly one of module_power_kw, power_fraction_of_peak")
        if (self.module_energy_kwh is None) == (self.minutes_at_rated is None):
            raise ValueError("give exactly one of module_energy_kwh, minutes_at_rated")
        if not self.speed_min_rpm < self.base_speed_rpm <= self.speed_max_rpm:
            raise ValueError("need speed_min_rpm < base_speed_rpm <= speed_max_rpm")
        if self.faulted_modules > self.modules:
            raise ValueError("faulted_modules exceeds modules")
        return self


class FlexSection(_Strict):
    noncritical_fraction: float = Field(0.3, ge=0, le=1, description="of rack power")
    cap_floor_fraction: float = Field(
        0.5, ge=0, le=1, description="non-critical load can be capped down to this fraction"
    )
    shift_lead_s: float = Field(300.0, ge=0, description="time for a shift to take effect (s)")
    shift_max_fraction_of_peak: float = Field(0.05, ge=0, le=1)
    defer_max_fraction_of_peak: float = Field(0.0, ge=0, le=1)
    defer_deadline_s: float = Field(3600.0, gt=0, description="deferred work is due within (s)")


class DomainSection(_Strict):
    name: str
    racks: list[str] = Field(min_length=1)
    primary_capacity_kw: float | None = Field(None, gt=0)
    primary_capacity: str | None = Field(None, description='trace percentile, e.g. "p97"')
    kes: dict[str, Any] = Field(default_factory=dict)
    flex: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _capacity(self) -> DomainSection:
        if (self.primary_capacity_kw is None) == (self.primary_capacity is None):
            raise ValueError("give exactly one of primary_capacity_kw, primary_capacity")
        if self.primary_capacity is not None and not _PERCENTILE.match(self.primary_capacity):
            raise ValueError(
                f'primary_capacity must look like "p97", got {self.primary_capacity!r}'
            )
        return self


class DomainDefaults(_Strict):
    kes: dict[str, Any] = Field(default_factory=dict)
    flex: dict[str, Any] = Field(default_factory=dict)


class SiteConfig(_Strict):
    site: SiteSection
    reserve: ReserveSection
    costs: dict[str, float] = Field(default_factory=dict)
    breaker: BreakerSection = Field(default_factory=BreakerSection)
    domain_defaults: DomainDefaults = Field(default_factory=DomainDefaults)
    domains: list[DomainSection] = Field(min_length=1)

    @property
    def rack_ids(self) -> list[str]:
        return [r for d in self.domains for r in d.racks]

    def rebound(self, trace_racks: Sequence[str]) -> SiteConfig:
        """This site with its domains bound to ``trace_racks`` in order (``rack_binding``)."""
        n_dom = min(len(self.domains), len(trace_racks))
        groups: list[list[str]] = [[] for _ in range(n_dom)]
        for i, rack in enumerate(trace_racks):
            groups[i % n_dom].append(rack)
        domains = [
            d.model_copy(update={"racks": g}) for d, g in zip(self.domains, groups, strict=False)
        ]
        return self.model_copy(update={"domains": domains})


def parse_site(text: str, source: str = "site file") -> SiteConfig:
    """Parse and validate a site file. Raises ConfigError naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "<toml>", f"not valid TOML: {exc}") from None
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key(err["loc"])
        raise ConfigError(key, err.get("input"), err["msg"]) from None
    _check_costs(config.costs)
    _check_unique(config)
    for i, dom in enumerate(config.domains):
        _merged_kes(config, i, dom)
        _merged_flex(config, i, dom)
    return config


def _key(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _check_unique(config: SiteConfig) -> None:
    seen_domains: dict[str, int] = {}
    seen_racks: dict[str, str] = {}
    for i, dom in enumerate(config.domains):
        if dom.name in seen_domains:
            raise ConfigError(
                f"domains[{i}].name",
                dom.name,
                f"domain names must be unique: {dom.name!r} is also "
                f"domains[{seen_domains[dom.name]}]",
            )
        seen_domains[dom.name] = i
        for j, rack in enumerate(dom.racks):
            if rack in seen_racks:
                raise ConfigError(
                    f"domains[{i}].racks[{j}]",
                    rack,
                    f"a rack belongs to more than one domain: {rack!r} is already in "
                    f"domain {seen_racks[rack]!r}",
                )
            seen_racks[rack] = dom.name


def _check_costs(costs: Mapping[str, float]) -> None:
    for name, weight in costs.items():
        if name not in METRIC_NAMES:
            raise ConfigError(f"costs.{name}", weight, "not a metric name (see DESIGN §2)")
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"costs.{name}", weight, "a cost weight must be a finite number >= 0")


def _merged(
    section: type[_Strict],
    key: str,
    default_key: str,
    base: Mapping[str, Any],
    own: Mapping[str, Any],
) -> Any:
    """Validate a domain's section merged over the defaults; an error names where the bad
    value was written (the domain's own table, or ``domain_defaults``)."""
    try:
        return section.model_validate({**base, **own})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        first = str(loc[0]) if loc else ""
        where = default_key if first and first in base and first not in own else key
        raise ConfigError(
            f"{where}{'.' + _key(loc) if loc else ''}", err.get("input"), err["msg"]
        ) from None


def _merged_kes(config: SiteConfig, i: int, dom: DomainSection) -> KesSection:
    base = _with_preset(config.domain_defaults.kes, dom.kes, f"domains[{i}].kes")
    result: KesSection = _merged(
        KesSection, f"domains[{i}].kes", "domain_defaults.kes", base, dom.kes
    )
    return result


def _with_preset(base: Mapping[str, Any], own: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The defaults with the chosen preset's figures under them: a key the file writes (in
    the defaults or the domain) wins, and an energy written either way replaces the preset's."""
    name = own.get("preset", base.get("preset"))
    if name is None:
        return dict(base)
    if name not in KES_PRESETS:
        raise ConfigError(
            f"{where}.preset", name, f"unknown flywheel preset; one of {sorted(KES_PRESETS)}"
        )
    given = {**base, **own}
    energy_given = any(k in given for k in _KES_ENERGY_KEYS)
    fill = {
        k: v
        for k, v in KES_PRESETS[name].items()
        if k not in given and not (k in _KES_ENERGY_KEYS and energy_given)
    }
    return {**fill, **base}


def _merged_flex(config: SiteConfig, i: int, dom: DomainSection) -> FlexSection:
    result: FlexSection = _merged(
        FlexSection,
        f"domains[{i}].flex",
        "domain_defaults.flex",
        config.domain_defaults.flex,
        dom.flex,
    )
    return result


@dataclass(frozen=True)
class ReserveParams:
    capacity_kw: float
    start_delay_s: float
    min_on_s: float
    #: Start delay from the pre-warmed state (None: no pre-warming).
    warm_start_delay_s: float | None = None


@dataclass(frozen=True)
class FlexParams:
    """Arrays of shape (D,)."""

    noncritical_fraction: FloatArray
    cap_floor_fraction: FloatArray
    shift_lead_s: FloatArray
    shift_max_kw: FloatArray
    defer_max_kw: FloatArray
    defer_deadline_s: FloatArray


@dataclass(frozen=True)
class SiteParams:
    """A site with every capacity resolved to absolute units. Per-domain arrays have shape (D,)."""

    name: str
    domain_names: tuple[str, ...]
    domain_racks: tuple[tuple[str, ...], ...]
    primary_kw: FloatArray
    kes: FlywheelParams
    kes_initial_soc: FloatArray
    flex: FlexParams
    reserve: ReserveParams
    breaker: BreakerParams
    costs: Mapping[str, float]
    plan_period_s: float
    horizon_s: float
    storage_horizon_s: float
    risk_quantile: float
    max_grid_ramp_kw_per_s: float | None
    servers_per_rack: int
    rack_rating_kw: float | None = None
    measurement_latency_s: float = 1.0
    #: More domains than this: the ``predictive`` policy plans shard by shard (decomposed).
    plan_decompose_above_domains: int = 24
    plan_shard_domains: int = 3
    plan_price_rounds: int = 4

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)


def resolve_site(config: SiteConfig, domain_demand_kw: Mapping[str, FloatArray]) -> SiteParams:
    """Turn relative capacities into absolute ones using each domain's demand series (kW)."""
    doms = config.domains
    for d in doms:
        series = domain_demand_kw.get(d.name)
        if series is None or series.size == 0:
            raise ConfigError(f"domains.{d.name}", None, "no demand series to resolve against")
    peak = np.array([float(np.max(domain_demand_kw[d.name])) for d in doms])
    primary = np.array([_primary_kw(d, domain_demand_kw[d.name]) for d in doms])
    kes_secs = [_merged_kes(config, i, d) for i, d in enumerate(doms)]
    flex_secs = [_merged_flex(config, i, d) for i, d in enumerate(doms)]
    return SiteParams(
        name=config.site.name,
        domain_names=tuple(d.name for d in doms),
        domain_racks=tuple(tuple(d.racks) for d in doms),
        primary_kw=primary,
        kes=_flywheel(kes_secs, peak),
        kes_initial_soc=np.array([k.initial_soc for k in kes_secs]),
        flex=_flex(flex_secs, peak),
        reserve=_reserve(config.reserve, peak, primary),
        breaker=_breaker(config.breaker),
        costs=dict(config.costs),
        plan_period_s=config.site.plan_period_s,
        horizon_s=config.site.horizon_min * 60.0,
        storage_horizon_s=max(
            config.site.storage_horizon_min or config.site.horizon_min, config.site.horizon_min
        )
        * 60.0,
        risk_quantile=config.site.risk_quantile,
        max_grid_ramp_kw_per_s=config.site.max_grid_ramp_kw_per_s,
        servers_per_rack=config.site.servers_per_rack,
        rack_rating_kw=config.site.rack_rating_kw,
        measurement_latency_s=config.site.measurement_latency_s,
        plan_decompose_above_domains=config.site.plan_decompose_above_domains,
        plan_shard_domains=config.site.plan_shard_domains,
        plan_price_rounds=config.site.plan_price_rounds,
    )


def _primary_kw(dom: DomainSection, demand_kw: FloatArray) -> float:
    if dom.primary_capacity_kw is not None:
        return float(dom.primary_capacity_kw)
    assert dom.primary_capacity is not None
    return float(np.percentile(demand_kw, float(dom.primary_capacity[1:])))


def _flywheel(secs: Sequence[KesSection], peak_kw: FloatArray) -> FlywheelParams:
    power: list[float] = []
    energy: list[float] = []
    for k, pk in zip(secs, peak_kw, strict=True):
        p = k.module_power_kw
        if p is None:
            p = float(k.power_fraction_of_peak or 0.0) * float(pk) / max(k.modules, 1)
        e = k.module_energy_kwh
        if e is None:
            e = p * float(k.minutes_at_rated or 0.0) / 60.0
        power.append(p)
        energy.append(e)

    def arr(f: Any) -> FloatArray:
        return np.array([float(f(k)) for k in secs])

    return FlywheelParams(
        modules=arr(lambda k: k.modules),
        faulted_modules=arr(lambda k: k.faulted_modules),
        module_power_kw=np.array(power, dtype=float),
        module_energy_kwh=np.array(energy, dtype=float),
        speed_min_ratio=arr(lambda k: k.speed_min_rpm / k.speed_max_rpm),
        base_speed_ratio=arr(lambda k: k.base_speed_rpm / k.speed_max_rpm),
        charge_efficiency=arr(lambda k: k.charge_efficiency),
        discharge_efficiency=arr(lambda k: k.discharge_efficiency),
        standby_loss_fraction=arr(lambda k: k.standby_loss_fraction),
        standby_fixed_share=arr(lambda k: k.standby_fixed_share),
    )


def _flex(secs: Sequence[FlexSection], peak_kw: FloatArray) -> FlexParams:
    def arr(name: str) -> FloatArray:
        return np.array([float(getattr(f, name)) for f in secs])

    return FlexParams(
        noncritical_fraction=arr("noncritical_fraction"),
        cap_floor_fraction=arr("cap_floor_fraction"),
        shift_lead_s=arr("shift_lead_s"),
        shift_max_kw=arr("shift_max_fraction_of_peak") * peak_kw,
        defer_max_kw=arr("defer_max_fraction_of_peak") * peak_kw,
        defer_deadline_s=arr("defer_deadline_s"),
    )


def _reserve(sec: ReserveSection, peak_kw: FloatArray, primary_kw: FloatArray) -> ReserveParams:
    if sec.capacity_kw is not None:
        cap = sec.capacity_kw
    else:
        assert sec.capacity_fraction_of_excess is not None
        cap = sec.capacity_fraction_of_excess * float(np.sum(np.maximum(peak_kw - primary_kw, 0.0)))
    return ReserveParams(float(cap), sec.start_delay_s, sec.min_on_s, sec.warm_start_delay_s)


def _breaker(sec: BreakerSection) -> BreakerParams:
    return BreakerParams(
        pickup_ratio=sec.pickup_ratio,
        curve_ratio=tuple(sec.curve_ratio),
        curve_seconds=tuple(sec.curve_seconds),
        cooling_tau_s=sec.cooling_tau_s,
    )
