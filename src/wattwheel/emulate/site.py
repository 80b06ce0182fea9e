"""The virtual site behind ``wattwheel emulate``: a trace replayed through the domain physics,
served over the real protocols so ``wattwheel serve`` can run against it on one machine.

- **Demand**: each rack's trace power (held per trace step, looping at the end), time
  accelerated by ``speed`` (``speed=60`` replays a 5-minute step every 5 s), split over the
  rack's servers with fixed uneven shares. Shift requests received on the scheduler endpoint
  move non-critical demand between domains while they last; deferrals remove it and bring it
  back after their duration.
- **Redfish** (one service, a chassis per server, a PDU per rack): a server draws
  min(demand, its power limit), nothing when an outlet feeding it is off.
- **SNMP** (one agent, one APC PDU per rack, community = rack id, an outlet per server):
  device and outlet power of what the servers draw; outlet SETs switch servers off.
- **Modbus TCP / SunSpec**: one flywheel bank per power domain (unit id = domain index + 1),
  following the domain flywheel physics in wall-clock time.
- **MQTT**: each rack's draw published every second (needs a broker).
- **Site controller** (HTTP): ``GET /reserve``, ``POST /reserve/{domain}`` for the shared
  reserve (start delay, minimum on-time, shared capacity, in wall-clock time), ``POST
  /scheduler`` (the scheduler webhook) and ``GET /site`` (grid, breaker heat, trips).

Only demand is accelerated: the flywheel, the reserve's timers and the breaker run in wall-clock
seconds, the time base of the controller's 1 s loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wattwheel.adapters.mqtt.client import BrokerAddress
from wattwheel.adapters.scheduler.requests import (
    DeferRequest,
    SchedulerRequest,
    SchedulerRequestError,
    decode_request,
)
from wattwheel.control.base import RESERVE_OFF, RESERVE_ON, RESERVE_STARTING
from wattwheel.domain import breaker
from wattwheel.emulate.modbus import FlywheelBankConfig, start_flywheel_emulator
from wattwheel.emulate.modbus.server import JsonLinesWriteLog
from wattwheel.emulate.mqtt import start_mqtt_emulator
from wattwheel.emulate.redfish import LimitRange, build_redfish_app, serve_in_thread
from wattwheel.emulate.redfish.state import SiteState
from wattwheel.emulate.snmp import start_snmp_emulator
from wattwheel.emulate.snmp.pdu import VirtualPdu
from wattwheel.runtime.inventory import Inventory, default_inventory
from wattwheel.sim.scenario import Scenario

FloatArray = NDArray[np.float64]
log = logging.getLogger(__name__)
Clock = Callable[[], float]


def server_shares(n: int) -> FloatArray:
    """Fixed uneven shares of a rack's power over its ``n`` servers (sum 1)."""
    raw = 0.7 + 0.6 * ((np.arange(n) * 7919) % 101) / 100.0
    return np.asarray(raw / raw.sum(), dtype=float)


def auto_start_step(scenario: Scenario, lead_steps: int = 2, min_run: int = 3) -> int:
    """A few steps before the first sustained overload (``min_run`` consecutive steps over
    some domain's primary capacity), so a demo shows the controller at work at once; 0 if
    the trace has none."""
    over = (scenario.demand_kw > scenario.site.primary_kw).any(axis=1).astype(int)
    runs = np.convolve(over, np.ones(min_run, dtype=int), mode="valid")
    starts = np.flatnonzero(runs == min_run)
    return max(int(starts[0]) - lead_steps, 0) if starts.size else 0


