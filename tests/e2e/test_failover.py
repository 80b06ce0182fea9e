"""Redundant controllers on a real etcd: two :class:`Runtime` instances in one process share the
same (in-package fake) devices and elect leaders per shard (one shard per domain) and a site
coordinator. Every command that reaches a device is recorded with the instance that sent it and
when, so the test can check that exactly one instance commands each shard, that a leader cut off
from etcd stops before the other starts, that the other takes over within TTL + one campaign
period, and that a clean shutdown hands over at once. Plus a smoke test of ``serve --etcd``.

Timing: TTL 2 s (margin and renewals 2/3 s), campaigns every 0.25 s, a tick every 0.1 s."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest

from adapters.etcd.etcd_server import ETCD, EtcdServer
from services import free_port
from wattwheel.cli.live_wiring import Leadership, build_leadership, shard_map
from wattwheel.control.registry import make_policy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.runtime.clock import SystemClock
from wattwheel.runtime.fakes import FakeCapActuator, FakeFlywheel, FakeServerTelemetry
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.leader import COORDINATOR, Elector
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.ports import FlywheelStatusW, ReserveStatus
from wattwheel.runtime.state import LiveState, Overrides

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

TTL_S = 2
CAMPAIGN_S = 0.25
TICK_S = 0.1
EXPIRY_LAG_S = 0.5  # etcd checks lease expiry about every 0.5 s
SITE = """
[site]
name = "fo"
servers_per_rack = 4
[reserve]
capacity_kw = 50
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
# Both domains over their feed: every tick discharges both flywheels (a command per tick).
SERVERS = {
    **{f"a1-s0{i}": ("a1", 30e3) for i in range(1, 5)},
    **{f"b1-s0{i}": ("b1", 28e3) for i in range(1, 5)},
}


@dataclass(frozen=True)
class Command:
    """One command that reached a device: who sent it, to what, and when (monotonic s)."""

    instance: str
    target: str  # a domain id, or "reserve"
    start_s: float
    end_s: float


@dataclass
class DeviceLog:
    commands: list[Command] = field(default_factory=list)

    def record(self, instance: str, target: str, start_s: float) -> None:
        self.commands.append(Command(instance, target, start_s, time.monotonic()))

    def by(self, target: str) -> list[Command]:
        return sorted((c for c in self.commands if c.target == target), key=lambda c: c.start_s)


class LiveBmc:
    """The fake BMCs, stamped with the wall clock (the runtime runs on the real clock)."""

    def __init__(self) -> None:
        self.fake = FakeServerTelemetry(dict(SERVERS))

    async def read(self) -> list[object]:
        self.fake.now_s = time.time()
        return list(await self.fake.read())


@dataclass
class RecordingFlywheel:
    inner: FakeFlywheel
    instance: str
    domain: str
    log: DeviceLog

    async def read(self) -> FlywheelStatusW | None:
        return await self.inner.read()

    async def write_setpoint(self, power_w: float) -> bool:
        start = time.monotonic()
        done = await self.inner.write_setpoint(power_w)
        self.log.record(self.instance, self.domain, start)
        return done


@dataclass
class RecordingCaps:
    inner: FakeCapActuator
    instance: str
    log: DeviceLog

    async def set_caps(self, caps_w: Mapping[str, float | None]) -> dict[str, bool]:
        start = time.monotonic()
        done = await self.inner.set_caps(caps_w)
        for domain in {sid[0].upper() for sid in caps_w}:  # "a1-s03" -> domain "A"
            self.log.record(self.instance, domain, start)
        return done


@dataclass
class RecordingReserve:
    instance: str
    log: DeviceLog

    async def read(self) -> dict[str, ReserveStatus]:
        return {d: ReserveStatus(0, 0.0, 0.0, 0.0) for d in ("A", "B")}

    async def command(self, domain_id: str, on: bool, power_kw: float, warm: bool = False) -> bool:
        self.log.record(self.instance, "reserve", time.monotonic())
        return True


class CuttableTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport until ``cut``: then every request fails like a partition."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("partitioned by the test", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Instance:
    name: str
    runtime: Runtime
    lead: Leadership
    link: CuttableTransport
    closers: list[Callable[[], object]]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def elector(self) -> Elector:
        assert isinstance(self.lead.elector, Elector)
        return self.lead.elector

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.elector.run()),
            asyncio.create_task(self.runtime.run()),
        ]

    async def stop_elector(self) -> None:
        self.tasks[0].cancel()
        await asyncio.gather(self.tasks[0], return_exceptions=True)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for close in self.closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """The etcd adapter tests' server (a fresh one on free ports); skipped without etcd."""
    if not Path(ETCD).exists():
        pytest.skip(f"etcd binary not found at {ETCD} (apt-get install etcd-server)")
    server = EtcdServer(tmp_path / "etcd")
    server.work_dir.mkdir()
    server.start()
    yield server
    server.stop()


