"""The live loop under leader election (single process, :class:`FakeElector`): it writes only
to the shards it leads, sends shared commands (reserve, scheduler) only as site coordinator,
rewrites everything of a shard it is promoted to, writes nothing when demoted, and tags each
audit row with its role and fencing token."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from wattwheel.cli.live_wiring import Leadership, build_leadership, shard_map
from wattwheel.control.registry import make_policy
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.fakes import (
    FakeCapActuator,
    FakeFlywheel,
    FakeOutletActuator,
    FakeServerTelemetry,
)
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.leader import COORDINATOR, Elector, FakeElector
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.ports import ReserveStatus
from wattwheel.runtime.state import LiveState, Overrides

SITE = """
[site]
name = "t"
plan_period_s = 60
servers_per_rack = 4
[reserve]
capacity_kw = 50
start_delay_s = 10
min_on_s = 60
[domain_defaults.kes]
modules = 1
module_power_kw = 20
module_energy_kwh = 1
[domain_defaults.flex]
noncritical_fraction = 0.5
cap_floor_fraction = 0.5
[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100
[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
"""
# A: 130 kW on a 100 kW feed (the flywheel covers 20 kW, caps the rest); B: 80 kW, fine.
SERVERS = {
    **{f"a1-s0{i}": ("a1", w) for i, w in enumerate([35e3, 35e3, 30e3, 30e3], 1)},
    **{f"b1-s0{i}": ("b1", 20e3) for i in range(1, 5)},
}


class RecordingReserve:
    """A reserve that is off and records every command."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, bool, float]] = []

    async def read(self) -> dict[str, ReserveStatus]:
        return {d: ReserveStatus(0, 0.0, 0.0, 0.0) for d in ("A", "B")}

    async def command(self, domain_id: str, on: bool, power_kw: float, warm: bool = False) -> bool:
        self.commands.append((domain_id, on, power_kw))
        return True


class Rig:
    def __init__(self, rewrite_per_tick: int = 32) -> None:
        self.site: SiteParams = resolve_site(
            parse_site(SITE), {"A": np.array([100.0]), "B": np.array([100.0])}
        )
        self.clock = FakeClock(real_monotonic=True)
        self.bmc = FakeServerTelemetry(dict(SERVERS), now_s=self.clock.now_s())
        self.caps = FakeCapActuator()
        self.outlets = FakeOutletActuator()
        self.reserve = RecordingReserve()
        self.fly = {d: FakeFlywheel(max_discharge_w=20e3, max_charge_w=20e3) for d in "AB"}
        devices = Devices(
            telemetry={"bmc": self.bmc},
            caps=self.caps,
            outlets=self.outlets,
            flywheels=self.fly,
            reserve=self.reserve,
        )
        self.lead, _ = build_leadership(
            self.site.name, shard_map(self.site.domain_names), self.clock, instance_id="i1"
        )
        self.rt = Runtime(
            self.site,
            make_policy("reactive", self.site),
            devices,
            default_inventory(self.site, min_cap_w=1_000.0, max_cap_w=50_000.0),
            self.clock,
            LiveState(self.site.domain_names),
            Overrides(),
            config=RuntimeConfig(device_timeout_s=0.2, rewrite_per_tick=rewrite_per_tick),
        )
        self.lead.attach(self.rt)

    @property
    def elector(self) -> FakeElector:
        assert isinstance(self.lead.elector, FakeElector)
        return self.lead.elector

    async def tick(self) -> None:
        await self.rt.tick()
        self.clock.advance(1.0)
        self.bmc.now_s = self.clock.now_s()


async def test_a_demoted_shard_gets_no_write_and_a_promoted_one_is_rewritten() -> None:
    rig = Rig()
    assert isinstance(rig.lead, Leadership)
    rig.elector.demote("A")
    await rig.tick()
    assert rig.caps.caps_w == {} and rig.fly["A"].setpoints_w == []
    assert rig.fly["B"].setpoints_w, "B is still led: its flywheel is commanded"
    # What a predecessor left on A: a cap on a server that needs none now, an outlet off.
    rig.caps.caps_w["a1-s01"] = 5_000.0
    rig.outlets.off.add("a1/3")
    writes_before = rig.caps.writes
    rig.elector.promote("A")
    await rig.tick()
    assert rig.fly["A"].setpoints_w == [pytest.approx(20_000.0)]
    # Every server of A rewritten once: the stray cap lifted, the needed ones set.
    assert rig.caps.writes - writes_before == 4
    assert set(rig.caps.caps_w) == {"a1-s03", "a1-s04"}
    # Outlets of A may have been shed by the predecessor: switched back on (A has headroom
    # once capped and the breaker is cool).
    assert "a1/3" not in rig.outlets.off
    events = [e.message for e in rig.rt.state.recent_events() if e.kind == "leader.promote"]
    assert any("shard A" in m and "fencing token" in m for m in events)
    await rig.tick()
    assert rig.caps.writes - writes_before == 4, "rewritten once, not every tick"


async def test_a_promotion_rewrites_a_few_unknown_caps_per_tick() -> None:
    rig = Rig(rewrite_per_tick=1)
    rig.elector.demote("A")
    await rig.tick()
    rig.elector.promote("A")
    before = rig.caps.writes
    await rig.tick()  # the two caps A needs, plus one unknown server rewritten (lifted)
    assert rig.caps.writes - before == 3
    await rig.tick()  # the last unknown one
    assert rig.caps.writes - before == 4
    await rig.tick()
    assert rig.caps.writes - before == 4


async def test_demotion_writes_nothing_not_even_a_release() -> None:
    rig = Rig()
    await rig.tick()
    caps_before, writes_before = dict(rig.caps.caps_w), rig.caps.writes
    setpoints_before = {d: list(f.setpoints_w) for d, f in rig.fly.items()}
    for role in ("A", "B", COORDINATOR):
        rig.elector.demote(role, "lease not renewed in time")
    rig.bmc.demand_w = {sid: (rack, 10e3) for sid, (rack, _) in SERVERS.items()}  # load drops
    await rig.tick()
    assert rig.caps.writes == writes_before and rig.caps.caps_w == caps_before
    assert {d: f.setpoints_w for d, f in rig.fly.items()} == setpoints_before
    assert any(e.kind == "leader.demote" for e in rig.rt.state.recent_events())


async def test_reserve_is_commanded_by_the_coordinator_only() -> None:
    rig = Rig()
    rig.rt.overrides.set_reserve("A", "force", "op", "test", rig.clock.now_s())
    rig.elector.demote(COORDINATOR)
    await rig.tick()
    assert not rig.reserve.commands, "leading both shards is not enough"
    rig.elector.promote(COORDINATOR)
    rig.elector.demote("A")
    rig.elector.demote("B")
    cap_writes = rig.caps.writes
    await rig.tick()
    assert ("A", True) in {(d, on) for d, on, _ in rig.reserve.commands}
    assert rig.caps.writes == cap_writes, "the coordinator alone writes no shard's caps"


async def test_audit_rows_name_the_role_and_fencing_token() -> None:
    rig = Rig()
    rig.elector.demote("B")
    await rig.tick()
    rows = {r.domain_id: r.reason for r in rig.rt.state.recent_decisions(2)}
    token = rig.elector.fencing_token("A")
    assert rows["A"].endswith(f"[leader A token {token}]")
    assert rows["B"].endswith("[follower of B]")


async def test_a_single_instance_says_when_it_cannot_command_a_shard() -> None:
    rig = Rig()
    rig.lead.resign_after_s = 0.0  # the rig's monotonic clock is real: count writes only
    rig.fly["A"].dead = True  # its link is wedged: every setpoint write fails
    for _ in range(Leadership.resign_after_failures + 2):
        await rig.tick()
    said = [e for e in rig.rt.state.recent_events() if e.kind == "leader.cannot_command"]
    assert len(said) == 1, "once per streak, not every tick"
    assert "shard A" in said[0].message and "failed" in said[0].message
    assert rig.elector.is_leader("A"), "nobody to hand over to: it keeps leading"


def test_command_failures_of_a_shard_make_its_leader_resign() -> None:
    clock = FakeClock(0.0)
    lead = Leadership({"A": "row", "B": "row", "C": "other"}, clock)
    resigned: list[tuple[str, float, str]] = []

    class Stub(Elector):
        def __init__(self) -> None:  # no store: only resign() is used here
            pass

        async def resign(self, role: str, hold_off_s: float, reason: str) -> bool:
            resigned.append((role, hold_off_s, reason))
            return True

    async def go() -> None:
        lead.elector = Stub()
        for ok in (False, False, False, True):  # a success resets the streak
            lead.command_result("A", ok)
            clock.advance(2.0)
        for _ in range(10):  # a burst of failures within a second: a slow moment, no more
            lead.command_result("A", False)
        clock.advance(3.0)
        lead.command_result("C", False)
        assert resigned == []
        clock.advance(2.0)
        lead.command_result("B", False)  # shard "row" has failed for 5 s, 11 writes
        lead.command_result("B", False)  # reported once per streak
        await asyncio.sleep(0)
        assert [(r, h) for r, h, _ in resigned] == [("row", Leadership.resign_hold_off_s)]
        assert "11 command writes to B failed in a row over 5.0 s" in resigned[0][2]

    asyncio.run(go())


def test_shard_map_default_and_explicit() -> None:
    assert shard_map(["A", "B"]) == {"A": "A", "B": "B"}
    assert shard_map(["A", "B", "C"], ["row-1=A,B", "row-2=C"]) == {
        "A": "row-1",
        "B": "row-1",
        "C": "row-2",
    }


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        (["row-1=A"], "domains in no shard: ['B']"),
        (["row-1=A,B", "row-2=B"], "'B' is in two shards"),
        (["row-1=A,X"], "unknown domain 'X'"),
        (["row-1"], "expected SHARD=DOMAIN"),
        (["row 1=A,B"], "must be letters"),
        ([f"{COORDINATOR}=A,B"], "reserved for the site coordinator"),
    ],
)
def test_shard_map_rejects_bad_specs(specs: list[str], error: str) -> None:
    with pytest.raises(ConfigError, match="--shard") as info:
        shard_map(["A", "B"], specs)
    assert error in str(info.value)