class TraceReplay:
    """Rack power (W) at a wall-clock instant: trace step ``start_step + elapsed*speed/step``."""

    def __init__(self, scenario: Scenario, speed: float, start_step: int, clock: Clock) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        trace = scenario.trace
        self.power_w = trace.power_w
        self.rack_index = {r: i for i, r in enumerate(trace.rack_ids)}
        self.step_s = trace.step_s
        self.speed = speed
        self.start_step = start_step % trace.n_steps
        self.clock = clock
        self.t0 = clock()

    def step_index(self) -> int:
        elapsed = (self.clock() - self.t0) * self.speed
        return int((self.start_step + int(elapsed // self.step_s)) % self.power_w.shape[0])

    def rack_w(self, rack_id: str) -> float:
        return float(self.power_w[self.step_index(), self.rack_index[rack_id]])


@dataclass
class _Reserve:
    mode: int = RESERVE_OFF
    ready_at_s: float = 0.0
    on_since_s: float = 0.0
    assigned_kw: float = 0.0
    requested: bool = False


@dataclass
class _Flex:
    """An active shift or deferral: ``kw`` added to ``domain`` (negative: removed)."""

    domain: str
    kw: float
    start_s: float
    end_s: float


@dataclass
class DomainPhysics:
    """Per-domain results of the last physics step (kW)."""

    load_kw: FloatArray
    kes_kw: FloatArray
    reserve_kw: FloatArray
    grid_kw: FloatArray
    heat: FloatArray
    trips: FloatArray = field(default_factory=lambda: np.zeros(0))


class VirtualSite:
    """Demand, power limits, outlets, flywheels, reserve and breakers of the emulated site.

    Thread-safe for what the device servers call (their threads read demand and write
    commands); :meth:`step` advances the physics from the event loop once a second.
    """

    def __init__(
        self,
        scenario: Scenario,
        inventory: Inventory,
        speed: float = 1.0,
        start_step: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.scenario = scenario
        self.site = scenario.site
        self.inv = inventory
        self.clock = clock
        self.replay = TraceReplay(scenario, speed, start_step, clock)
        self._lock = threading.Lock()
        self._share = np.zeros(len(inventory.servers))
        for r in range(inventory.n_racks):
            members = np.flatnonzero(inventory.server_rack == r)
            self._share[members] = server_shares(members.size)
        self.pdus: dict[str, VirtualPdu] = {}
        # Per rack, the part of its power its non-critical servers draw (the movable load).
        self._noncrit_share = {
            r: float(self._share[(inventory.server_rack == i) & ~inventory.critical].sum())
            for i, r in enumerate(inventory.rack_ids)
        }
        self._flex: list[_Flex] = []
        self.scheduler_requests: list[SchedulerRequest] = []
        self.reserve = {d: _Reserve() for d in self.site.domain_names}
        n = self.site.n_domains
        z = np.zeros(n)
        self.physics = DomainPhysics(z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy())
        self.redfish: SiteState | None = None
        self.kes_power_w: Callable[[int], float] = lambda _d: 0.0
        self._last_step_s = clock()

    # ---- demand (the Redfish PowerSource) ----
    def power_w(self, server_id: str) -> float:
        """A server's demand now (W): its share of the rack's trace power, adjusted by active
        shifts/deferrals for non-critical servers, 0 while its outlet is switched off."""
        i = self.inv.server_index[server_id]
        info = self.inv.servers[i]
        if not self._outlet_on(info.rack_id, info.outlet):
            return 0.0
        watts = self.replay.rack_w(info.rack_id) * float(self._share[i])
        if not info.critical:
            watts *= self._flex_factor(int(self.inv.server_domain[i]))
        return max(watts, 0.0)

    def _flex_factor(self, d: int) -> float:
        now = self.clock()
        with self._lock:
            delta_kw = sum(
                f.kw
                for f in self._flex
                if f.domain == self.site.domain_names[d] and f.start_s <= now < f.end_s
            )
        if delta_kw == 0.0:
            return 1.0
        racks = self.site.domain_racks[d]
        noncrit_kw = sum(self.replay.rack_w(r) * self._noncrit_share[r] for r in racks) / 1000.0
        return max(1.0 + delta_kw / noncrit_kw, 0.0) if noncrit_kw > 0 else 1.0

    def consumed_w(self, server_id: str) -> float:
        """What a server draws now: min(demand, power limit) (W)."""
        if self.redfish is None:
            return self.power_w(server_id)
        snap = self.redfish.snapshot(server_id)
        return float(snap.consumed_w or 0.0)

    def rack_consumed_w(self, rack_id: str) -> float:
        r = self.inv.rack_index[rack_id]
        return sum(
            self.consumed_w(self.inv.servers[i].server_id)
            for i in np.flatnonzero(self.inv.server_rack == r)
        )

    # ---- outlets (switched by SNMP SETs on the rack's virtual PDU) ----
    def _outlet_on(self, rack_id: str, outlet: str | None) -> bool:
        pdu = self.pdus.get(rack_id)
        if pdu is None or outlet is None:
            return True
        number = int(outlet.rsplit("/", 1)[1])
        return number > pdu.outlet_count or pdu.outlet_on(number)

    def outlets_on(self, rack_id: str) -> tuple[int, int]:
        """(outlets switched on, outlets) of a rack's PDU."""
        pdu = self.pdus.get(rack_id)
        if pdu is None:
            return 1, 1
        on = sum(pdu.outlet_on(k) for k in range(1, pdu.outlet_count + 1))
        return on, pdu.outlet_count

    def outlets_off(self) -> list[str]:
        return [
            f"{rack}/{k}"
            for rack, pdu in self.pdus.items()
            for k in range(1, pdu.outlet_count + 1)
            if not pdu.outlet_on(k)
        ]

    # ---- reserve ----
    def command_reserve(self, domain: str, on: bool, power_kw: float) -> None:
        if domain not in self.reserve:
            raise KeyError(domain)
        if not (math.isfinite(power_kw) and power_kw >= 0):
            raise ValueError(f"power_kw must be a finite number >= 0, got {power_kw!r}")
        res, params, now = self.reserve[domain], self.site.reserve, self.clock()
        with self._lock:
            res.requested = on
            res.assigned_kw = power_kw if on else 0.0
            if on and res.mode == RESERVE_OFF:
                res.mode = RESERVE_STARTING if params.start_delay_s > 0 else RESERVE_ON
                res.ready_at_s = now + params.start_delay_s
                res.on_since_s = now
            elif not on and res.mode != RESERVE_OFF and now - res.on_since_s >= params.min_on_s:
                res.mode = RESERVE_OFF

    def reserve_status(self) -> dict[str, dict[str, float]]:
        now, params = self.clock(), self.site.reserve
        out = {}
        with self._lock:
            for i, (d, res) in enumerate(self.reserve.items()):
                on_for = now - res.on_since_s if res.mode != RESERVE_OFF else 0.0
                out[d] = {
                    "mode": res.mode,
                    "ready_in_s": max(res.ready_at_s - now, 0.0)
                    if res.mode == RESERVE_STARTING
                    else 0.0,
                    "min_on_left_s": max(params.min_on_s - on_for, 0.0)
                    if res.mode != RESERVE_OFF
                    else 0.0,
                    "delivered_kw": float(self.physics.reserve_kw[i]),
                }
        return out

    # ---- scheduler webhook ----
    def accept_request(self, request: SchedulerRequest) -> None:
        """Apply a shift (out of one domain, into another if named) or a deferral."""
        offset = self.clock() - request.issued_at_s  # wall-clock vs. the controller's epoch
        start = request.start_at_s + offset
        end = start + request.duration_s
        kw = request.power_w / 1000.0
        with self._lock:
            self.scheduler_requests.append(request)
            if request.domain in self.reserve:
                self._flex.append(_Flex(request.domain, -kw, start, end))
            if isinstance(request, DeferRequest):
                # Postponed work comes back right after the deferral window.
                self._flex.append(_Flex(request.domain, kw, end, end + request.duration_s))
            elif request.to_domain in self.reserve:
                self._flex.append(_Flex(request.to_domain, kw, start, end))
            self._flex = [f for f in self._flex if f.end_s > self.clock()]

    # ---- physics ----
    def step(self) -> DomainPhysics:
        """Advance reserve timers and breakers to now; returns the domain power balance."""
        now = self.clock()
        dt = max(now - self._last_step_s, 0.0)
        self._last_step_s = now
        site = self.site
        load = np.array(
            [sum(self.rack_consumed_w(r) for r in racks) / 1000.0 for racks in site.domain_racks]
        )
        kes = np.array([self.kes_power_w(d) / 1000.0 for d in range(site.n_domains)])
        reserve = self._reserve_step(now, load - kes)
        grid = load - kes - reserve
        heat = breaker.step_heat(site.breaker, self.physics.heat, grid / site.primary_kw, dt)
        tripped = breaker.tripped(heat)
        if tripped.any():
            log.error(
                "breaker trip in domain(s) %s",
                [site.domain_names[i] for i in np.flatnonzero(tripped)],
            )
        self.physics = DomainPhysics(
            load, kes, reserve, grid, np.where(tripped, 0.0, heat), self.physics.trips + tripped
        )
        return self.physics

    def _reserve_step(self, now: float, need_kw: FloatArray) -> FloatArray:
        out = np.zeros(self.site.n_domains)
        with self._lock:
            for i, res in enumerate(self.reserve.values()):
                if res.mode == RESERVE_STARTING and res.ready_at_s <= now:
                    res.mode = RESERVE_ON
                if res.mode == RESERVE_ON:
                    out[i] = min(res.assigned_kw, max(float(need_kw[i]), 0.0))
        cap = self.site.reserve.capacity_kw
        total = float(out.sum())
        return out * (cap / total) if total > cap > 0 else (out if cap > 0 else out * 0.0)

    def status(self) -> dict[str, Any]:
        p = self.physics
        return {
            "trace_step": self.replay.step_index(),
            "speed": self.replay.speed,
            "domains": {
                d: {
                    "load_kw": float(p.load_kw[i]),
                    "kes_kw": float(p.kes_kw[i]),
                    "reserve_kw": float(p.reserve_kw[i]),
                    "grid_kw": float(p.grid_kw[i]),
                    "primary_kw": float(self.site.primary_kw[i]),
                    "breaker_heat": float(p.heat[i]),
                    "trips": int(p.trips[i]),
                }
                for i, d in enumerate(self.site.domain_names)
            },
            "outlets_off": self.outlets_off(),
            "scheduler_requests": len(self.scheduler_requests),
        }


class SnmpRackSource:
    """Rack power for the SNMP PDUs. A virtual PDU splits its input equally over its outlets
    and zeroes the switched-off ones; feed it the power of the servers still on, scaled up by
    outlets/on-outlets, so its total equals what those servers draw."""

    def __init__(self, site: VirtualSite) -> None:
        self.site = site

    def power_w(self, rack_id: str) -> float:
        on, total = self.site.outlets_on(rack_id)
        watts = self.site.rack_consumed_w(rack_id)
        return watts * total / on if on else 0.0


class ConsumedRackSource:
    """Rack power (W) as the site draws it (for the MQTT publisher)."""

    def __init__(self, site: VirtualSite) -> None:
        self.site = site

    def power_w(self, rack_id: str) -> float:
        return self.site.rack_consumed_w(rack_id)


def control_app(site: VirtualSite) -> Starlette:
    """The site controller: reserve, scheduler webhook and status (JSON over HTTP)."""

    async def get_reserve(_request: Request) -> Response:
        return JSONResponse({"domains": site.reserve_status()})

    async def post_reserve(request: Request) -> Response:
        domain = request.path_params["domain"]
        try:
            body = await request.json()
            site.command_reserve(domain, bool(body["on"]), float(body.get("power_kw", 0.0)))
        except KeyError as exc:
            return JSONResponse({"error": f"unknown domain or missing field {exc}"}, 404)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(site.reserve_status()[domain])

    async def post_scheduler(request: Request) -> Response:
        try:
            req = decode_request(await request.body())
        except SchedulerRequestError as exc:
            return JSONResponse({"accepted": False, "detail": str(exc)}, 400)
        site.accept_request(req)
        return JSONResponse({"accepted": True, "detail": f"{type(req).__name__} applied"})

    async def get_site(_request: Request) -> Response:
        return JSONResponse(site.status())

    return Starlette(
        routes=[
            Route("/reserve", get_reserve, methods=["GET"]),
            Route("/reserve/{domain}", post_reserve, methods=["POST"]),
            Route("/scheduler", post_scheduler, methods=["POST"]),
            Route("/site", get_site, methods=["GET"]),
        ]
    )


# ---------------------------------------------------------------------------------- running

DEVICE_MAP_FORMAT = "wattwheel-device-map"
DEVICE_MAP_VERSION = 1


@dataclass(frozen=True)
class EmulatorOptions:
    """Where to serve and how fast to replay (ports 0: pick free ones).

    ``mqtt_host`` None disables the MQTT publisher.
    """

    host: str = "127.0.0.1"
    redfish_port: int = 0
    snmp_port: int = 0
    modbus_port: int = 0
    control_port: int = 0
    mqtt_host: str | None = "127.0.0.1"
    mqtt_port: int = 1883
    speed: float = 1.0
    start_step: int | None = None
    username: str = "admin"
    password: str = "wattwheel"
    physics_period_s: float = 1.0
    #: a JSON-lines file recording every Modbus write (time, unit, client address), or None
    modbus_write_log: str | None = None


def cap_range_w(scenario: Scenario, servers_per_rack: int) -> tuple[float, float]:
    """(min, max) power limit the emulated BMCs accept: max ~1.25x the largest server draw."""
    peak_share = float(server_shares(servers_per_rack).max())
    peak_w = float(np.nanmax(scenario.trace.power_w)) * peak_share
    max_w = max(math.ceil(1.25 * peak_w / 100.0) * 100.0, 200.0)
    return round(0.1 * max_w), max_w


@dataclass
class EmulatorHandle:
    """A running emulated site; :meth:`stop` ends every server it started."""

    site: VirtualSite
    device_map: dict[str, Any]
    _stops: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    async def stop(self) -> None:
        for stop in reversed(self._stops):
            result = stop()
            if hasattr(result, "__await__"):
                await result


async def start_emulated_site(
    scenario: Scenario, options: EmulatorOptions, site_file: str = "", trace_file: str = ""
) -> EmulatorHandle:
    """Start every virtual device of ``scenario`` on the running event loop (HTTP servers in
    threads) and return the handle with the device map ``serve`` needs."""
    site = scenario.site
    n_srv = site.servers_per_rack
    min_w, max_w = cap_range_w(scenario, n_srv)
    inv = default_inventory(site, min_cap_w=min_w, max_cap_w=max_w)
    start = auto_start_step(scenario) if options.start_step is None else options.start_step
    vsite = VirtualSite(scenario, inv, options.speed, start)
    handle = EmulatorHandle(vsite, {})
    racks = {r: [s.server_id for s in inv.servers if s.rack_id == r] for r in inv.rack_ids}
    try:
        app = build_redfish_app(
            [s.server_id for s in inv.servers],
            vsite,
            username=options.username,
            password=options.password,
            limits=LimitRange(min_w, max_w),
            racks=racks,
        )
        vsite.redfish = app.state.redfish.state
        redfish = serve_in_thread(app, options.host, options.redfish_port)
        handle._stops.append(redfish.stop)
        snmp = await start_snmp_emulator(
            inv.rack_ids,
            SnmpRackSource(vsite),
            options.snmp_port,
            host=options.host,
            outlets_per_pdu=n_srv,
        )
        handle._stops.append(snmp.stop)
        vsite.pdus = snmp.pdus
        banks = {
            d + 1: FlywheelBankConfig.from_physics(site.kes, d, float(site.kes_initial_soc[d]))
            for d in range(site.n_domains)
        }
        write_log = None
        if options.modbus_write_log is not None:
            write_log = JsonLinesWriteLog(options.modbus_write_log)
            handle._stops.append(write_log.close)
        modbus = await start_flywheel_emulator(
            banks, host=options.host, port=options.modbus_port, write_log=write_log
        )
        handle._stops.append(modbus.stop)
        vsite.kes_power_w = lambda d: float(modbus.controllers[d + 1].bank.power_w)
        control = serve_in_thread(control_app(vsite), options.host, options.control_port)
        handle._stops.append(control.stop)
        mqtt_site = _topic_safe(site.name)
        if options.mqtt_host is not None:
            broker = BrokerAddress(options.mqtt_host, options.mqtt_port)
            mqtt = await start_mqtt_emulator(
                inv.rack_ids, ConsumedRackSource(vsite), broker, mqtt_site
            )
            handle._stops.append(mqtt.stop)

        async def physics_forever() -> None:
            while True:
                try:
                    vsite.step()
                except Exception:  # the emulator keeps serving; the status shows stale data
                    log.exception("virtual site physics step failed")
                await asyncio.sleep(options.physics_period_s)

        task = asyncio.ensure_future(physics_forever())
        handle._stops.append(task.cancel)
    except BaseException:
        await handle.stop()
        raise
    handle.device_map = {
        "format": DEVICE_MAP_FORMAT,
        "version": DEVICE_MAP_VERSION,
        "site": site.name,
        "site_file": site_file,
        "trace_file": trace_file,
        "speed": options.speed,
        "start_step": start,
        "redfish": {"url": redfish.url, "username": options.username, "password": options.password},
        "snmp": {
            "host": options.host,
            "port": snmp.port,
            "community_is_rack_id": True,
            "outlets_per_pdu": n_srv,
        },
        "modbus": {
            "host": options.host,
            "port": modbus.port,
            "units": {d: i + 1 for i, d in enumerate(site.domain_names)},
        },
        "mqtt": None
        if options.mqtt_host is None
        else {"host": options.mqtt_host, "port": options.mqtt_port, "site": mqtt_site},
        "reserve_url": f"{control.url}/reserve",
        "scheduler_url": f"{control.url}/scheduler",
        "site_status_url": f"{control.url}/site",
        "domains": {d: list(r) for d, r in zip(site.domain_names, site.domain_racks, strict=True)},
        "inventory": inv.to_json(),
    }
    return handle


def _topic_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "site"