def make_site() -> SiteParams:
    return resolve_site(parse_site(SITE), {"A": np.array([100.0]), "B": np.array([100.0])})


@pytest.fixture
async def cluster(etcd: EtcdServer) -> AsyncIterator[tuple[Callable[[str], Instance], DeviceLog]]:
    site = make_site()
    log = DeviceLog()
    bmc = LiveBmc()
    caps = FakeCapActuator()
    flywheels = {d: FakeFlywheel(max_discharge_w=20e3, max_charge_w=20e3) for d in "AB"}
    clock = SystemClock()
    made: list[Instance] = []

    def make(name: str) -> Instance:
        devices = Devices(
            telemetry={"bmc": bmc},  # type: ignore[dict-item]
            caps=RecordingCaps(caps, name, log),
            flywheels={d: RecordingFlywheel(f, name, d, log) for d, f in flywheels.items()},
            reserve=RecordingReserve(name, log),
        )
        link = CuttableTransport()
        lead, closers = build_leadership(
            site.name,
            shard_map(site.domain_names),
            clock,
            etcd_urls=[etcd.url],
            instance_id=name,
            ttl_s=TTL_S,
            campaign_every_s=CAMPAIGN_S,
            etcd_transport=link,
        )
        overrides = Overrides()
        overrides.set_reserve("A", "force", "test", "keep the coordinator busy", time.time())
        rt = Runtime(
            site,
            make_policy("reactive", site),
            devices,
            default_inventory(site, min_cap_w=1_000.0, max_cap_w=50_000.0),
            clock,
            LiveState(site.domain_names),
            overrides,
            config=RuntimeConfig(control_period_s=TICK_S, device_timeout_s=0.2),
        )
        lead.attach(rt)
        inst = Instance(name, rt, lead, link, closers)
        made.append(inst)
        return inst

    yield make, log
    for inst in made:
        await inst.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        await asyncio.sleep(0.01)
    return time.monotonic()


def _first_after(log: DeviceLog, instance: str, target: str, after_s: float) -> float | None:
    times = [c.start_s for c in log.by(target) if c.instance == instance and c.start_s > after_s]
    return min(times, default=None)


def _assert_no_overlap(log: DeviceLog, target: str, expected_handovers: int) -> None:
    """Commands to ``target`` come in runs from one instance; between two runs the last command
    of one ended before the first of the next began (never two instances at once)."""
    cmds = log.by(target)
    assert cmds, f"nothing commanded {target}"
    handovers = 0
    for prev, nxt in itertools.pairwise(cmds):
        if prev.instance != nxt.instance:
            handovers += 1
            assert prev.end_s < nxt.start_s, f"{target}: {prev} overlaps {nxt}"
    assert handovers == expected_handovers, f"{target}: {handovers} hand-overs: {cmds}"


async def test_failover_on_partition_and_on_clean_shutdown(
    cluster: tuple[Callable[[str], Instance], DeviceLog],
) -> None:
    make, log = cluster
    roles = ("A", "B", COORDINATOR)
    i1 = make("i1")
    i1.start()
    await _until(lambda: all(i1.elector.is_leader(r) for r in roles), 5.0, "i1 leads")
    i2 = make("i2")
    i2.start()
    await asyncio.sleep(1.0)
    # Exactly one instance commands each shard (and the reserve): i1, the first one up.
    assert {c.instance for c in log.commands} == {"i1"}
    assert {c.target for c in log.commands} == {"A", "B", "reserve"}
    assert not any(i2.elector.is_leader(r) for r in roles)

    # i1 is cut off from etcd: it stops at its deadline, i2 starts only after the expiry.
    cut_s = time.monotonic()
    i1.link.cut = True
    await _until(lambda: all(i2.elector.is_leader(r) for r in roles), 6.0, "i2 takes over")
    await asyncio.sleep(0.5)
    bound_s = TTL_S + EXPIRY_LAG_S + CAMPAIGN_S + 2 * TICK_S + 0.3  # + scheduling slack
    for target in ("A", "B", "reserve"):
        i1_last = max(c.end_s for c in log.by(target) if c.instance == "i1")
        i2_first = _first_after(log, "i2", target, cut_s)
        assert i2_first is not None, f"i2 never commanded {target}"
        assert i1_last < cut_s + TTL_S - i1.elector.timing.margin + TICK_S
        assert i1_last < i2_first, f"{target}: i1 still commanding when i2 started"
        assert i2_first - cut_s < bound_s, f"{target}: takeover took {i2_first - cut_s:.2f} s"
        print(
            f"partition {target}: i1 last command {i1_last - cut_s:.2f} s after the cut, "
            f"i2 first {i2_first - cut_s:.2f} s (gap {i2_first - i1_last:.2f} s)"
        )

    # The link heals: i1 finds its lease gone and follows; nothing changes hands.
    i1.link.cut = False
    await asyncio.sleep(1.0)
    assert not any(i1.elector.is_leader(r) for r in roles)
    assert all(i2.elector.is_leader(r) for r in roles)

    # i2 shuts down cleanly (resigns): i1 takes over within a campaign period or so.
    stop_s = time.monotonic()
    await i2.stop_elector()
    await _until(lambda: all(i1.elector.is_leader(r) for r in roles), 3.0, "i1 takes back")
    await asyncio.sleep(0.5)
    for target in ("A", "B", "reserve"):
        back_s = _first_after(log, "i1", target, stop_s)
        assert back_s is not None and back_s - stop_s < CAMPAIGN_S + 2 * TICK_S + 0.5
        print(f"clean hand-over {target}: i1 first command {back_s - stop_s:.2f} s after stop")
        _assert_no_overlap(log, target, expected_handovers=2)
    tags = {r.reason.rsplit("[", 1)[-1] for r in i1.runtime.state.recent_decisions(2)}
    assert all(t.startswith("leader ") and "token" in t for t in tags), tags


