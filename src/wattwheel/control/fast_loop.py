"""The fast safety loop (DESIGN §2), shared by every active policy.

Each control period: if actual demand exceeds primary capacity, discharge the flywheel, then
use the reserve if it is already delivering, then cap non-critical load (never below its floor,
never critical load), and ask for the reserve for whatever is left. Below capacity, recharge
the flywheel toward the planner's SoC target within the headroom, and repay deferred work.
It needs no forecast: with none (or a stale one) this *is* the reactive policy.

The reserve (the seed's rule, DESIGN §8): a plan that expects to need it (``reserve_arm``) only
*pre-warms* it. It is *started* when the plan expects it **and** measured demand exceeds
primary + flywheel + shifted capacity (what is left after the flywheel with the shifts in
force), or - safety wins - when load is left uncovered even after capping to the floor
(the breaker would heat), whatever the plan says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_ON, Decision, Observation, reserve_capacity_kw
from wattwheel.domain import flywheel
from wattwheel.domain.reserve import is_running
from wattwheel.domain.site import SiteParams

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
S_PER_H = 3600.0
#: Under a grid ramp limit the bank holds this SoC (room to absorb swings both ways)...
RAMP_SOC_TARGET = 0.5
#: ...and drifts back to it at no more than this share of its rated power.
RAMP_RECOVERY_SHARE = 0.05
#: Time constant of the grid reference that follows demand under a ramp limit (s).
RAMP_FILTER_TAU_S = 60.0
#: Grid reference shift per unit of SoC error, as a share of the bank's rated power.
RAMP_SOC_GAIN = 0.5


def default_soc_target(site: SiteParams) -> float:
    """Full when the bank only rides through excesses; half-full under a ramp limit."""
    return 1.0 if site.max_grid_ramp_kw_per_s is None else RAMP_SOC_TARGET


@dataclass(frozen=True)
class Targets:
    """What the planning loop asks of the fast loop for this period (arrays (D,))."""

    soc_target: FloatArray
    #: The plan expects the reserve: pre-warm it; start it only on a measured excess too.
    reserve_arm: BoolArray
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    defer_kw: FloatArray
    repay_kw: FloatArray
    #: The plan expects the reserve soon (e.g. next block): pre-warm it only.
    reserve_prewarm: BoolArray | None = None

    @staticmethod
    def reactive(n_domains: int, soc_target: float = 1.0) -> Targets:
        z = np.zeros(n_domains)
        return Targets(
            np.full(n_domains, soc_target),
            np.zeros(n_domains, dtype=bool),
            z,
            z.copy(),
            z.copy(),
            z.copy(),
        )


def cap_limit_kw(site: SiteParams, obs: Observation, defer_kw: FloatArray) -> FloatArray:
    """Most non-critical load that may be capped now: down to its floor, never critical."""
    movable = np.maximum(obs.noncritical_kw - obs.shift_out_kw - defer_kw, 0.0)
    return movable * (1.0 - site.flex.cap_floor_fraction)


def safety_loop(site: SiteParams, obs: Observation, targets: Targets) -> Decision:
    """One period of the fast loop. Pure; vectorised over domains.

    A domain whose reading is stale or not finite is held safe: the flywheel floats (0 kW),
    nothing new is capped beyond an operator pin, a running reserve stays on, and its numbers
    never reach the other domains' decisions."""
    n = site.n_domains
    obs, bad = _sanitised(site, obs)
    allowed = _reserve_allowed(obs)
    movable = np.maximum(obs.noncritical_kw - obs.shift_out_kw, 0.0)
    defer_kw = np.clip(targets.defer_kw, 0.0, movable)
    net_kw = obs.demand_kw - obs.shift_out_kw + obs.shift_in_kw + obs.due_repay_kw - defer_kw
    # A nearly empty bank draws its hold power whatever it is told: it is load on the feed.
    hold = np.zeros(n) if obs.kes_hold_kw is None else np.where(bad, 0.0, obs.kes_hold_kw)
    excess = net_kw + hold - site.primary_kw
    over = excess > 0

    dis = np.where(over, np.minimum(excess, obs.kes_max_discharge_kw), 0.0)
    rem = np.where(over, excess - dis, 0.0)
    cap_max = cap_limit_kw(site, obs, defer_kw)
    # A reserve already delivering is paid for: use it before capping work. The shared room
    # goes first to what nothing else can cover (beyond the cap limit), in every domain.
    live = (obs.reserve_mode == RESERVE_ON) & allowed
    must = np.where(allowed, np.maximum(rem - cap_max, 0.0), 0.0)
    want = np.where(live, rem, must)
    res_kw = _coordinate_reserve(reserve_capacity_kw(site, obs), want, must)
    delivering = np.where(live, res_kw, 0.0)
    cap = _apply_pins(obs, net_kw, np.minimum(rem - delivering, cap_max), cap_max)
    left = np.maximum(rem - delivering - cap, 0.0)

    headroom = np.where(over, 0.0, -excess)
    chg, dis_down = _recharge(site, obs, targets.soc_target, headroom, np.maximum(net_kw, 0.0))
    repay = np.minimum(np.maximum(targets.repay_kw, 0.0), np.maximum(headroom - chg, 0.0))
    kes_kw = np.where(over, dis, dis_down - chg)
    kes_kw = _ramp_limit(site, obs, net_kw + repay - delivering - cap, kes_kw, targets.soc_target)

    running = is_running(obs.reserve_mode)
    # Predicted (armed by the plan) and actual excess beyond flywheel and shifts; or safety.
    planned = targets.reserve_arm & (rem > 1e-9)
    want_reserve = planned | (left > 1e-9) | (live & (rem > 1e-9)) | (bad & running)
    reserve_on = _reserve_overrides(obs, want_reserve)
    res_kw = np.where(reserve_on, res_kw, 0.0)
    expected = targets.reserve_arm
    if targets.reserve_prewarm is not None:
        expected = expected | targets.reserve_prewarm
    warm = expected & allowed & ~bad
    kes_kw = np.where(bad, 0.0, kes_kw)
    return Decision(
        kes_kw=kes_kw,
        cap_kw=cap,
        reserve_on=reserve_on,
        reserve_kw=res_kw,
        shift_out_kw=np.where(bad, 0.0, targets.shift_out_kw),
        shift_in_kw=np.where(bad, 0.0, targets.shift_in_kw),
        defer_kw=defer_kw,
        repay_kw=repay,
        soc_target=targets.soc_target.copy(),
        reasons=_reasons(n, excess, dis, res_kw, cap, left, chg, targets, bad),
        reserve_warm=warm,
    )


