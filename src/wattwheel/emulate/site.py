"""The virtual site behind ``wattwheel emulate``: a trace replayed through the domain physics,
served over the real protocols so ``wattwheel serve`` can run against it on one machine.

- **Demand**: each rack's trace power (held per trace step, looping at the end), time
  accelerated by ``speed`` (``speed=60`` replays a 5-minute step every 5 s), split over the
  rack's servers with fixed uneven shares. Shift requests received on the scheduler endpoint
  move non-critical demand between domains while they are in force, kept in the world model's
  :class:`~wattwheel.domain.shifts.ShiftBook`: one request per (source, target) pair in force,
  a newer one replacing the previous from its start (never added up); deferrals remove demand
  and bring it back after their duration.
- **Redfish** (one service, a chassis per server, a PDU per rack): a server draws
  min(demand, its power limit), nothing when an outlet feeding it is off.
- **SNMP** (one agent, one APC PDU per rack, community = rack id, an outlet per server):
  device and outlet power of what the servers draw; outlet SETs switch servers off.
- **Modbus TCP / SunSpec**: one flywheel bank per power domain (unit id = domain index + 1),
  following the domain flywheel physics in wall-clock time.
- **MQTT**: each rack's draw published every second (needs a broker).
- **Site controller** (HTTP): ``GET /reserve``, ``POST /reserve/{domain}`` for the shared
  reserve - one machine (:class:`~wattwheel.domain.reserve.ReserveMachine`: pre-warm, start
  delay, minimum on-time, shared capacity, in wall-clock time), ``POST
  /scheduler`` (the scheduler webhook) and ``GET /site`` (grid, breaker heat, trips).

Only demand is accelerated: the flywheel, the reserve's timers and the breaker run in wall-clock
seconds, the time base of the controller's 1 s loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
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
    RampLimitRequest,
    SchedulerRequest,
    SchedulerRequestError,
    ShiftRequest,
    decode_request,
    revision_of,
)
from wattwheel.domain import breaker
from wattwheel.domain.reserve import RESERVE_ON, ReserveMachine
from wattwheel.domain.shifts import ShiftBook, ShiftOrder
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

    def step_index(self, at_s: float | None = None) -> int:
        """The trace step replayed at wall-clock ``at_s`` (default: now)."""
        elapsed = ((self.clock() if at_s is None else at_s) - self.t0) * self.speed
        return int((self.start_step + int(elapsed // self.step_s)) % self.power_w.shape[0])

    def rack_w(self, rack_id: str, at_s: float | None = None) -> float:
        return float(self.power_w[self.step_index(at_s), self.rack_index[rack_id]])


@dataclass
class _Flex:
    """An active deferral: ``kw`` added to ``domain`` (negative: removed)."""

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
        self.shifts = ShiftBook(self.site.n_domains)
        self.scheduler_requests: list[SchedulerRequest] = []
        #: Ramp-up limits for job starts in force per domain (the newest request of each).
        self.ramp_limits: dict[str, RampLimitRequest] = {}
        res = self.site.reserve
        self.machine = ReserveMachine(
            self.site.n_domains,
            res.capacity_kw,
            res.start_delay_s,
            res.min_on_s,
            res.warm_start_delay_s,
        )
        self.machine.advance(clock())
        n = self.site.n_domains
        z = np.zeros(n)
        self.physics = DomainPhysics(z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy())
        self.redfish: SiteState | None = None
        self.kes_power_w: Callable[[int], float] = lambda _d: 0.0
        self._last_step_s = clock()

    # ---- demand (the Redfish PowerSource) ----
    def power_w(self, server_id: str, at_s: float | None = None) -> float:
        """A server's demand at ``at_s`` (default now, W): its share of the rack's trace power,
        adjusted by the shifts in force and deferrals for non-critical servers, 0 while its
        outlet is switched off."""
        now = self.clock() if at_s is None else at_s
        i = self.inv.server_index[server_id]
        info = self.inv.servers[i]
        if not self._outlet_on(info.rack_id, info.outlet):
            return 0.0
        watts = self.replay.rack_w(info.rack_id, now) * float(self._share[i])
        if not info.critical:
            watts *= self._flex_factor(int(self.inv.server_domain[i]), now)
        return max(watts, 0.0)

    def _flex_factor(self, d: int, now: float) -> float:
        delta_kw = float(self._flex_kw(now)[d])
        if delta_kw == 0.0:
            return 1.0
        noncrit_kw = self._noncrit_kw(d, now)
        return max(1.0 + delta_kw / noncrit_kw, 0.0) if noncrit_kw > 0 else 1.0

    def _noncrit_kw(self, d: int, now: float) -> float:
        racks = self.site.domain_racks[d]
        return sum(self.replay.rack_w(r, now) * self._noncrit_share[r] for r in racks) / 1000.0

    def _flex_kw(self, now: float) -> FloatArray:
        """Demand added per domain at ``now`` by the shifts in force and deferrals (kW)."""
        out, inn = self.shifts_in_force_kw(now)
        delta = inn - out
        with self._lock:
            for f in self._flex:
                if f.start_s <= now < f.end_s:
                    delta[self.site.domain_names.index(f.domain)] += f.kw
        return delta

    def shifts_in_force_kw(self, now: float) -> tuple[FloatArray, FloatArray]:
        """(out_kw, in_kw) per domain of the shift requests in force at ``now`` (as moved)."""
        noncrit = np.array([self._noncrit_kw(d, now) for d in range(self.site.n_domains)])
        with self._lock:
            return self.shifts.moved(now, noncrit)

    def domain_demand_kw(self, now: float) -> FloatArray:
        """What each domain's servers demand at ``now`` (kW, before caps)."""
        return np.array(
            [
                sum(
                    self.power_w(self.inv.servers[i].server_id, now)
                    for i in np.flatnonzero(self.inv.server_domain == d)
                )
                / 1000.0
                for d in range(self.site.n_domains)
            ]
        )

    def trace_kw(self, now: float) -> FloatArray:
        """Each domain's demand as the trace has it at ``now``, before any shift (kW)."""
        return np.array(
            [
                sum(self.replay.rack_w(r, now) for r in racks) / 1000.0
                for racks in self.site.domain_racks
            ]
        )

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
    def command_reserve(self, domain: str, on: bool, power_kw: float, warm: bool = False) -> None:
        if domain not in self.site.domain_names:
            raise KeyError(domain)
        if not (math.isfinite(power_kw) and power_kw >= 0):
            raise ValueError(f"power_kw must be a finite number >= 0, got {power_kw!r}")
        i = self.site.domain_names.index(domain)
        with self._lock:
            self.machine.command(self.clock(), i, on, power_kw, warm)

    def reserve_status(self) -> dict[str, dict[str, float]]:
        now = self.clock()
        out = {}
        with self._lock:
            self.machine.advance(now)
            view = self.machine.view(now)
            for i, d in enumerate(self.site.domain_names):
                out[d] = {
                    "mode": int(view.mode[i]),
                    "ready_in_s": float(view.ready_in_s[i]),
                    "min_on_left_s": float(view.min_on_left_s[i]),
                    "delivered_kw": float(self.physics.reserve_kw[i]),
                }
        return out

    # ---- scheduler webhook ----
    def accept_request(self, request: SchedulerRequest) -> str:
        """Apply a shift (it replaces its (source, target) pair's previous request from its
        start on) or a deferral, or record a ramp-up limit; returns what was done."""
        if isinstance(request, RampLimitRequest):
            return self._accept_ramp_limit(request)
        offset = self.clock() - request.issued_at_s  # wall-clock vs. the controller's epoch
        start = request.start_at_s + offset
        end = start + request.duration_s
        kw = request.power_w / 1000.0
        names = self.site.domain_names
        if request.domain not in names:
            return f"unknown domain {request.domain!r}: ignored"
        with self._lock:
            self.scheduler_requests.append(request)
            if isinstance(request, DeferRequest):
                self._flex.append(_Flex(request.domain, -kw, start, end))
                # Postponed work comes back right after the deferral window.
                self._flex.append(_Flex(request.domain, kw, end, end + request.duration_s))
                self._flex = [f for f in self._flex if f.end_s > self.clock()]
                return "deferral applied"
            target = names.index(request.to_domain) if request.to_domain in names else None
            order = ShiftOrder(
                names.index(request.domain), target, kw, start, end, revision_of(request)
            )
            self.shifts.prune(self.clock())
            if not self.shifts.place(order):
                return "not newer than the last request of its pair: ignored"
        if target is None:
            return "shift without a known destination: nothing moves"
        return "shift applied (replaces its pair's previous request)"

    def _accept_ramp_limit(self, request: RampLimitRequest) -> str:
        """Record the domain's ramp-up limit for job starts (the newest revision wins). The
        emulator's trace has no job starts to ramp: it keeps the limit in force for reading."""
        if request.domain not in self.site.domain_names:
            return f"unknown domain {request.domain!r}: ignored"
        with self._lock:
            self.scheduler_requests.append(request)
            last = self.ramp_limits.get(request.domain)
            if last is not None and revision_of(last) >= revision_of(request):
                return "not newer than the domain's last ramp limit: ignored"
            self.ramp_limits[request.domain] = request
        return "ramp-up limit for job starts recorded (replaces the domain's previous one)"

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
        with self._lock:
            self.machine.advance(now)
            if self.machine.mode != RESERVE_ON:
                return np.zeros(self.site.n_domains)
            return self.machine.delivery_kw(need_kw)

    def status(self) -> dict[str, Any]:
        p = self.physics
        now = self.clock()  # one instant for the trace, the demand and the shifts in force
        trace, demand = self.trace_kw(now), self.domain_demand_kw(now)
        out, inn = self.shifts_in_force_kw(now)
        m = self.machine
        with self._lock:
            in_force = self.shifts.in_force(now)
            requests = list(self.scheduler_requests)
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
                    "trace_kw": float(trace[i]),
                    "demand_kw": float(demand[i]),
                    "shift_out_kw": float(out[i]),
                    "shift_in_kw": float(inn[i]),
                }
                for i, d in enumerate(self.site.domain_names)
            },
            "reserve": {
                "mode": m.mode,
                "machine_starts": m.starts,
                "running_s": m.running_s,
                "warm_s": m.warm_s,
            },
            "shifts_in_force": [
                {
                    "from": self.site.domain_names[o.source],
                    "to": None if o.target is None else self.site.domain_names[o.target],
                    "kw": o.kw,
                    "revision": o.revision,
                }
                for o in in_force
            ],
            "outlets_off": self.outlets_off(),
            "scheduler_requests": len(requests),
            "largest_request_w": _largest_requests(requests),
        }


def _domain_load_w(site: VirtualSite, racks: Sequence[str]) -> float:
    return float(sum(site.rack_consumed_w(r) for r in racks))


def _largest_requests(requests: list[SchedulerRequest]) -> dict[str, float]:
    """The largest power (W) ever requested per shift pair ``"<from>-><to|*>"``."""
    out: dict[str, float] = {}
    for r in requests:
        if isinstance(r, ShiftRequest):
            key = f"{r.domain}->{r.to_domain or '*'}"
            out[key] = max(out.get(key, 0.0), r.power_w)
    return out


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
            site.command_reserve(
                domain,
                bool(body["on"]),
                float(body.get("power_kw", 0.0)),
                bool(body.get("warm", False)),
            )
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
        return JSONResponse({"accepted": True, "detail": site.accept_request(req)})

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
        for d, domain_racks in enumerate(site.domain_racks):
            # What each bank's converter measures: its domain's load as consumed (after caps).
            modbus.controllers[d + 1].load_w = functools.partial(
                _domain_load_w, vsite, domain_racks
            )
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
