"""Modular flywheel bank (kinetic energy storage) physics, vectorised over banks.

Model (per module, all modules of a bank identical; a faulted module contributes nothing):

* Stored kinetic energy E = ½Iω². The *usable* energy lies between ω_min and ω_max, so the
  usable state of charge is SoC = (ω² − ω_min²) / (ω_max² − ω_min²) and
  E_usable = SoC · usable_energy_kwh.
* Standby loss = a speed-independent part plus a speed-dependent part:

      P_loss(ω) = f · P_rated · [ s + (1 − s) · (ω/ω_max)² ]

  with f = ``standby_loss_fraction`` (the whole standby loss at ω_max, as a share of rated
  power) and s = ``standby_fixed_share`` (the share of it that does not depend on speed).
  The constant part is the vacuum pump, the magnetic-bearing controller, cooling and the
  power electronics kept energised: auxiliaries on the site's supply whatever the speed
  (the FESS hardware overviews list them as grid-connected auxiliaries; e.g. Hedlund et al.,
  "Flywheel Energy Storage for Automotive Applications", Energies 8 (2015) 10636). The
  speed-dependent part is rotor drag - windage in the residual gas and bearing friction -
  which rises with speed (Energies 13 (2020) 4441 analyses both for a vacuum-enclosed rotor);
  we take it ∝ ω², a first model that makes the loss affine in stored energy
  (ω²/ω_max² = r² + SoC·(1 − r²), r = ω_min/ω_max), so the planner's LP carries it exactly.
  Windage is closer to ω^2.5-ω^3 and bearing friction to ω, so the ω² part is an
  approximation; the figures in the bundled site files are assumptions of that order
  (about 1 % of rated power at full speed), not one vendor's datasheet.
* At SoC 0 the rotor still turns at ω_min and still loses P_loss(ω_min) > 0. The bank never
  *parks* (spins down below ω_min or stops): its motor holds ω_min by drawing the standby
  loss from the feed (``hold`` power, metered as charging and as loss). Parking is forbidden
  rather than modelled because a stopped rotor needs minutes to spin back up through the
  derated region and a UPS-class bank must be ready in milliseconds; a controller that parks
  rotors would need an explicit spin-down/spin-up model, which this one does not offer.
* Constant-torque region: below base speed ω_b = base_speed_fraction · ω_max, available power
  derates linearly with speed: P ≤ P_rated · ω/ω_b.
* Energy balance every step (charge/discharge power measured at the grid/DC bus side):
  ΔE = η_c·P_charge·dt − P_discharge·dt/η_d − P_loss(ω)·dt, with SoC kept in [0, 1]
  (explicit in the loss: the rate at the start of the step, or the rate passed in, applies
  for the whole step - what the planner's block model also assumes).
* Response within one control period: a setpoint applies for the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        standby_loss_fraction: whole standby loss at ω_max as a fraction of rated power.
        standby_fixed_share: the share of that loss that does not depend on speed (vacuum
            pump, bearing controller, cooling, electronics); the rest is ∝ ω².
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
    standby_fixed_share: FloatArray = field(default_factory=lambda: np.zeros(1))

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
            self.standby_fixed_share,
        )


def speed_ratio(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """ω/ω_max for a usable state of charge (inverts SoC = (ω² − ω_min²)/(ω_max² − ω_min²))."""
    r2 = params.speed_min_ratio**2
    return np.sqrt(r2 + np.clip(soc, 0.0, 1.0) * (1.0 - r2))


def standby_loss_coefficients(params: FlywheelParams) -> tuple[FloatArray, FloatArray]:
    """The standby loss as an affine function of usable stored energy E (kWh):
    P_loss = ``per_kwh`` · E + ``constant_kw``. The constant part is what the bank loses at
    ω_min (SoC 0): the fixed auxiliaries plus the ω² drag at minimum speed."""
    r2 = params.speed_min_ratio**2
    full = params.standby_loss_fraction * params.rated_power_kw
    fixed = params.standby_fixed_share
    cap = np.where(params.capacity_kwh > 0, params.capacity_kwh, 1.0)
    per_kwh: FloatArray = np.where(
        params.capacity_kwh > 0, full * (1.0 - fixed) * (1.0 - r2) / cap, 0.0
    )
    constant: FloatArray = full * (fixed + (1.0 - fixed) * r2)
    return per_kwh, constant


def standby_loss_kw(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """Standby loss of the bank at this SoC (kW): fixed part plus the ω² part. Not zero at
    SoC 0 - the rotor still turns at ω_min."""
    w = speed_ratio(params, soc)
    fixed = params.standby_fixed_share
    loss: FloatArray = (
        params.standby_loss_fraction * params.rated_power_kw * (fixed + (1.0 - fixed) * w**2)
    )
    return loss


def hold_kw(
    params: FlywheelParams, soc: FloatArray, dt_s: float, standby_kw: FloatArray | None = None
) -> FloatArray:
    """Grid power the bank must draw over ``dt_s`` to hold its rotors at ω_min when its stored
    energy cannot cover the standby loss (kW, grid side; 0 unless nearly empty)."""
    loss_kwh = (standby_loss_kw(params, soc) if standby_kw is None else standby_kw) * dt_s / S_PER_H
    short_kwh = np.maximum(loss_kwh - soc * params.capacity_kwh, 0.0)
    held: FloatArray = short_kwh / params.charge_efficiency * S_PER_H / dt_s
    return held


def power_limit_kw(params: FlywheelParams, soc: FloatArray) -> FloatArray:
    """Speed-derated power limit (kW): rated above base speed, ∝ ω below it."""
    w = speed_ratio(params, soc)
    derate = np.minimum(1.0, w / params.base_speed_ratio)
    return params.rated_power_kw * derate


def _standby(params: FlywheelParams, soc: FloatArray, standby_kw: FloatArray | None) -> FloatArray:
    return standby_loss_kw(params, soc) if standby_kw is None else standby_kw


def max_discharge_kw(
    params: FlywheelParams, soc: FloatArray, dt_s: float, standby_kw: FloatArray | None = None
) -> FloatArray:
    """Most the bank can deliver for a whole step of ``dt_s`` seconds (kW, grid side).
    ``standby_kw`` is the loss rate to assume (default: the rate at ``soc``)."""
    energy_kwh = soc * params.capacity_kwh
    loss_kwh = _standby(params, soc, standby_kw) * dt_s / S_PER_H
    by_energy = (
        np.maximum(energy_kwh - loss_kwh, 0.0) * params.discharge_efficiency * S_PER_H / dt_s
    )
    return np.minimum(power_limit_kw(params, soc), by_energy)


def max_charge_kw(
    params: FlywheelParams, soc: FloatArray, dt_s: float, standby_kw: FloatArray | None = None
) -> FloatArray:
    """Most the bank can absorb for a whole step of ``dt_s`` seconds (kW, grid side)."""
    room_kwh = (1.0 - soc) * params.capacity_kwh
    loss_kwh = _standby(params, soc, standby_kw) * dt_s / S_PER_H
    by_room = (room_kwh + loss_kwh) / params.charge_efficiency * S_PER_H / dt_s
    return np.minimum(power_limit_kw(params, soc), by_room)


@dataclass(frozen=True)
class FlywheelStep:
    """What one step did, per bank. Powers in kW (grid side; < 0 is drawn from the feed,
    including the hold power of an empty bank), energies in kWh."""

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
    params: FlywheelParams,
    soc: FloatArray,
    setpoint_kw: FloatArray,
    dt_s: float,
    standby_kw: FloatArray | None = None,
) -> FlywheelStep:
    """Apply a setpoint for ``dt_s`` seconds. ``setpoint_kw`` > 0 discharges (supplies the load),
    < 0 charges. The setpoint is clipped to what the bank can do; the returned ``power_kw`` is
    what was actually exchanged. Where the standby loss would take the rotor below ω_min, the
    motor holds ω_min by drawing the missing energy from the feed (the bank never parks).
    ``standby_kw`` fixes the loss rate (a step split into parts keeps its start-of-step rate)."""
    loss_kw = _standby(params, soc, standby_kw)
    dis_kw = np.minimum(np.maximum(setpoint_kw, 0.0), max_discharge_kw(params, soc, dt_s, loss_kw))
    chg_kw = np.minimum(np.maximum(-setpoint_kw, 0.0), max_charge_kw(params, soc, dt_s, loss_kw))
    capacity = params.capacity_kwh
    energy = soc * capacity
    dt_h = dt_s / S_PER_H
    loss = loss_kw * dt_h
    delta = (params.charge_efficiency * chg_kw - dis_kw / params.discharge_efficiency) * dt_h
    # Holding ω_min: what the loss would take below it comes from the feed through the motor.
    hold_kwh = np.maximum(-(energy + delta - loss), 0.0)
    chg_kw = chg_kw + hold_kwh / params.charge_efficiency / dt_h
    delta = delta + hold_kwh
    new_energy = np.clip(energy + delta - loss, 0.0, capacity)
    # The loss actually taken is whatever the balance removed beyond the exchange.
    loss_taken = energy + delta - new_energy
    safe_cap = np.where(capacity > 0, capacity, 1.0)
    new_soc = np.where(capacity > 0, new_energy / safe_cap, 0.0)
    throughput = (dis_kw + chg_kw) * dt_h
    conversion = (
        chg_kw * (1.0 - params.charge_efficiency)
        + dis_kw * (1.0 / params.discharge_efficiency - 1.0)
    ) * dt_h
    return FlywheelStep(
        new_soc, dis_kw - chg_kw, np.maximum(loss_taken, 0.0), conversion, throughput
    )
