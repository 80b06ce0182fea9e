"""The flywheel converter's own loop over Modbus: wattwheel vendor model 64220. Pure.

SunSpec has no model for a storage converter's feed-power loop, so wattwheel publishes one in
the vendor range (64000-65535), chained after the storage models (definition:
``adapters/modbus/vendor/model_64220.json``, documented in ``docs/sunspec-flywheel.md``):

- read-only nameplate of the loop (:class:`~wattwheel.domain.converter.ConverterSpec`):
  ``CtlTms`` control period (ms), ``LatTms`` measurement latency (ms), ``BwHz`` filter
  bandwidth (``Bw_SF``), ``Topo`` (1 = DC link, 2 = parallel);
- what the HPMC sets (RW, :class:`ConverterParams`): ``Ena`` (1 = the loop regulates the
  feed, 0 = the bank follows model 124's setpoint), ``RmpLim`` (W/s; 0 = no ramp limit),
  ``FloorW`` and ``CeilW`` (W), ``SoCLo``/``SoCHi`` (%, ``Pct_SF``), ``SmoTms`` (s). Powers share
  ``W_SF``.

A write puts the parameters first and ``Ena`` last, so the loop never runs on stale ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wattwheel.adapters.modbus.codec import (
    ModelLocation,
    SunSpecValueError,
    Value,
    decode_model,
    encode_raw,
    unscale,
)
from wattwheel.adapters.modbus.models import load_layout
from wattwheel.domain.converter import TOPOLOGIES, ConverterSettings, ConverterSpec

CONVERTER = 64220
#: Fixed resolutions: SoC band in 0.1 %, bandwidth in 0.1 Hz.
PCT_SF, BW_SF = -1, -1
_TOPO = {"dc-link": 1, "parallel": 2}
_PARAMS = ("RmpLim", "FloorW", "CeilW", "SoCLo", "SoCHi", "SmoTms")


@dataclass(frozen=True, slots=True)
class ConverterParams:
    """What the HPMC sets in one converter. ``ramp_limit_w_per_s`` inf = no limit."""

    enabled: bool
    ramp_limit_w_per_s: float
    floor_w: float
    ceiling_w: float
    soc_low: float
    soc_high: float
    smoothing_s: float

    @staticmethod
    def disabled() -> ConverterParams:
        return ConverterParams(False, math.inf, 0.0, 0.0, 0.0, 1.0, 30.0)

    @staticmethod
    def from_settings(settings: ConverterSettings, domain: int) -> ConverterParams:
        """One domain's parameters from the HPMC's decision (kW -> W)."""
        return ConverterParams(
            True,
            1000.0 * float(settings.ramp_limit_kw_per_s[domain]),
            1000.0 * float(settings.floor_kw[domain]),
            1000.0 * float(settings.ceiling_kw[domain]),
            float(settings.soc_low[domain]),
            float(settings.soc_high[domain]),
            float(settings.smoothing_s),
        )

    def settings(self) -> ConverterSettings:
        """As the simulator's (one-domain) settings, kW."""
        return ConverterSettings(
            ramp_limit_kw_per_s=np.array([self.ramp_limit_w_per_s / 1000.0]),
            floor_kw=np.array([self.floor_w / 1000.0]),
            ceiling_kw=np.array([self.ceiling_w / 1000.0]),
            soc_low=np.array([self.soc_low]),
            soc_high=np.array([self.soc_high]),
            smoothing_s=self.smoothing_s,
        )


def power_scale_factor(max_feed_w: float) -> int:
    """``W_SF`` for feeds up to ``max_feed_w``: the finest that fits a uint16."""
    sf = 0
    while max_feed_w / 10.0**sf > 0xFFFE:
        sf += 1
    return sf


