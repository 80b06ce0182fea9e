"""Wiring for ``wattwheel serve``: the device map file, and the thin wrappers that fit the
concrete adapters (Redfish, SNMP, MQTT, SunSpec/Modbus, reserve and scheduler over HTTP) to the
runtime's ports (:mod:`wattwheel.runtime.ports`). The runtime sits below the adapters in the
layering, so this edge module is where they meet.

The device map is the JSON ``wattwheel emulate`` writes (``docs/live.md`` documents it): where
each device answers, and the inventory of servers (rack, criticality, priority, cap range,
outlet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

from wattwheel.adapters.modbus.client import SunSpecFlywheelClient
from wattwheel.adapters.mqtt.client import BrokerAddress, MqttIngester
from wattwheel.adapters.mqtt.codec import telemetry_filter
from wattwheel.adapters.redfish.client import RedfishClient
from wattwheel.adapters.scheduler.hook import SchedulerHook
from wattwheel.adapters.scheduler.mqtt import MqttSchedulerHook
from wattwheel.adapters.scheduler.plan import plan_requests
from wattwheel.adapters.scheduler.webhook import WebhookSchedulerHook
from wattwheel.adapters.snmp.client import ApcPduClient, PduTarget
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import PowerSample, TelemetrySource
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.loop import Devices
from wattwheel.runtime.ports import FlywheelPort, FlywheelStatusW, ReserveStatus

log = logging.getLogger(__name__)
DEVICE_MAP_FORMAT = "wattwheel-device-map"


# ------------------------------------------------------------------------------ device map
def load_device_map(path: Path) -> dict[str, Any]:
    """Read and check a device map; a problem raises ConfigError naming the key."""
    if not path.is_file():
        raise ConfigError("devices", str(path), "device map file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError("devices", str(path), f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != DEVICE_MAP_FORMAT:
        raise ConfigError(
            "devices.format",
            data.get("format") if isinstance(data, dict) else None,
            f"expected {DEVICE_MAP_FORMAT!r}",
        )
    for key in ("inventory", "domains"):
        if key not in data:
            raise ConfigError(f"devices.{key}", None, "missing")
    return data


def inventory_for(device_map: Mapping[str, Any], site: SiteParams) -> Inventory:
    """The device map's inventory, checked against the site's domains and racks."""
    domains = device_map["domains"]
    for d, racks in zip(site.domain_names, site.domain_racks, strict=True):
        if list(domains.get(d, [])) != list(racks):
            raise ConfigError(
                f"devices.domains.{d}",
                domains.get(d),
                f"does not match the site's racks {list(racks)}",
            )
    return Inventory.from_json(device_map["inventory"], site.domain_names, site.domain_racks)


# ------------------------------------------------------------------------------ adapters
@dataclass
class RedfishCaps:
    """Server caps through Redfish power limits; a lifted cap is written as the maximum."""

    client: RedfishClient
    max_cap_w: Mapping[str, float]

    async def set_caps(self, caps_w: Mapping[str, float | None]) -> dict[str, bool]:
        limits = {sid: (self.max_cap_w[sid] if w is None else w) for sid, w in caps_w.items()}
        written = await self.client.set_power_limits(limits)
        return {sid: written.get(sid) is not None for sid in caps_w}


@dataclass
class SnmpOutlets:
    """Outlet switching on APC PDUs (one client per rack; the clients refuse critical outlets)."""

    clients: Mapping[str, ApcPduClient]

    async def set_outlets(self, states: Mapping[str, bool]) -> dict[str, bool]:
        async def one(key: str, on: bool) -> bool:
            rack, _, number = key.rpartition("/")
            client = self.clients.get(rack)
            if client is None or not number.isdigit():
                return False
            try:
                await client.set_outlet(int(number), on)
            except Exception as exc:  # refused (critical), unreachable, SNMP error
                log.warning("outlet %s not switched %s: %s", key, "on" if on else "off", exc)
                return False
            return True

        results = await asyncio.gather(*(one(k, on) for k, on in states.items()))
        return dict(zip(states, results, strict=True))


@dataclass
class SunSpecFlywheel:
    """A :class:`FlywheelPort` over the SunSpec Modbus client (W, + discharge)."""

    client: SunSpecFlywheelClient

    async def read(self) -> FlywheelStatusW | None:
        reading = await self.client.read()
        st = reading.status
        if st is None:
            return None
        return FlywheelStatusW(
            st.soc, st.power_w, st.max_charge_w, st.max_discharge_w, reading.stale
        )

    async def write_setpoint(self, power_w: float) -> bool:
        return await self.client.write_setpoint(power_w)


@dataclass
class HttpReserve:
    """The reserve controller's JSON endpoint (``GET {url}``, ``POST {url}/{domain}``)."""

    url: str
    http: httpx.AsyncClient

    async def read(self) -> dict[str, ReserveStatus]:
        response = await self.http.get(self.url)
        response.raise_for_status()
        return {
            d: ReserveStatus(
                int(v["mode"]),
                float(v["ready_in_s"]),
                float(v["min_on_left_s"]),
                float(v["delivered_kw"]),
            )
            for d, v in response.json()["domains"].items()
        }

    async def command(self, domain_id: str, on: bool, power_kw: float) -> bool:
        response = await self.http.post(
            f"{self.url}/{domain_id}", json={"on": on, "power_kw": power_kw}
        )
        return response.status_code == 200


