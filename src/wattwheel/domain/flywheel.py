"""Modular flywheel bank (kinetic energy storage) physics, vectorised over banks.

Model (per module, all modules of a bank identical; a faulted module contributes nothing):

* Stored kinetic energy E = ½Iω². The *usable* energy lies between ω_min and ω_max, so the
  usable state of charge is SoC = (ω² − ω_min²) / (ω_max² − ω_min²) and
  E_usable = SoC · usable_energy_kwh.
* Standby loss (bearings, windage, electronics) grows with speed; we take P_loss ∝ ω²:
  P_loss = standby_loss_fraction · rated_power_kw · (ω/ω_max)². At SoC = 0 the rotor coasts
  below the usable range and we stop tracking it (no further usable energy, no loss counted).
* Constant-torque region: below base speed ω_b = base_speed_fraction · ω_max, available power
  derates linearly with speed: P ≤ P_rated · ω/ω_b.
* Energy balance every step (charge/discharge power measured at the grid/DC bus side):
  ΔE = η_c·P_charge·dt − P_discharge·dt/η_d − P_loss(ω)·dt, with SoC kept in [0, 1].
* Response within one control period: a setpoint applies for the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

S_PER_H = 3600.0


@dataclass(frozen=True)
class FlywheelParams:
    """Flywheel bank parameters, one entry per bank (power domain). Arrays of shape (D,).

    Attributes:
        modules: installed modules per bank.
        faulted_modules: modules out of service (contribute no power, energy or loss).
        module_power_kw: rated charge/discharge power per module (kW).
        module_energy_kwh: usable energy per module between ω_min and ω_max (kWh).
        speed_min_ratio: ω_min / ω_max.
        base_speed_ratio: ω_base / ω_max, below which power derates with speed.
        charge_efficiency: η_c, grid side to rotor.
        discharge_efficiency: η_d, rotor to grid side.
        standby_loss_fraction: loss at ω_max as a fraction of module rated power.
    """

    modules: FloatArray
    faulted_modules: FloatArray
    module_power_kw: FloatArray
    module_energy_kwh: FloatArray
    speed_min_ratio: FloatArray
    base_speed_ratio: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    standby_loss_fraction: FloatArray

    @property
    def active_modules(self) -> FloatArray:
        return np.maximum(self.modules - self.faulted_modules, 0.0)

    @property
    def rated_power_kw(self) -> FloatArray:
        """Bank rated power with faulted modules removed (kW)."""
        return self.active_modules * self.module_power_kw

    @property
    def capacity_kwh(self) -> FloatArray:
        """Bank usable energy with faulted modules removed (kWh)."""
        return self.active_modules * self.module_energy_kwh

    def with_faults(self, faulted_modules: FloatArray) -> FlywheelParams:
        return FlywheelParams(
            self.modules,
            np.minimum(faulted_modules, self.modules),
            self.module_power_kw,
            self.module_energy_kwh,
            self.speed_min_ratio,
            self.base_speed_ratio,
            self.charge_efficiency,
            self.discharge_efficiency,
            self.standby_loss_fraction,
        )


def speed_ratio(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """ω/ω_max for a usable state of charge (inverts SoC = (ω² − ω_min²)/(ω_max² − ω_min²))."""
    r2 = params.speed_min_ratio**2
    return np.sqrt(r2 + np.clip(soc, 0.0, 1.0) * (1.0 - r2))


def standby_loss_kw(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """Standby loss of the bank at this SoC (kW), ∝ ω²; zero when empty (rotor coasting)."""
    w = speed_ratio(params, soc)
    loss = params.standby_loss_fraction * params.rated_power_kw * w**2
    return np.where(soc > 0.0, loss, 0.0)


def power_limit_kw(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """Speed-derated power limit (kW): rated above base speed, ∝ ω below it."""
    w = speed_ratio(params, soc)
    derate = np.minimum(1.0, w / params.base_speed_ratio)
    return params.rated_power_kw * derate


def max_discharge_kw(params: FlywheelParams, soc: FloatArray, dt_s: float) -> FloatArray:
    """Most the bank can deliver for a whole step of ``dt_s`` seconds (kW, grid side)."""
    energy_kwh = soc * params.capacity_kwh
    loss_kwh = standby_loss_kw(params, soc) * dt_s / S_PER_H
    by_energy = (
        np.maximum(energy_kwh - loss_kwh, 0.0) * params.discharge_efficiency * S_PER_H / dt_s
    )
    return np.minimum(power_limit_kw(params, soc), by_energy)


def max_charge_kw(params: FlywheelParams, soc: FloatArray, dt_s: float) -> FloatArray:
    """Most the bank can absorb for a whole step of ``dt_s`` seconds (kW, grid side)."""
    room_kwh = (1.0 - soc) * params.capacity_kwh
    loss_kwh = standby_loss_kw(params, soc) * dt_s / S_PER_H
    by_room = (room_kwh + loss_kwh) / params.charge_efficiency * S_PER_H / dt_s
    return np.minimum(power_limit_kw(params, soc), by_room)


@dataclass(frozen=True)
class FlywheelStep:
    """What one step did, per bank. Powers in kW (grid side), energies in kWh."""

    soc: FloatArray
    power_kw: FloatArray
    standby_loss_kwh: FloatArray
    conversion_loss_kwh: FloatArray
    throughput_kwh: FloatArray

    @property
    def loss_kwh(self) -> FloatArray:
        """All energy the bank lost this step: standby plus conversion (kWh)."""
        return self.standby_loss_kwh + self.conversion_loss_kwh


def step(
    params: FlywheelParams, soc: FloatArray, setpoint_kw: FloatArray, dt_s: float
) -> FlywheelStep:
    """Apply a setpoint for ``dt_s`` seconds. ``setpoint_kw`` > 0 discharges (supplies the load),
    < 0 charges. The setpoint is clipped to what the bank can do; the returned ``power_kw`` is
    what was actually exchanged."""
    dis_kw = np.minimum(np.maximum(setpoint_kw, 0.0), max_discharge_kw(params, soc, dt_s))
    chg_kw = np.minimum(np.maximum(-setpoint_kw, 0.0), max_charge_kw(params, soc, dt_s))
    capacity = params.capacity_kwh
    energy = soc * capacity
    loss = standby_loss_kw(params, soc) * dt_s / S_PER_H
    delta = (
        (params.charge_efficiency * chg_kw - dis_kw / params.discharge_efficiency) * dt_s / S_PER_H
    )
    new_energy = np.clip(energy + delta - loss, 0.0, capacity)
    # The loss actually taken is whatever the balance removed beyond the exchange.
    loss_taken = energy + delta - new_energy
    safe_cap = np.where(capacity > 0, capacity, 1.0)
    new_soc = np.where(capacity > 0, new_energy / safe_cap, 0.0)
    throughput = (dis_kw + chg_kw) * dt_s / S_PER_H
    conversion = (
        (
            chg_kw * (1.0 - params.charge_efficiency)
            + dis_kw * (1.0 / params.discharge_efficiency - 1.0)
        )
        * dt_s
        / S_PER_H
    )
    return FlywheelStep(
        new_soc, dis_kw - chg_kw, np.maximum(loss_taken, 0.0), conversion, throughput
    )
