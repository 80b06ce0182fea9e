"""Adding (or removing) servers to a site's replayed load, for capacity planning.

A *server* is the capacity unit: each rack of the trace holds ``servers_per_rack`` servers, so
a site replayed on R trace racks hosts ``R * servers_per_rack`` servers at its baseline.

Growing the site by ``n`` servers adds load drawn from real traces (``method="traces"``): the
new servers of a domain fill new racks one after the other, and new rack ``j`` of domain ``d``
replays a *donor* rack - one of the trace's racks in *other* domains (the domain's own racks when
there is no other), taken in turn - circularly shifted in time by ``1 + j // donors`` whole days
(by whole hours on a trace shorter than two days). Each server draws ``1 / servers_per_rack`` of
its donor rack's power. The new load therefore has the real shape, size and noise of the site's
racks, but its peaks do not fall exactly on the existing ones (another PDU, another day), as
they would not for real new racks.

``method="naive"`` multiplies the existing racks instead (every server's load is the rack's
average server), so every added watt peaks exactly with the existing load: a pessimistic bound
that the docs compare against.

Below the baseline (``n < 0``) both methods scale the existing load down proportionally
(removing servers at random from every rack).

The critical share of the new load follows the donor rack's (``critical_w`` in the trace) or the
site's ``noncritical_fraction``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError
from wattwheel.sim.scenario import Scenario

FloatArray = NDArray[np.float64]
GrowthMethod = Literal["traces", "naive"]
GROWTH_METHODS: tuple[GrowthMethod, ...] = ("traces", "naive")
DAY_S = 86400.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class DonorRack:
    """Where one new rack's load comes from: a trace rack, shifted by ``shift_steps``."""

    rack: int
    shift_steps: int


def baseline_servers(scenario: Scenario, servers_per_rack: int) -> int:
    """Servers the site hosts on its trace: racks times servers per rack."""
    return sum(len(r) for r in scenario.site.domain_racks) * servers_per_rack


def domain_servers(scenario: Scenario, servers_per_rack: int) -> list[int]:
    return [len(r) * servers_per_rack for r in scenario.site.domain_racks]


def split_servers(baseline: list[int], total: int) -> list[int]:
    """Share ``total`` servers among domains in proportion to their baseline (largest
    remainders, ties to the earlier domain), so the site grows evenly."""
    base_total = sum(baseline)
    if base_total <= 0:
        raise ConfigError("servers_per_rack", base_total, "the site hosts no servers")
    exact = [b * total / base_total for b in baseline]
    out = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def donor_plan(scenario: Scenario, domain: int, new_racks: int) -> list[DonorRack]:
    """The donor rack and time shift of each new rack of ``domain`` (module docstring)."""
    trace = scenario.trace
    own = set(scenario.site.domain_racks[domain])
    others = [i for i, r in enumerate(trace.rack_ids) if r not in own]
    donors = others or [trace.rack_index(r) for r in scenario.site.domain_racks[domain]]
    n_steps = trace.n_steps
    dt = trace.step_s
    unit_s = DAY_S if n_steps * dt >= 2 * DAY_S else HOUR_S
    plan = []
    for j in range(new_racks):
        k = 1 + j // len(donors)
        shift = int(round(k * unit_s / dt)) % n_steps
        if shift == 0:  # a shift that wraps onto itself would replay the donor unshifted
            shift = (k * max(int(round(HOUR_S / dt)), 1)) % n_steps or 1
        plan.append(DonorRack(donors[j % len(donors)], shift))
    return plan


def grown_scenario(
    scenario: Scenario, total_servers: int, servers_per_rack: int, method: GrowthMethod
) -> Scenario:
    """``scenario`` with ``total_servers`` servers instead of its baseline; the site (feeds,
    flywheels, reserve) is unchanged."""
    if method not in GROWTH_METHODS:
        raise ConfigError("growth", method, f"must be one of {', '.join(GROWTH_METHODS)}")
    if total_servers < 0:
        raise ConfigError("servers", total_servers, "must be >= 0")
    base = domain_servers(scenario, servers_per_rack)
    target = split_servers(base, total_servers)
    demand = scenario.demand_kw.copy()
    critical = scenario.critical_kw.copy()
    for d, (b, n) in enumerate(zip(base, target, strict=True)):
        if n <= b or method == "naive":
            scale = n / b
            demand[:, d] *= scale
            critical[:, d] *= scale
            continue
        add_kw, add_crit_kw = _added_load(scenario, d, n - b, servers_per_rack)
        demand[:, d] += add_kw
        critical[:, d] += add_crit_kw
    return dataclasses.replace(scenario, demand_kw=demand, critical_kw=critical)


def _added_load(
    scenario: Scenario, domain: int, extra: int, servers_per_rack: int
) -> tuple[FloatArray, FloatArray]:
    """(added demand, added critical demand) in kW for ``extra`` new servers of ``domain``."""
    trace = scenario.trace
    racks = -(-extra // servers_per_rack)
    added = np.zeros(trace.n_steps)
    added_crit = np.zeros(trace.n_steps)
    noncritical = float(scenario.site.flex.noncritical_fraction[domain])
    for j, donor in enumerate(donor_plan(scenario, domain, racks)):
        servers = min(servers_per_rack, extra - j * servers_per_rack)
        share = servers / servers_per_rack
        power_kw = np.roll(trace.power_w[:, donor.rack], donor.shift_steps) / 1000.0
        added += share * power_kw
        if trace.critical_w is not None:
            added_crit += share * np.roll(trace.critical_w[:, donor.rack], donor.shift_steps) / 1e3
        else:
            added_crit += share * power_kw * (1.0 - noncritical)
    return added, added_crit