def test_serve_with_etcd_starts_and_reports_leadership(etcd: EtcdServer, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-c", "from wattwheel.cli import main; main()", "serve"]
    cmd += ["--db", "memory://", "--port", str(port), "--policy", "reactive"]
    cmd += ["--etcd", etcd.url, "--instance-id", "smoke-1"]
    env = {**os.environ, "WATTWHEEL_TOKENS": "", "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 25.0
        events: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/events", timeout=1.0)
                events = reply.json()["events"]
            except (httpx.HTTPError, ValueError, KeyError):
                events = []
            if sum(e["kind"] == "leader.promote" for e in events) >= 4:  # 3 shards + coord.
                break
            time.sleep(0.2)
        promoted = [str(e["message"]) for e in events if e["kind"] == "leader.promote"]
        assert any("site coordinator" in m for m in promoted), events
        assert sum("leader of shard" in m for m in promoted) == 3, promoted
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    text = log_path.read_text()
    assert "smoke-1: leader of coordinator" in text
    assert "no longer leader of coordinator: elector stopped" in text


def test_serve_refuses_a_device_timeout_above_the_lease_margin() -> None:
    from typer.testing import CliRunner

    from wattwheel.cli import _register, app

    _register()
    result = CliRunner().invoke(
        app,
        ["serve", "--etcd", "http://127.0.0.1:1", "--lease-ttl-s", "3", "--device-timeout", "1.5"],
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--device-timeout 1.5 s must be below the lease margin" in text
    assert "--lease-ttl-s 3" in text


def _bench_failover() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_failover.py"
    spec = importlib.util.spec_from_file_location("bench_failover", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_serve_processes_hand_over_on_stop_and_kill_and_never_overlap(tmp_path: Path) -> None:
    """The bounded ``benchmarks/bench_failover.py``: two real ``serve --etcd`` processes on
    their own etcd against ``wattwheel emulate``; the leader is paused (-STOP, then resumed: it
    follows), then the new leader is killed (-9). Every Modbus setpoint is stamped by the
    emulated controller and attributed to the process that sent it. Safety (no bank commanded
    by both) and a hand-over bound are checked here; the < 3 s figure is the benchmark's."""
    if not Path(ETCD).exists():
        pytest.skip(f"etcd binary not found at {ETCD} (apt-get install etcd-server)")
    out = _bench_failover().run(2, 6.0, [], tmp_path, restart_last=False)
    print(json.dumps(out))
    assert [e["kind"] for e in out["per_event"]] == ["kill -STOP", "kill -9"]
    assert out["overlapping_writes"] == 0 and out["unattributed_writes"] == 0
    # Each hand-over went to the other process (the paused one came back as a follower).
    assert [(e["old"], e["new"]) for e in out["per_event"]] in (
        [("ctl-a", "ctl-b"), ("ctl-b", "ctl-a")],
        [("ctl-b", "ctl-a"), ("ctl-a", "ctl-b")],
    )
    # TTL 2 s + etcd's expiry check (<= 0.5 s) + watch, campaign, the promoted tick; slack for
    # a CPU-starved box (measured 2.0-2.7 s at load 17-23 on 2 cores).
    assert out["first_command_after_crash_s_max"] < TTL_S + EXPIRY_LAG_S + 2.0, out