def _sanitised(site: SiteParams, obs: Observation) -> tuple[Observation, BoolArray]:
    """Replace stale or non-finite readings by a neutral domain: at primary capacity, all of it
    critical, flywheel limits zero (so no discharge, charge or cap is decided from garbage)."""
    bad = ~np.isfinite(obs.demand_kw) | ~np.isfinite(obs.critical_kw)
    if obs.stale is not None:
        bad = bad | obs.stale
    if not bad.any():
        return obs, bad
    clean = dataclasses.replace(
        obs,
        demand_kw=np.where(bad, site.primary_kw, obs.demand_kw),
        critical_kw=np.where(bad, site.primary_kw, obs.critical_kw),
        shift_out_kw=np.where(bad, 0.0, obs.shift_out_kw),
        shift_in_kw=np.where(bad, 0.0, obs.shift_in_kw),
        due_repay_kw=np.where(bad, 0.0, obs.due_repay_kw),
        kes_max_discharge_kw=np.where(bad, 0.0, obs.kes_max_discharge_kw),
        kes_max_charge_kw=np.where(bad, 0.0, obs.kes_max_charge_kw),
        kes_soc=np.where(np.isfinite(obs.kes_soc), obs.kes_soc, 0.0),
        last_grid_kw=np.where(np.isfinite(obs.last_grid_kw), obs.last_grid_kw, site.primary_kw),
    )
    return clean, bad


def _reserve_allowed(obs: Observation) -> BoolArray:
    if obs.reserve_override is None:
        return np.ones(obs.demand_kw.shape[0], dtype=bool)
    allowed: BoolArray = obs.reserve_override >= 0
    return allowed


def _coordinate_reserve(
    capacity_kw: float,
    want_kw: FloatArray,
    must_kw: FloatArray,
    already_kw: FloatArray | None = None,
) -> FloatArray:
    """Share the site reserve: what cannot be covered otherwise first, then the rest in
    proportion to what is asked."""
    used = 0.0 if already_kw is None else float(already_kw.sum())
    room = max(capacity_kw - used, 0.0)
    must = np.minimum(np.maximum(must_kw, 0.0), want_kw)
    alloc = _share(must, room)
    rest = np.maximum(want_kw - alloc, 0.0)
    return alloc + _share(rest, room - float(alloc.sum()))


def _share(want_kw: FloatArray, room_kw: float) -> FloatArray:
    total = float(want_kw.sum())
    if total <= room_kw or total <= 0:
        return want_kw.copy()
    return want_kw * (max(room_kw, 0.0) / total)


def _apply_pins(
    obs: Observation, load_kw: FloatArray, cap: FloatArray, cap_max: FloatArray
) -> FloatArray:
    """An operator pin is the most a domain may draw: cap what its load exceeds it by, but never
    into critical load (``cap_max``)."""
    if obs.pinned_cap_kw is None:
        return cap
    over_pin = np.where(np.isnan(obs.pinned_cap_kw), 0.0, load_kw - obs.pinned_cap_kw)
    return np.maximum(cap, np.minimum(np.maximum(over_pin, 0.0), cap_max))


