"""The runtime's ports (:mod:`wattwheel.runtime.ports`) over the concrete clients.

Thin wrappers that fit Redfish (server caps), SNMP (outlet switching), SunSpec/Modbus (the
flywheel bank), the reserve controller's HTTP endpoint, a scheduler hook and the MQTT ingester
(a sample buffer) to what the runtime needs, plus the warm-up of the command clients. The
runtime sits below the adapters in the layering, so the wrappers live here and ``serve``
(:mod:`wattwheel.cli.live_wiring`) assembles them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from wattwheel.adapters.modbus.client import SunSpecFlywheelClient
from wattwheel.adapters.modbus.converter_map import ConverterParams
from wattwheel.adapters.mqtt.quarantine import Quarantine
from wattwheel.adapters.redfish.client import RedfishClient
from wattwheel.adapters.scheduler.hook import SchedulerHook
from wattwheel.adapters.scheduler.plan import plan_requests, ramp_limit_requests
from wattwheel.adapters.snmp.client import ApcPduClient
from wattwheel.domain.converter import ConverterSettings
from wattwheel.domain.shifts import ShiftOrder
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import MessageRejection, PowerSample, ReportsRejections
from wattwheel.runtime.ports import FlywheelStatusW, ReserveStatus

log = logging.getLogger(__name__)


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

    async def write_converter(self, settings: ConverterSettings) -> bool:
        """The converter loop's parameters (vendor model 64220), one domain's, kW -> W."""
        return await self.client.write_converter(ConverterParams.from_settings(settings, 0))


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

    async def command(self, domain_id: str, on: bool, power_kw: float, warm: bool = False) -> bool:
        response = await self.http.post(
            f"{self.url}/{domain_id}", json={"on": on, "power_kw": power_kw, "warm": warm}
        )
        return response.status_code == 200


@dataclass
class HookScheduler:
    """Shift orders and deferral levels -> named requests (``plan_requests``) -> a scheduler
    hook (the webhook or the MQTT topic)."""

    hook: SchedulerHook
    site: SiteParams
    plan_period_s: float | None = None

    async def request(
        self, now_s: float, shifts: Sequence[ShiftOrder], defer_kw: Mapping[str, float]
    ) -> bool:
        ids = self.site.domain_names
        requests = plan_requests(
            self.site.name,
            ids,
            shifts=shifts,
            defer_kw=[defer_kw.get(d, 0.0) for d in ids],
            defer_deadline_s=list(self.site.flex.defer_deadline_s),
            now_s=now_s,
            period_s=self.plan_period_s or self.site.plan_period_s,
            reason="wattwheel plan",
        )
        acks = await asyncio.gather(*(self.hook.request(r) for r in requests))
        return all(a.delivered for a in acks)

    async def ramp_limit(
        self, now_s: float, ramp_kw_per_s: Mapping[str, float], duration_s: float
    ) -> bool:
        """``ramp_limit`` requests (one per domain with a limit) through the hook."""
        ids = self.site.domain_names
        requests = ramp_limit_requests(
            self.site.name,
            ids,
            [ramp_kw_per_s.get(d) for d in ids],
            now_s=now_s,
            duration_s=duration_s,
            reason="grid ramp limit",
        )
        acks = await asyncio.gather(*(self.hook.request(r) for r in requests))
        return all(a.delivered for a in acks)


@dataclass
class MqttTelemetry:
    """Samples arriving over MQTT, buffered between ticks (the ingester runs in the background;
    with a durable store it acknowledges a message once its samples are stored, else once they
    are in this buffer)."""

    max_samples: int = 200_000
    _buffer: deque[PowerSample] = field(default_factory=deque)
    dropped: int = 0
    #: the ingester's quarantine: its rejections are reported to the runtime
    quarantine: Quarantine | None = None
    #: whatever else dropped samples on their way here (the plausibility gate)
    gates: list[ReportsRejections] = field(default_factory=list)
    #: True when the ingester's sink already stored these samples durably (the loop must not
    #: store them again; see :class:`~wattwheel.runtime.reading.StoresOwnSamples`)
    stores_samples: bool = False
    #: called once new samples are in the buffer (the runtime's poller reads them at once;
    #: see :class:`~wattwheel.runtime.reading.SignalsArrival`)
    on_arrival: Callable[[], None] | None = None

    def take_rejections(self) -> list[MessageRejection]:
        taken = [] if self.quarantine is None else self.quarantine.take_new()
        for gate in self.gates:
            taken.extend(gate.take_rejections())
        return taken

    async def sink(self, samples: list[PowerSample]) -> None:
        overflow = len(self._buffer) + len(samples) - self.max_samples
        if overflow > 0:
            self.dropped += overflow
            for _ in range(min(overflow, len(self._buffer))):
                self._buffer.popleft()
        self._buffer.extend(samples)
        hook = self.on_arrival
        if samples and hook is not None:
            hook()

    async def read(self) -> list[PowerSample]:
        # popleft is atomic: the ingester (main loop) may append while a poller thread drains.
        return [self._buffer.popleft() for _ in range(len(self._buffer))]


# ------------------------------------------------------------------------------ warm-up
WARM_RETRY_S = 2.0


async def warm_redfish(client: RedfishClient) -> None:
    """Discover the command client's resources before the first write needs them: a
    discovery walk takes longer than a write's timeout and would be cut short every tick (a
    promotion rewrites every cap at once). Reads only; retried until the service answers."""
    while await client.discover() is None:
        await asyncio.sleep(WARM_RETRY_S)


async def warm_snmp(clients: list[ApcPduClient]) -> None:
    """Find each PDU's outlet control table once, before the first switching (otherwise
    every concurrent set of the first batch walks it). Reads only; retried on failure."""
    for client in clients:
        while True:
            try:
                await client._control_table()  # cached by the client once known
                break
            except Exception as exc:  # unreachable: the first set will try again too
                log.debug("outlet control table of %s not read yet: %s", client.target.source, exc)
                await asyncio.sleep(WARM_RETRY_S)
