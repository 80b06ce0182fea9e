"""The site coordination among shard processes on a fake clock and an in-memory store: shards
publish summaries, the coordinator publishes budgets, a shard runs on its budget, falls back to
its static share when the coordinator is silent, and resumes under a new coordinator. Also a
runtime: its ticks carry the budget to the policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from wattwheel.control.base import RESERVE_OFF, Observation
from wattwheel.control.registry import make_policy
from wattwheel.control.reserve_budget import BudgetGrant, ShardSummary
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.coordination import MemoryCoordinationStore, ShardCoordination
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.shards import shard_site

STATIC = {"s0": 60.0, "s1": 30.0}


def _site() -> SiteParams:
    lines = ["[site]", 'name = "coord"', "servers_per_rack = 2", "[reserve]", "capacity_kw = 90"]
    lines += ["[domain_defaults.kes]", "modules = 1", "module_power_kw = 10"]
    lines += ["module_energy_kwh = 1"]
    for d, kw in enumerate((100.0, 100.0, 100.0)):
        lines += ["[[domains]]", f'name = "d{d}"', f'racks = ["d{d}r0"]']
        lines += [f"primary_capacity_kw = {kw}"]
    config = parse_site("\n".join(lines) + "\n")
    return resolve_site(config, {f"d{d}": np.array([100.0]) for d in range(3)})


def _obs(demand_kw: list[float], critical_kw: list[float], now_s: float) -> Observation:
    d, z = np.array(demand_kw), np.zeros(len(demand_kw))
    return Observation(
        now_s, 1.0, d, np.array(critical_kw), z, z, z, z, z + 1, z, z,
        np.full(len(d), RESERVE_OFF, dtype=np.int64), z, z, z, d,
    )  # fmt: skip


@dataclass
class Shard:
    coord: ShardCoordination
    events: list[tuple[str, str]] = field(default_factory=list)
    coordinating: bool = False
    token: int = 1


def _shard(
    store: MemoryCoordinationStore,
    clock: FakeClock,
    name: str,
    domains: list[str],
    obs: Observation,
) -> Shard:
    events: list[tuple[str, str]] = []
    box: list[Shard] = []
    coord = ShardCoordination(
        store,
        clock,
        shard_site(_site(), domains),
        name,
        STATIC,
        leads_shard=lambda: True,
        coordinates=lambda: box[0].coordinating,
        token=lambda: box[0].token,
        instance_id=f"ctl-{name}",
        ttl_s=5.0,
        period_s=1.0,
        event=lambda kind, message: events.append((kind, message)),
        last_obs=lambda: obs,
    )
    box.append(Shard(coord, events))
    return box[0]


async def test_budgets_flow_fall_back_when_silent_and_resume_under_a_new_coordinator() -> None:
    clock, store = FakeClock(), MemoryCoordinationStore()
    now = clock.now_s()
    # s0 (d0, d1) is 40 kW over with 10 kW of critical load over its feeds; s1 (d2) 10 kW over.
    s0 = _shard(store, clock, "s0", ["d0", "d1"], _obs([130.0, 110.0], [110.0, 50.0], now))
    s1 = _shard(store, clock, "s1", ["d2"], _obs([110.0], [50.0], now))
    assert s0.coord.budget_kw() == 60.0 and s1.coord.budget_kw() == 30.0  # static until told
    s0.coordinating = True
    for sh in (s0, s1):
        await sh.coord.step()
    assert set(store.summary_keys) == {"s0", "s1"}
    summary = ShardSummary.from_json(store.summary_keys["s0"][0])
    assert summary.excess_kw == (40.0,) and summary.critical_over_kw == 10.0
    # s0's first grant held s1 at its static share (no summary of s1 yet); the next one has it.
    assert BudgetGrant.from_json(store.grant_key[0] if store.grant_key else "").basis == {
        "s0": "summary",
        "s1": "static",
    }
    await s0.coord.step()
    await s1.coord.step()  # s1 reads the grant s0 published
    # 10 kW of critical load first, then 80 kW split 40:10.
    assert s0.coord.budget_kw() == pytest.approx(10.0 + 64.0)
    assert s1.coord.budget_kw() == pytest.approx(16.0)
    st = s1.coord.status()
    assert st["source"] == "coordinator" and st["coordinator"] == "ctl-s0"
    assert st["version"] == "1.2"
    assert [k for k, _ in s1.events] == ["coordination.budget"]

    # The store goes silent: budgets hold until the TTL, then the static share, with an event.
    store.down = True
    for _ in range(4):
        clock.advance(1.0)
        await s1.coord.step()
    assert s1.coord.budget_kw() == pytest.approx(16.0)
    clock.advance(1.5)
    await s1.coord.step()
    assert s1.coord.budget_kw() == 30.0
    assert s1.coord.status()["source"] == "fallback"
    assert s1.events[-1][0] == "coordination.fallback" and "silent" in s1.events[-1][1]

    # s1 takes the coordinator role (token 2): s0's summary is still there, budgets resume.
    store.down = False
    s0.coordinating, s1.coordinating, s1.token = False, True, 2
    await s1.coord.step()
    await s0.coord.step()
    for sh in (s0, s1):
        assert sh.coord.status()["source"] == "coordinator"
        assert sh.coord.status()["coordinator"] == "ctl-s1"
        assert sh.coord.status()["version"] == "2.1"
    assert s1.events[-1][0] == "coordination.budget"
    assert s0.coord.budget_kw() + s1.coord.budget_kw() == pytest.approx(90.0)


async def test_a_dead_shards_static_share_is_held_for_it() -> None:
    clock, store = FakeClock(), MemoryCoordinationStore()
    now = clock.now_s()
    s1 = _shard(store, clock, "s1", ["d2"], _obs([200.0], [50.0], now))
    s1.coordinating = True
    await s1.coord.step()
    grant = BudgetGrant.from_json(store.grant_key[0] if store.grant_key else "")
    # s0 never published: it may be running on its static share, which is kept for it.
    assert grant.budgets_kw == pytest.approx({"s0": 60.0, "s1": 30.0})
    assert grant.basis == {"s0": "static", "s1": "summary"}


async def test_without_a_store_the_shard_runs_on_its_static_share() -> None:
    clock = FakeClock()
    coord = ShardCoordination(
        None, clock, shard_site(_site(), ["d2"]), "s1", STATIC,
        leads_shard=lambda: True, coordinates=lambda: True, token=lambda: 1, instance_id="x",
    )  # fmt: skip
    await coord.step()
    assert coord.budget_kw() == 30.0
    assert coord.status()["source"] == "fallback" and "no --etcd" in coord.status()["reason"]


async def test_a_runtime_tick_carries_the_budget_to_the_policy() -> None:
    site = shard_site(_site(), ["d0", "d1"])
    clock = FakeClock()
    rt = Runtime(
        site,
        make_policy("reactive", site),
        Devices(),
        default_inventory(site, 100.0, 2_000.0),
        clock,
        config=RuntimeConfig(control_period_s=1.0),
    )
    rt.reserve_budget = lambda: 12.5
    report = await rt.tick()
    assert report.observation.reserve_budget_kw == 12.5
    assert rt.last_obs is not None and rt.last_obs.reserve_budget_kw == 12.5
    assert float(report.decision.reserve_kw.sum()) <= 12.5 + 1e-9