def _recharge(
    site: SiteParams,
    obs: Observation,
    soc_target: FloatArray,
    headroom_kw: FloatArray,
    load_kw: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Charge toward the target within headroom; above the target, give energy back to the
    load (it lowers grid draw, and a slower rotor loses less)."""
    kes = site.kes
    dt_h = obs.dt_s / S_PER_H
    # The standby loss of this period comes off too: aim at the target *after* it.
    standby_kwh = flywheel.standby_loss_kw(kes, obs.kes_soc) * dt_h
    gap_kwh = (soc_target - obs.kes_soc) * kes.capacity_kwh + standby_kwh
    chg_rate = np.maximum(gap_kwh, 0.0) / kes.charge_efficiency / dt_h
    if site.max_grid_ramp_kw_per_s is not None:
        # Under a ramp limit the bank is a buffer both ways: drift back to target gently so
        # the correction itself does not become a ramp.
        gentle = RAMP_RECOVERY_SHARE * kes.rated_power_kw
        chg_rate = np.minimum(chg_rate, gentle)
    chg = np.minimum(np.minimum(chg_rate, obs.kes_max_charge_kw), headroom_kw)
    dis_rate = np.maximum(-gap_kwh, 0.0) * kes.discharge_efficiency / dt_h
    if site.max_grid_ramp_kw_per_s is not None:
        dis_rate = np.minimum(dis_rate, RAMP_RECOVERY_SHARE * kes.rated_power_kw)
    # Never more than the load draws: the bank supplies the load, it does not export.
    dis = np.minimum(np.minimum(dis_rate, obs.kes_max_discharge_kw), load_kw)
    return np.maximum(chg, 0.0), np.maximum(dis, 0.0)


def _ramp_limit(
    site: SiteParams,
    obs: Observation,
    grid_before_kes_kw: FloatArray,
    kes_kw: FloatArray,
    soc_target: FloatArray,
) -> FloatArray:
    """Under a grid ramp limit the flywheel makes the grid follow a smoothed demand.

    The grid reference moves from last period's draw toward the load by a first-order filter
    (time constant ``RAMP_FILTER_TAU_S``), nudged by the SoC error so the bank drifts back to
    its target, then clipped to the ramp limit and to primary capacity; the flywheel supplies
    or absorbs the difference. Without a limit the setpoint is returned unchanged."""
    ramp = site.max_grid_ramp_kw_per_s
    if ramp is None:
        return kes_kw
    last = obs.last_grid_kw
    alpha = min(1.0, obs.dt_s / RAMP_FILTER_TAU_S)
    reference = last + alpha * (grid_before_kes_kw - last)
    reference += RAMP_SOC_GAIN * (soc_target - obs.kes_soc) * site.kes.rated_power_kw
    step = ramp * obs.dt_s
    grid = np.clip(reference, last - step, np.minimum(last + step, site.primary_kw))
    # Safety wins: never leave more on the feed than primary capacity can carry.
    grid = np.minimum(grid, site.primary_kw)
    # The bank supplies the load; it does not export to the grid.
    grid = np.maximum(grid, np.minimum(0.0, grid_before_kes_kw))
    want = grid_before_kes_kw - grid
    return np.clip(want, -obs.kes_max_charge_kw, obs.kes_max_discharge_kw)


def _reserve_overrides(obs: Observation, want: BoolArray) -> BoolArray:
    if obs.reserve_override is None:
        return want
    forced = obs.reserve_override > 0
    forbidden = obs.reserve_override < 0
    return (want | forced) & ~forbidden


def _reasons(
    n: int,
    excess: FloatArray,
    dis: FloatArray,
    res_kw: FloatArray,
    cap: FloatArray,
    left: FloatArray,
    chg: FloatArray,
    targets: Targets,
    bad: BoolArray,
) -> tuple[str, ...]:
    out = []
    for d in range(n):
        if bad[d]:
            out.append("reading stale or invalid: flywheel floats, caps held, reserve kept")
            continue
        if excess[d] > 0:
            text = f"over primary by {excess[d]:.1f} kW: KES {dis[d]:.1f}"
            text += f", reserve {res_kw[d]:.1f}, cap {cap[d]:.1f}"
            if left[d] > 1e-6:
                text += f", {left[d]:.1f} kW waits for reserve start"
        else:
            text = f"headroom {-excess[d]:.1f} kW: charge KES {chg[d]:.1f} toward SoC "
            text += f"{targets.soc_target[d]:.2f}"
        if targets.reserve_arm[d]:
            text += "; reserve pre-warmed by plan"
        out.append(text)
    return tuple(out)
