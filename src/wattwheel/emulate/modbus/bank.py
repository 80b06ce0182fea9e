"""One emulated flywheel bank: the domain flywheel physics behind a SunSpec-shaped status.

The physics is :mod:`wattwheel.domain.flywheel` (E = ½Iω², speed-based usable SoC, standby loss
a fixed part plus a part ∝ ω², an empty rotor held at ω_min from the feed, charge/discharge
efficiencies, power derated below base speed), run here for a single bank
(arrays of shape (1,)). Long intervals are integrated in sub-steps of at most ``max_substep_s`` so
the loss, which depends on speed, follows the falling speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wattwheel.adapters.modbus.flywheel_map import FlywheelNameplate, FlywheelState, FlywheelStatus
from wattwheel.domain import flywheel as physics
from wattwheel.domain.converter import ConverterSpec

_W_PER_KW = 1000.0
_WH_PER_KWH = 1000.0


@dataclass(frozen=True, slots=True)
class FlywheelBankConfig:
    """Parameters of an emulated bank (one power domain's KES), in real units.

    ``module_power_w`` and ``module_energy_wh`` are per module; ``module_energy_wh`` is the
    usable energy between ω_min and ω_max. Defaults describe a small Calnetix-like module.
    """

    modules: int = 4
    faulted_modules: int = 0
    module_power_w: float = 100_000.0
    module_energy_wh: float = 710.0
    speed_min_ratio: float = 0.5
    base_speed_ratio: float = 0.7
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    standby_loss_fraction: float = 0.01
    standby_fixed_share: float = 0.4
    dc_bus_v: float = 800.0
    initial_soc: float = 0.8
    #: The converter's own loop, published as vendor model 64220 (None: not published).
    converter: ConverterSpec | None = field(default_factory=ConverterSpec)

    def __post_init__(self) -> None:
        checks = {
            "modules": self.modules >= 1,
            "faulted_modules": 0 <= self.faulted_modules <= self.modules,
            "module_power_w": self.module_power_w > 0,
            "module_energy_wh": self.module_energy_wh > 0,
            "speed_min_ratio": 0 <= self.speed_min_ratio < 1,
            "base_speed_ratio": 0 < self.base_speed_ratio <= 1,
            "charge_efficiency": 0 < self.charge_efficiency <= 1,
            "discharge_efficiency": 0 < self.discharge_efficiency <= 1,
            "standby_loss_fraction": 0 <= self.standby_loss_fraction < 1,
            "standby_fixed_share": 0 <= self.standby_fixed_share <= 1,
            "dc_bus_v": self.dc_bus_v > 0,
            "initial_soc": 0 <= self.initial_soc <= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"flywheel bank {key} = {getattr(self, key)!r} is out of range")

    @classmethod
    def from_physics(
        cls, params: physics.FlywheelParams, index: int, initial_soc: float, dc_bus_v: float = 800.0
    ) -> FlywheelBankConfig:
        """The bank of domain ``index`` of a site's (vectorised) flywheel parameters."""

        def at(values: physics.FloatArray) -> float:
            return float(values[index])

        return cls(
            modules=round(at(params.modules)),
            faulted_modules=round(at(params.faulted_modules)),
            module_power_w=at(params.module_power_kw) * _W_PER_KW,
            module_energy_wh=at(params.module_energy_kwh) * _WH_PER_KWH,
            speed_min_ratio=at(params.speed_min_ratio),
            base_speed_ratio=at(params.base_speed_ratio),
            charge_efficiency=at(params.charge_efficiency),
            discharge_efficiency=at(params.discharge_efficiency),
            standby_loss_fraction=at(params.standby_loss_fraction),
            standby_fixed_share=float(
                np.broadcast_to(params.standby_fixed_share, params.modules.shape)[index]
            ),
            dc_bus_v=dc_bus_v,
            initial_soc=initial_soc,
        )

    def physics_params(self) -> physics.FlywheelParams:
        """The domain physics parameters for this bank (shape (1,))."""

        def arr(value: float) -> physics.FloatArray:
            return np.array([float(value)])

        return physics.FlywheelParams(
            modules=arr(self.modules),
            faulted_modules=arr(self.faulted_modules),
            module_power_kw=arr(self.module_power_w / _W_PER_KW),
            module_energy_kwh=arr(self.module_energy_wh / _WH_PER_KWH),
            speed_min_ratio=arr(self.speed_min_ratio),
            base_speed_ratio=arr(self.base_speed_ratio),
            charge_efficiency=arr(self.charge_efficiency),
            discharge_efficiency=arr(self.discharge_efficiency),
            standby_loss_fraction=arr(self.standby_loss_fraction),
            standby_fixed_share=arr(self.standby_fixed_share),
        )

    def nameplate(self) -> FlywheelNameplate:
        """Static SunSpec data of the bank (nameplate counts every installed module)."""
        return FlywheelNameplate(
            energy_rated_wh=self.modules * self.module_energy_wh,
            max_charge_w=self.modules * self.module_power_w,
            max_discharge_w=self.modules * self.module_power_w,
            dc_bus_v=self.dc_bus_v,
            converter=self.converter,
        )


class FlywheelBank:
    """The state of one bank (SoC, last exchanged power) and how it evolves under a setpoint."""

    def __init__(self, config: FlywheelBankConfig, control_period_s: float = 1.0) -> None:
        self.config = config
        self.params = config.physics_params()
        self.control_period_s = control_period_s
        self.soc = config.initial_soc
        self.power_w = 0.0
        self.losses_wh = 0.0

    def advance(self, setpoint_w: float, dt_s: float, max_substep_s: float = 1.0) -> None:
        """Apply ``setpoint_w`` (+ discharge / − charge, W) for ``dt_s`` seconds."""
        if dt_s <= 0 or math.isnan(setpoint_w):
            return
        steps = max(1, math.ceil(dt_s / max_substep_s))
        sub_dt = dt_s / steps
        energy_w_dt = 0.0
        for _ in range(steps):
            result = physics.step(
                self.params, np.array([self.soc]), np.array([setpoint_w / _W_PER_KW]), sub_dt
            )
            self.soc = float(result.soc[0])
            energy_w_dt += float(result.power_kw[0]) * _W_PER_KW * sub_dt
            self.losses_wh += float(result.loss_kwh[0]) * _WH_PER_KWH
        self.power_w = energy_w_dt / dt_s

    def status(self) -> FlywheelStatus:
        """The bank as its controller reports it; limits hold for one control period."""
        soc = np.array([self.soc])
        dt_s = self.control_period_s
        return FlywheelStatus(
            soc=self.soc,
            power_w=self.power_w,
            energy_available_wh=self.soc * float(self.params.capacity_kwh[0]) * _WH_PER_KWH,
            energy_rated_wh=self.config.modules * self.config.module_energy_wh,
            max_charge_w=float(physics.max_charge_kw(self.params, soc, dt_s)[0]) * _W_PER_KW,
            max_discharge_w=float(physics.max_discharge_kw(self.params, soc, dt_s)[0]) * _W_PER_KW,
            state=self._state(),
        )

    def _state(self) -> FlywheelState:
        if self.config.faulted_modules >= self.config.modules:
            return FlywheelState.FAULT
        if self.power_w > 0:
            return FlywheelState.DISCHARGING
        if self.power_w < 0:
            return FlywheelState.CHARGING
        if self.soc >= 1.0:
            return FlywheelState.FULL
        if self.soc <= 0.0:
            return FlywheelState.EMPTY
        return FlywheelState.HOLDING