def converter_values(
    spec: ConverterSpec, max_feed_w: float, params: ConverterParams | None = None
) -> dict[str, Value]:
    """The model 64220 point values of a converter (emulator side)."""
    p = params or ConverterParams.disabled()
    ramp = 0.0 if math.isinf(p.ramp_limit_w_per_s) else p.ramp_limit_w_per_s
    return {
        "CtlTms": int(round(1000 * spec.control_period_s)),
        "LatTms": int(round(1000 * spec.measurement_latency_s)),
        "BwHz": spec.bandwidth_hz,
        "Topo": _TOPO[spec.topology],
        "Ena": int(p.enabled),
        "RmpLim": ramp,
        "FloorW": p.floor_w,
        "CeilW": p.ceiling_w,
        "SoCLo": 100.0 * p.soc_low,
        "SoCHi": 100.0 * p.soc_high,
        "SmoTms": int(round(p.smoothing_s)),
        "W_SF": power_scale_factor(max_feed_w),
        "Pct_SF": PCT_SF,
        "Bw_SF": BW_SF,
    }


def _num(values: Mapping[str, Value], name: str) -> float:
    value = values.get(name)
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        raise SunSpecValueError(f"64220 {name} is not implemented by the converter")
    return float(value)


def decode_converter(block: Sequence[int]) -> tuple[ConverterSpec, ConverterParams]:
    """The converter's nameplate and parameters from a model 64220 block."""
    v = decode_model(load_layout(CONVERTER), block)
    topo = {code: name for name, code in _TOPO.items()}.get(int(_num(v, "Topo")))
    if topo not in TOPOLOGIES:
        raise SunSpecValueError(f"64220 Topo = {v.get('Topo')!r} is not a known topology")
    spec = ConverterSpec(
        control_period_s=_num(v, "CtlTms") / 1000.0,
        measurement_latency_s=_num(v, "LatTms") / 1000.0,
        bandwidth_hz=_num(v, "BwHz"),
        topology=topo,
    )
    ramp = _num(v, "RmpLim")
    params = ConverterParams(
        enabled=_num(v, "Ena") == 1,
        ramp_limit_w_per_s=math.inf if ramp == 0 else ramp,
        floor_w=_num(v, "FloorW"),
        ceiling_w=_num(v, "CeilW"),
        soc_low=_num(v, "SoCLo") / 100.0,
        soc_high=_num(v, "SoCHi") / 100.0,
        smoothing_s=_num(v, "SmoTms"),
    )
    return spec, params


def encode_converter_params(
    params: ConverterParams, location: ModelLocation, block: Sequence[int]
) -> list[tuple[int, list[int]]]:
    """Register writes for ``params`` (``block``: the converter's current model 64220 block,
    for its scale factors): the parameters, then ``Ena`` last. Values that do not fit or make
    no sense raise :class:`SunSpecValueError` naming the point."""
    layout = load_layout(CONVERTER)
    v = decode_model(layout, block)
    w_sf, pct_sf = int(_num(v, "W_SF")), int(_num(v, "Pct_SF"))
    ramp = 0.0 if math.isinf(params.ramp_limit_w_per_s) else params.ramp_limit_w_per_s
    wanted = {
        "RmpLim": (ramp, w_sf),
        "FloorW": (params.floor_w, w_sf),
        "CeilW": (params.ceiling_w, w_sf),
        "SoCLo": (100.0 * params.soc_low, pct_sf),
        "SoCHi": (100.0 * params.soc_high, pct_sf),
        "SmoTms": (params.smoothing_s, 0),
    }
    checks = {
        "RmpLim": ramp >= 0,
        "FloorW": 0 <= params.floor_w <= params.ceiling_w,
        "CeilW": params.ceiling_w >= 0,
        "SoCLo": 0 <= params.soc_low <= params.soc_high,
        "SoCHi": params.soc_high <= 1,
        "SmoTms": params.smoothing_s >= 1,
    }
    for name, ok in checks.items():
        value = wanted[name][0]
        if not ok or not math.isfinite(value):
            raise SunSpecValueError(f"64220 {name} = {value!r} is invalid")
    registers: list[int] = []
    for name in _PARAMS:  # contiguous, in the model's order
        point = layout.point(name)
        value, sf = wanted[name]
        try:
            registers += encode_raw(point, unscale(point, value, sf))
        except (ValueError, OverflowError) as exc:
            raise SunSpecValueError(f"64220 {name} = {value!r} does not fit: {exc}") from exc
    first = layout.point(_PARAMS[0])
    ena = layout.point("Ena")
    base = location.address
    return [
        (base + first.offset, registers),
        (base + ena.offset, encode_raw(ena, int(params.enabled))),
    ]