@dataclass
class HookScheduler:
    """Shift/defer levels -> named requests (``plan_requests``) -> a scheduler hook (the
    webhook or the MQTT topic)."""

    hook: SchedulerHook
    site: SiteParams

    async def request_levels(
        self,
        now_s: float,
        shift_out_kw: Mapping[str, float],
        shift_in_kw: Mapping[str, float],
        defer_kw: Mapping[str, float],
    ) -> bool:
        ids = self.site.domain_names
        requests = plan_requests(
            self.site.name,
            ids,
            shift_out_kw=[shift_out_kw[d] for d in ids],
            shift_in_kw=[shift_in_kw[d] for d in ids],
            defer_kw=[defer_kw[d] for d in ids],
            defer_deadline_s=list(self.site.flex.defer_deadline_s),
            now_s=now_s,
            shift_lead_s=float(self.site.flex.shift_lead_s.max(initial=0.0)),
            period_s=self.site.plan_period_s,
            reason="wattwheel plan",
        )
        acks = await asyncio.gather(*(self.hook.request(r) for r in requests))
        return all(a.delivered for a in acks)


@dataclass
class MqttTelemetry:
    """Samples arriving over MQTT, buffered between ticks (the ingester runs in the background
    and acknowledges a message once its samples are in this buffer)."""

    max_samples: int = 200_000
    _buffer: deque[PowerSample] = field(default_factory=deque)
    dropped: int = 0

    async def sink(self, samples: list[PowerSample]) -> None:
        overflow = len(self._buffer) + len(samples) - self.max_samples
        if overflow > 0:
            self.dropped += overflow
            for _ in range(min(overflow, len(self._buffer))):
                self._buffer.popleft()
        self._buffer.extend(samples)

    async def read(self) -> list[PowerSample]:
        # popleft is atomic: the ingester (main loop) may append while a poller thread drains.
        return [self._buffer.popleft() for _ in range(len(self._buffer))]


# ------------------------------------------------------------------------------ assembly
@dataclass
class Wiring:
    """The runtime's devices plus what runs beside it and what to close afterwards."""

    devices: Devices
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: telemetry source -> polling period (s); per-server BMC polling is the expensive one.
    poll_period_s: dict[str, float] = field(default_factory=dict)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result


def build_wiring(
    device_map: Mapping[str, Any], site: SiteParams, inv: Inventory, timeout_s: float = 0.5
) -> Wiring:
    """Clients for every device the map names (absent sections are simply not wired)."""
    wiring = Wiring(Devices())
    telemetry: dict[str, TelemetrySource] = {}
    devices = wiring.devices
    if rf := device_map.get("redfish"):
        # One client reads (polled on the runtime's poller thread), another writes caps (on
        # the main loop): an async client belongs to one event loop.
        reader, writer = (
            RedfishClient(
                rf["url"],
                username=rf.get("username"),
                password=rf.get("password"),
                timeout_s=max(timeout_s, 2.0),
            )
            for _ in range(2)
        )
        telemetry["redfish"] = reader
        wiring.poll_period_s["redfish"] = float(rf.get("poll_s", 5.0))
        devices.caps = RedfishCaps(writer, {s.server_id: s.max_cap_w for s in inv.servers})
        wiring.closers.append(writer.aclose)
    if snmp := device_map.get("snmp"):
        engine, control_engine = SnmpEngine(), SnmpEngine()  # poller thread / main loop
        clients, controls = {}, {}
        for rack in inv.rack_ids:
            sheddable = frozenset(
                int(s.outlet.rsplit("/", 1)[1])
                for s in inv.servers
                if s.rack_id == rack and not s.critical and s.outlet is not None
            )
            target = PduTarget(
                rack,
                snmp["host"],
                int(snmp["port"]),
                community=rack,
                sheddable_outlets=sheddable,
                # Polled off the tick: one agent serving many PDUs may answer slowly.
                timeout_s=max(timeout_s, 1.0),
                read_deadline_s=max(timeout_s, 3.0),
            )
            clients[rack] = ApcPduClient(target, engine=engine)
            controls[rack] = ApcPduClient(target, engine=control_engine)
            telemetry[f"snmp:{rack}"] = clients[rack]
            wiring.poll_period_s[f"snmp:{rack}"] = float(snmp.get("poll_s", 5.0))
        devices.outlets = SnmpOutlets(controls)
        wiring.closers.append(control_engine.close_dispatcher)
    if mq := device_map.get("mqtt"):
        buffer = MqttTelemetry()
        ingester = MqttIngester(
            BrokerAddress(mq["host"], int(mq["port"])),
            telemetry_filter(mq["site"]),
            buffer.sink,
            client_id=f"wattwheel-serve-{mq['site']}",
        )
        telemetry["mqtt"] = buffer
        wiring.background.append(ingester.run)
    if mb := device_map.get("modbus"):
        flywheels: dict[str, FlywheelPort] = {}
        for domain, unit in mb["units"].items():
            fw = SunSpecFlywheelClient(
                mb["host"],
                int(mb["port"]),
                unit_id=int(unit),
                timeout_s=max(timeout_s, 2.0),
            )
            flywheels[domain] = SunSpecFlywheel(fw)
            wiring.closers.append(fw.close)
        devices.flywheels = flywheels
    http = httpx.AsyncClient(timeout=timeout_s)
    wiring.closers.append(http.aclose)
    if url := device_map.get("reserve_url"):
        devices.reserve = HttpReserve(url, http)
    if url := device_map.get("scheduler_url"):
        hook = WebhookSchedulerHook(url, timeout_s=timeout_s, retries=1)
        devices.scheduler = HookScheduler(hook, site)
        wiring.closers.append(hook.close)
    elif sm := device_map.get("scheduler_mqtt"):
        devices.scheduler = HookScheduler(
            MqttSchedulerHook(str(sm["site"]), str(sm["host"]), int(sm["port"])), site
        )
    devices.telemetry = telemetry
    return wiring
