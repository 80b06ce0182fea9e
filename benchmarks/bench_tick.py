"""Fast-loop tick latency of the live runtime on a large site (target: p99 < 100 ms at 1,000
racks).

Two measurements:

1. ``fakes`` (the 1,000-rack figure): the real :class:`~wattwheel.runtime.loop.Runtime` tick
   (telemetry ingest and checks, rack/domain aggregation, observation, policy, per-server
   water-filling caps, actuation diffing, live-state and audit rows) with **in-process fake
   devices** (no network): every rack's PDU reports each tick, every server's BMC every 5th
   tick, demand wanders around the feed ratings so flywheels discharge and caps move.
2. ``emulators`` (smaller, optional): the same runtime through the real protocols against
   ``wattwheel emulate``'s devices in this process (Redfish, SNMP, SunSpec/Modbus, reserve and
   scheduler HTTP; MQTT when a ``mosquitto`` binary exists), ticking on the real clock.

Usage: ``python benchmarks/bench_tick.py [--racks 1000] [--ticks 300] [--runs 3]
[--emulated-racks 30] [--emulated-ticks 40] [--skip-emulators]``. Prints figures; the median of
the runs' p50/p99 is the result.

3. ``--shards N`` (the process-level figure): N real processes, one per shard, started together
   and each running the runtime of its shard alone (:mod:`wattwheel.runtime.shards`: the site cut
   to the shard's domains, arrays sized by the shard) on the real clock, with its own emulated
   devices: a device thread in the process publishes every rack's PDU reading each second and a
   fifth of the servers' BMC readings (every server every 5 s), pushed like MQTT telemetry, and
   the fast loop ticks when a batch lands, as ``serve`` does (``RuntimeConfig.wake_on_telemetry``:
   at most one tick more per period, >= 0.2 s apart; else at the end of its period). Each shard
   ticks at its own phase of the period (``shard_phase_s``, as ``serve --only-shard``) and its
   devices publish at that phase, where its pollers would read them (``--devices-together``:
   every shard's devices at the same instant, the worst case). ``--json`` prints one
   line: ``{"racks", "shards", "shard_tick_p99_ms_max", "decision_age_s_p99",
   "rss_mb_per_1000_racks", ...}`` where the decision age is the time from a reading's
   timestamp to the end of the tick that acted on it (the oldest reading of each tick), and the
   RSS is each shard process's peak resident set.
   ``python benchmarks/bench_tick.py --racks 10000 --shards 10 --json [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from wattwheel.control.registry import make_policy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.runtime.clock import FakeClock, SystemClock
from wattwheel.runtime.fakes import FakeCapActuator, FakeFlywheel, FakeOutletActuator
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.state import LiveState
from wattwheel.runtime.telemetry import SampleBlock

SERVERS_PER_RACK = 40
RACK_KW = 30.0


def site_toml(n_domains: int, racks_per_domain: int, servers_per_rack: int, name: str) -> str:
    lines = [
        "[site]",
        f'name = "{name}"',
        "plan_period_s = 60",
        "horizon_min = 15",
        f"servers_per_rack = {servers_per_rack}",
        "[reserve]",
        "capacity_fraction_of_excess = 0.6",
        "start_delay_s = 10",
        "min_on_s = 60",
        "[domain_defaults.kes]",
        "modules = 4",
        "power_fraction_of_peak = 0.05",
        "minutes_at_rated = 10",
        "[domain_defaults.flex]",
        "noncritical_fraction = 0.3",
        "cap_floor_fraction = 0.5",
    ]
    for d in range(n_domains):
        racks = ", ".join(f'"d{d:02d}r{r:03d}"' for r in range(racks_per_domain))
        lines += [
            "[[domains]]",
            f'name = "d{d:02d}"',
            f"racks = [{racks}]",
            'primary_capacity = "p90"',
        ]
    return "\n".join(lines) + "\n"


def make_site(n_domains: int, racks_per_domain: int, servers_per_rack: int) -> SiteParams:
    config = parse_site(site_toml(n_domains, racks_per_domain, servers_per_rack, "bench"))
    rng = np.random.default_rng(0)
    demand = {
        d.name: RACK_KW * racks_per_domain * (0.9 + 0.15 * rng.random(500)) for d in config.domains
    }
    return resolve_site(config, demand)


class FakeSite:
    """Rack demand wandering around the ratings; PDUs each tick, BMCs every 5th tick."""

    def __init__(self, site: SiteParams, servers_per_rack: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.racks = [r for racks in site.domain_racks for r in racks]
        self.rack_w = np.full(len(self.racks), RACK_KW * 1000.0)
        self.n = servers_per_rack
        self.share = np.full(servers_per_rack, 1.0 / servers_per_rack)
        per_domain = len(self.racks) // site.n_domains
        self.phase = np.repeat(np.arange(site.n_domains) * 0.7, per_domain)
        self.now_s = 0.0
        self.ticks = 0
        self.pdus: list[PowerSample] = []
        self.bmcs: list[PowerSample] = []

    def advance(self, now_s: float) -> None:
        """Next second of demand; the readings are built here, outside the timed tick (live,
        the pollers build them off the tick too)."""
        self.now_s = now_s
        self.ticks += 1
        # Each domain swings +-15 % over two minutes (phases differ), racks add noise: domains
        # go over their feed, the flywheels discharge and caps follow.
        swing = 1.0 + 0.15 * np.sin(2 * np.pi * now_s / 120.0 + self.phase)
        noise = 1.0 + 0.02 * self.rng.standard_normal(self.rack_w.size)
        watts = RACK_KW * 1000.0 * swing * noise
        self.pdus = [
            PowerSample("bench-pdu", r, None, now_s, float(w), "pdu")
            for r, w in zip(self.racks, watts, strict=True)
        ]
        self.bmcs = (
            []
            if self.ticks % 5
            else [
                PowerSample(
                    "bench-bmc", r, f"{r}-s{k + 1:02d}", now_s, float(w) * float(sh), "server"
                )
                for r, w in zip(self.racks, watts, strict=True)
                for k, sh in enumerate(self.share)
            ]
        )

    async def read_pdus(self) -> list[PowerSample]:
        return self.pdus

    async def read_bmcs(self) -> list[PowerSample]:
        return self.bmcs


class _Source:
    def __init__(self, read: object) -> None:
        self.read = read


async def bench_fakes(n_racks: int, ticks: int, policy_name: str, seed: int) -> dict[str, float]:
    n_domains = 10
    site = make_site(n_domains, n_racks // n_domains, SERVERS_PER_RACK)
    fake = FakeSite(site, SERVERS_PER_RACK, seed)
    inv = default_inventory(site, min_cap_w=100.0, max_cap_w=2_000.0)
    clock = FakeClock(real_monotonic=True)
    flywheels = {
        d: FakeFlywheel(
            soc=0.8,
            max_discharge_w=float(site.kes.rated_power_kw[i]) * 1000,
            max_charge_w=float(site.kes.rated_power_kw[i]) * 1000,
        )
        for i, d in enumerate(site.domain_names)
    }
    devices = Devices(
        telemetry={"pdus": _Source(fake.read_pdus), "bmcs": _Source(fake.read_bmcs)},  # type: ignore[dict-item]
        caps=FakeCapActuator(),
        outlets=FakeOutletActuator(),
        flywheels=flywheels,
    )
    policy = make_policy(policy_name, site)
    horizons = tuple(getattr(policy, "horizons_s", ()))
    forecaster = PersistenceForecaster(horizons_s=horizons) if horizons else None
    rt = Runtime(
        site,
        policy,
        devices,
        inv,
        clock,
        LiveState(site.domain_names),
        forecaster=forecaster,
        config=RuntimeConfig(history_step_s=10.0),
    )
    latencies, plan_ticks, capped, plans = [], [], 0, 0
    for t in range(ticks):
        clock.advance(1.0)
        fake.advance(clock.now_s())
        # Live, the forecast is made in a worker thread; the tick after it runs the planner.
        planned = t % 60 == 59 and await rt.plan_once() is not None
        plans += planned
        report = await rt.tick()
        (plan_ticks if planned else latencies).append(report.latency_s)
        capped += int(np.count_nonzero(report.decision.cap_kw > 0))
    arr = np.array(latencies[5:] + plan_ticks)  # the first ticks warm caches
    return {
        "p50_ms": 1000 * float(np.quantile(arr, 0.5)),
        "p99_ms": 1000 * float(np.quantile(arr, 0.99)),
        "max_ms": 1000 * float(arr.max()),
        "capped_domain_ticks": capped,
        "servers": len(inv.servers),
        "plans": plans,
        "plan_tick_ms": 1000 * float(np.median(plan_ticks)) if plan_ticks else math.nan,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_emulators(n_racks: int, ticks: int, work: Path) -> dict[str, float]:
    """The runtime (this process, real clock) through the real protocols against a
    ``wattwheel emulate`` process serving a generated site of ``n_racks`` racks."""
    from wattwheel.cli.live_wiring import build_wiring, inventory_for, load_device_map
    from wattwheel.domain.trace import Trace
    from wattwheel.sim.scenario import load_scenario
    from wattwheel.sim.trace_io import write_trace

    n_domains, servers = 3, 8
    site_file = work / "site.toml"
    toml = site_toml(n_domains, n_racks // n_domains, servers, "bench-emu")
    site_file.write_text(toml.replace("[site]\n", '[site]\ntrace = "trace.csv"\n', 1))
    config = parse_site(site_file.read_text())
    rng = np.random.default_rng(1)
    racks = tuple(config.rack_ids)
    power = RACK_KW * 1000 * (0.85 + 0.25 * rng.random((288, len(racks))))
    write_trace(Trace(np.arange(288) * 300.0 + 600.0, racks, power), work / "trace.csv")
    procs: list[subprocess.Popen[bytes]] = []
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    mqtt_args = ["--no-mqtt"]
    if Path(mosquitto).exists():
        port = _free_port()
        (work / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        procs.append(
            subprocess.Popen(
                [mosquitto, "-c", str(work / "m.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        mqtt_args = ["--mqtt-url", f"127.0.0.1:{port}"]
    devices = work / "devices.json"
    with (work / "emulate.log").open("wb") as log:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from wattwheel.cli import main; main()",
                    "emulate",
                    "--site",
                    str(site_file),
                    "--speed",
                    "60",
                    "--devices",
                    str(devices),
                    *mqtt_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        for _ in range(300):
            if devices.exists():
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"emulate did not start: {(work / 'emulate.log').read_text()}")
        site = load_scenario(site_file).site
        device_map = load_device_map(devices)
        inv = inventory_for(device_map, site)
        wiring = build_wiring(device_map, site, inv, timeout_s=0.5)
        rt = Runtime(
            site,
            make_policy("reactive", site),
            wiring.devices,
            inv,
            SystemClock(),
            LiveState(site.domain_names),
            config=RuntimeConfig(
                poll_period_s=wiring.poll_period_s, telemetry_max_age_s=10.0, poll_in_thread=True
            ),
        )
        background = [asyncio.ensure_future(bg.run()) for bg in wiring.background]
        warmup = 5  # connections, SunSpec discovery, first SNMP walks
        await rt.run(ticks=ticks + warmup)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await wiring.close()
        arr = np.array(list(rt.latencies_s)[warmup:])
        return {
            "p50_ms": 1000 * float(np.quantile(arr, 0.5)),
            "p99_ms": 1000 * float(np.quantile(arr, 0.99)),
            "max_ms": 1000 * float(arr.max()),
            "servers": len(inv.servers),
            "mqtt": float(mqtt_args[0] != "--no-mqtt"),
            "device_faults": float(rt.state.errors.get("device", 0)),
            "telemetry": float(rt.state.telemetry_ingested),
        }
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------ one process per shard
SHARD_DOMAIN_RACKS = 100  # racks per power domain in the sharded site (10 domains a shard)


class ShardDevices:
    """The emulated devices of one shard, in their own thread: each second every rack's PDU
    reading and a fifth of the servers' BMC readings, as two :class:`SampleBlock` (arrays, as
    a device reading many racks at once hands them over) pushed into the runtime's telemetry
    buffer, then the fast loop is woken to act on them."""

    def __init__(
        self, site: SiteParams, servers_per_rack: int, seed: int, phase_s: float = 0.0
    ) -> None:
        self.fake = FakeSite(site, servers_per_rack, seed)
        #: where in each second (wall clock) the devices publish
        self.phase_s = phase_s
        self.buffer: deque[PowerSample | SampleBlock] | None = None
        self.wake: object = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: publication time of the batches not yet taken by a tick
        self.pending: deque[float] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shard-devices", daemon=True)
        racks = self.fake.racks
        self.group = np.arange(len(racks)) % 5

    async def read(self) -> list[PowerSample]:  # pushed, never polled
        return []

    def start(
        self,
        buffer: deque[PowerSample | SampleBlock],
        loop: asyncio.AbstractEventLoop,
        wake: object,
    ) -> None:
        self.buffer, self.loop, self.wake = buffer, loop, wake
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        fake, n = self.fake, 0
        racks = tuple(fake.racks)
        # The same id tuples every time: the runtime resolves them to its rows once.
        groups = []
        for g in range(5):
            rows = np.flatnonzero(self.group == g)
            groups.append(
                (
                    np.repeat(rows, fake.n),
                    tuple(racks[r] for r in rows for _ in range(fake.n)),
                    tuple(f"{racks[r]}-s{k + 1:02d}" for r in rows for k in range(fake.n)),
                    np.tile(fake.share, rows.size),
                )
            )
        next_at = time.monotonic() + (self.phase_s - time.time()) % 1.0
        self._stop.wait(max(next_at - time.monotonic(), 0.0))
        while not self._stop.is_set():
            now_s = time.time()
            swing = 1.0 + 0.15 * np.sin(2 * np.pi * now_s / 120.0 + fake.phase)
            noise = 1.0 + 0.02 * fake.rng.standard_normal(fake.rack_w.size)
            watts = RACK_KW * 1000.0 * swing * noise
            rows, rack_ids, server_ids, share = groups[n % 5]
            pdu = SampleBlock("bench-pdu", "pdu", racks, None, watts, np.full(watts.size, now_s))
            bmc = SampleBlock(
                "bench-bmc",
                "server",
                rack_ids,
                server_ids,
                watts[rows] * share,
                np.full(rows.size, now_s),
            )
            assert self.buffer is not None and self.loop is not None
            self.pending.append(now_s)
            self.buffer.extend((pdu, bmc))
            self.wake()  # type: ignore[operator]  # Runtime.telemetry_arrived: any thread
            n += 1
            next_at += 1.0
            self._stop.wait(max(next_at - time.monotonic(), 0.0))


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def shard_worker(
    shard: int, shards: int, racks: int, seconds: float, policy_name: str, together: bool
) -> dict[str, object]:
    """One shard's process: build its runtime, say ready, wait for "go", run, report."""
    from wattwheel.runtime.clock import SystemClock
    from wattwheel.runtime.shards import shard_phase_s, shard_site, split_shards

    n_domains = max(racks // SHARD_DOMAIN_RACKS, shards)
    full = make_site(n_domains, racks // n_domains, SERVERS_PER_RACK)
    specs = split_shards(full.domain_names, shards)
    name, _, domains = specs[shard].partition("=")
    site = shard_site(full, domains.split(","))
    inv = default_inventory(site, min_cap_w=100.0, max_cap_w=2_000.0)
    # As `serve --only-shard` does: the shard ticks at its own point of the period.
    phase_s = shard_phase_s(name, 1.0, [spec.partition("=")[0] for spec in specs])
    # The shard's devices publish where its pollers would read them (or all shards' at once).
    devices = ShardDevices(site, SERVERS_PER_RACK, shard, 0.0 if together else phase_s)
    flywheels = {
        d: FakeFlywheel(
            soc=0.8,
            max_discharge_w=float(site.kes.rated_power_kw[i]) * 1000,
            max_charge_w=float(site.kes.rated_power_kw[i]) * 1000,
        )
        for i, d in enumerate(site.domain_names)
    }
    policy = make_policy(policy_name, site)
    horizons = tuple(getattr(policy, "horizons_s", ()))
    rt = Runtime(
        site,
        policy,
        Devices(
            telemetry={"devices": devices},  # type: ignore[dict-item]
            caps=FakeCapActuator(),
            outlets=FakeOutletActuator(),
            flywheels=flywheels,
        ),
        inv,
        SystemClock(),
        LiveState(site.domain_names),
        forecaster=PersistenceForecaster(horizons_s=horizons) if horizons else None,
        config=RuntimeConfig(
            history_step_s=10.0,
            # Pushed telemetry; the poller of the (empty) source runs rarely.
            poll_period_s={"devices": 3600.0},
            # Rack snapshots for the API every 5th tick: 1,000 objects a tick are not free.
            racks_every_ticks=5,
            # As `serve`: tick at the shard's phase, and as soon as telemetry lands (bounded:
            # at most one tick more per period, >= 0.2 s apart).
            phase_s=phase_s,
            wake_on_telemetry=True,
        ),
    )
    ages: list[float] = []
    tick_cpu: list[float] = []
    tick = rt.tick

    async def timed_tick():  # type: ignore[no-untyped-def]
        taken = len(devices.pending)
        cpu0 = time.thread_time()  # the tick's own CPU (its awaits are short device calls)
        report = await tick()
        tick_cpu.append(time.thread_time() - cpu0)
        end_s = time.time()
        if taken:
            oldest = devices.pending[0]
            for _ in range(taken):
                devices.pending.popleft()
            ages.append(end_s - oldest)
        return report

    rt.tick = timed_tick  # type: ignore[method-assign]
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif info.get("generation") == 2:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    # As `serve` does before its loop starts: what start-up built (inventory, site, memo) is
    # moved out of the collector's reach, so a full collection does not stall a tick.
    gc.collect()
    gc.freeze()
    gc.callbacks.append(gc_timer)  # the run's own full collections from here on
    print(json.dumps({"ready": shard}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go": every shard starts together
    loop = asyncio.get_running_loop()
    cpu0, wall0 = time.process_time(), time.monotonic()
    devices.start(rt.reader.buffer_for("devices"), loop, rt.telemetry_arrived)
    run = asyncio.ensure_future(rt.run())
    await asyncio.sleep(seconds)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    devices.stop()
    cpu_share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    warm = 5  # the first ticks warm caches
    lat = np.array(list(rt.latencies_s)[warm:])
    age = np.array(ages[warm:])
    return {
        "shard": shard,
        "racks": inv.n_racks,
        "servers": len(inv.servers),
        "domains": site.n_domains,
        "ticks": int(lat.size),
        "tick_p50_ms": 1000 * float(np.quantile(lat, 0.5)),
        "tick_p99_ms": 1000 * float(np.quantile(lat, 0.99)),
        "tick_max_ms": 1000 * float(lat.max()),
        "tick_cpu_p50_ms": 1000 * float(np.quantile(tick_cpu[warm:], 0.5)),
        "tick_cpu_p99_ms": 1000 * float(np.quantile(tick_cpu[warm:], 0.99)),
        "decision_age_s": [round(float(a), 4) for a in age],
        "rss_mb": _peak_rss_mb(),
        # CPU this process used while running (all its threads: ticks, planner, devices), as
        # a share of one core
        "cpu_share": cpu_share,
        "gc_gen2_ms_max": 1000 * max(gc_pauses, default=0.0),
        "gc_gen2_count": len(gc_pauses),
        "telemetry": int(rt.state.telemetry_ingested),
        "early_ticks": rt.early_ticks,
        "phase_s": round(phase_s, 3),
        "policy": policy_name,
    }


def bench_shards(
    racks: int, shards: int, seconds: float, policy: str, together: bool = False
) -> dict[str, object]:
    """Start one process per shard, let them build, start them together, collect."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--racks", str(racks)]
    cmd += ["--shards", str(shards), "--seconds", str(seconds), "--policy", policy]
    cmd += ["--devices-together"] if together else []
    procs = [
        subprocess.Popen(
            [*cmd, "--shard-worker", str(k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(shards)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "ready" not in line:
                raise RuntimeError(f"a shard process did not start: {line!r}")
        load_before = os.getloadavg()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 300)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    ages = np.concatenate([np.array(r.pop("decision_age_s"), dtype=float) for r in results])
    rss = sum(float(r["rss_mb"]) for r in results)  # type: ignore[arg-type]
    return {
        "racks": sum(int(r["racks"]) for r in results),  # type: ignore[call-overload]
        "shards": shards,
        "shard_tick_p99_ms_max": round(max(float(r["tick_p99_ms"]) for r in results), 1),  # type: ignore[arg-type]
        "decision_age_s_p99": round(float(np.quantile(ages, 0.99)), 3),
        "rss_mb_per_1000_racks": round(rss / (racks / 1000.0), 1),
        "shard_tick_cpu_p99_ms_max": round(
            max(float(r["tick_cpu_p99_ms"]) for r in results),  # type: ignore[arg-type]
            1,
        ),
        "cpu_cores_used": round(sum(float(r["cpu_share"]) for r in results), 2),  # type: ignore[arg-type]
        "shard_tick_p50_ms_median": round(
            statistics.median(float(r["tick_p50_ms"]) for r in results),
            1,  # type: ignore[arg-type]
        ),
        "servers": sum(int(r["servers"]) for r in results),  # type: ignore[call-overload]
        "seconds": seconds,
        "ticks_per_shard_min": min(int(r["ticks"]) for r in results),  # type: ignore[call-overload]
        "policy": policy,
        "devices_publish": "together" if together else "at each shard's phase",
        "loadavg_at_start": [round(x, 2) for x in load_before],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "per_shard": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in results
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--racks", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--emulated-racks", type=int, default=30)
    ap.add_argument("--emulated-ticks", type=int, default=40)
    ap.add_argument("--skip-emulators", action="store_true")
    ap.add_argument("--shards", type=int, default=0, help="N processes, one per shard")
    ap.add_argument("--seconds", type=float, default=60.0, help="sharded run length (s)")
    ap.add_argument("--policy", default="predictive", help="sharded run's policy")
    ap.add_argument("--json", action="store_true", help="one JSON line (with --shards)")
    ap.add_argument(
        "--devices-together",
        action="store_true",
        help="every shard's devices publish at the same instant (default: at the shard's phase)",
    )
    ap.add_argument("--shard-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shard_worker is not None:
        result = asyncio.run(
            shard_worker(
                args.shard_worker,
                args.shards,
                args.racks,
                args.seconds,
                args.policy,
                args.devices_together,
            )
        )
        print(json.dumps(result), flush=True)
        return
    if args.shards:
        res = bench_shards(
            args.racks, args.shards, args.seconds, args.policy, args.devices_together
        )
        # Issue 11's targets, checked here so a miss is printed, not only left to the reader.
        res["targets_met"] = {
            "shard_tick_p99_ms_max < 100": float(res["shard_tick_p99_ms_max"]) < 100.0,  # type: ignore[arg-type]
            "decision_age_s_p99 < 1.0": float(res["decision_age_s_p99"]) < 1.0,  # type: ignore[arg-type]
        }
        if args.json:
            print(json.dumps(res), flush=True)
            return
        print(json.dumps(res, indent=1))
        return
    for policy in ("reactive", "predictive"):
        runs = [
            asyncio.run(bench_fakes(args.racks, args.ticks, policy, seed))
            for seed in range(args.runs)
        ]
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        worst = max(r["max_ms"] for r in runs)
        print(
            f"fakes     {args.racks} racks, {int(runs[0]['servers'])} servers, policy "
            f"{policy:10s}: tick p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:6.1f} ms  "
            f"(median of {args.runs} runs x {args.ticks} ticks; capped domain-ticks "
            f"{int(statistics.median(r['capped_domain_ticks'] for r in runs))})  "
            f"{'OK' if p99 < 100 else 'ABOVE'} the 100 ms target"
        )
        if runs[0]["plans"]:
            plan_ms = statistics.median(r["plan_tick_ms"] for r in runs)
            print(
                f"          ticks that ran the MILP planner ({int(runs[0]['plans'])} a run, "
                f"included above): median {plan_ms:.1f} ms"
            )
    if not args.skip_emulators:
        with tempfile.TemporaryDirectory(prefix="bench-tick-") as work:
            res = asyncio.run(bench_emulators(args.emulated_racks, args.emulated_ticks, Path(work)))
            print(
                f"emulators {args.emulated_racks} racks, {int(res['servers'])} servers "
                f"(Redfish, SNMP, Modbus, HTTP{', MQTT' if res['mqtt'] else ''}; real clock, "
                f"{args.emulated_ticks} ticks): tick p50 {res['p50_ms']:.1f} ms  p99 "
                f"{res['p99_ms']:.1f} ms  max {res['max_ms']:.1f} ms  "
                f"(telemetry {int(res['telemetry'])} samples, device faults "
                f"{int(res['device_faults'])})"
            )


if __name__ == "__main__":
    main()
