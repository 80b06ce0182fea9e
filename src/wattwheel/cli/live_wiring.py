"""Wiring for ``wattwheel serve``: the device map file, the runtime's devices assembled from
the port adapters (:mod:`wattwheel.adapters.ports`), and the leadership hooks.

The device map is the JSON ``wattwheel emulate`` writes (``docs/live.md`` documents it): where
each device answers, and the inventory of servers (rack, criticality, priority, cap range,
outlet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

from wattwheel.adapters.device_map import DEVICE_MAP_FORMAT as DEVICE_MAP_FORMAT
from wattwheel.adapters.device_map import check_device_map
from wattwheel.adapters.etcd.client import EtcdClient, EtcdLeaseStore
from wattwheel.adapters.modbus.client import SunSpecFlywheelClient
from wattwheel.adapters.mqtt.client import MqttIngester
from wattwheel.adapters.mqtt.codec import telemetry_filter, telemetry_topic
from wattwheel.adapters.mqtt.config import broker_from_map, ingest_client_id
from wattwheel.adapters.ports import (
    HookScheduler,
    HttpReserve,
    MqttTelemetry,
    RedfishCaps,
    SnmpOutlets,
    SunSpecFlywheel,
    warm_redfish,
    warm_snmp,
)
from wattwheel.adapters.redfish.client import RedfishClient
from wattwheel.adapters.scheduler.mqtt import MqttSchedulerHook
from wattwheel.adapters.scheduler.webhook import WebhookSchedulerHook
from wattwheel.adapters.snmp.client import ApcPduClient, PduTarget
from wattwheel.adapters.store.sink import DurableTelemetrySink, DurableTelemetryStore
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import PowerSample, TelemetrySource
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.leader import (
    COORDINATOR,
    Elector,
    FakeElector,
    LeaderElector,
    LeaseTiming,
    commandable_domains,
    leader_key,
)
from wattwheel.runtime.loop import Devices, Runtime
from wattwheel.runtime.ports import FlywheelPort
from wattwheel.runtime.telemetry import PlausibleSamples

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ device map
def load_device_map(path: Path) -> dict[str, Any]:
    """Read a device map and check it against its schema (:mod:`wattwheel.adapters.device_map`);
    a problem raises ConfigError naming the key."""
    if not path.is_file():
        raise ConfigError("devices", str(path), "device map file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("devices", str(path), f"not valid JSON: {exc}") from None
    check_device_map(data)
    return dict(data)


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


# ------------------------------------------------------------------------------ assembly
@dataclass(frozen=True)
class Background:
    """A task that runs beside the runtime (supervised by ``serve``): ``forever`` ones are
    restarted when they return, the others (warm-ups) are done then."""

    name: str
    run: Callable[[], Awaitable[None]]
    forever: bool = True


@dataclass
class Wiring:
    """The runtime's devices plus what runs beside it and what to close afterwards."""

    devices: Devices
    background: list[Background] = field(default_factory=list)
    #: telemetry source -> polling period (s); per-server BMC polling is the expensive one.
    poll_period_s: dict[str, float] = field(default_factory=dict)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    #: racks whose own meter (an SNMP PDU) is polled
    metered_racks: set[str] = field(default_factory=set)

    async def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result


def build_wiring(
    device_map: Mapping[str, Any],
    site: SiteParams,
    inv: Inventory,
    timeout_s: float = 0.5,
    write_timeout_s: float | None = None,
    flywheel_revert_s: int = 0,
    instance_id: str | None = None,
    telemetry_store: DurableTelemetryStore | None = None,
    own_topics: bool = False,
) -> Wiring:
    """Clients for every device the map names (absent sections are simply not wired).

    ``write_timeout_s`` bounds every client that sends commands (caps, outlets, flywheel
    setpoints, reserve, scheduler), so a write cannot arrive later than that after the
    leadership check that allowed it: with redundant controllers it must be below the lease
    margin (``docs/redundancy.md``). None: the clients' usual timeouts.
    ``flywheel_revert_s``: the SunSpec setpoint revert timer written with every setpoint (the
    flywheel goes back to hold when no controller renews it); the map's ``modbus.revert_s``
    wins; 0: no timer. ``instance_id``: this controller's name when several run (its MQTT
    session is its own, see :func:`~wattwheel.adapters.mqtt.config.ingest_client_id`).
    ``telemetry_store``: a durable store (``BufferedStore`` with a spill) the MQTT ingester
    writes each batch to before acknowledging it (None: acknowledged once buffered for the loop,
    which a crash can lose). ``own_topics`` (one shard's process): subscribe to the MQTT topics
    of ``inv``'s racks only (the broker sends it its shard's telemetry, nothing else) and read
    only those racks' servers over Redfish."""

    def wt(default_s: float) -> float:
        return default_s if write_timeout_s is None else min(default_s, write_timeout_s)

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
                timeout_s=max(timeout_s, 2.0) if i == 0 else wt(max(timeout_s, 2.0)),
                racks=inv.rack_ids if own_topics and i == 0 else None,
            )
            for i in range(2)
        )
        telemetry["redfish"] = reader
        wiring.poll_period_s["redfish"] = float(rf.get("poll_s", 5.0))
        devices.caps = RedfishCaps(writer, {s.server_id: s.max_cap_w for s in inv.servers})
        wiring.closers.append(writer.aclose)
        wiring.background.append(
            Background("warm:redfish", lambda: warm_redfish(writer), forever=False)
        )
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
            control_target = replace(target, timeout_s=wt(target.timeout_s))
            controls[rack] = ApcPduClient(control_target, engine=control_engine)
            telemetry[f"snmp:{rack}"] = clients[rack]
            wiring.metered_racks.add(rack)
            wiring.poll_period_s[f"snmp:{rack}"] = float(snmp.get("poll_s", 5.0))
        devices.outlets = SnmpOutlets(controls)
        wiring.background.append(
            Background("warm:snmp", lambda: warm_snmp(list(controls.values())), forever=False)
        )
        wiring.closers.append(control_engine.close_dispatcher)
    if mq := device_map.get("mqtt"):
        buffer = MqttTelemetry()
        # With a durable store, a batch is acknowledged to the broker only once it is committed
        # or fsync'ed to the spill journal (DurableTelemetrySink), and the loop does not store
        # these samples again (stores_samples).
        to_loop: Callable[[list[PowerSample]], Awaitable[None]] = buffer.sink
        if telemetry_store is not None:
            to_loop = DurableTelemetrySink(telemetry_store, then=buffer.sink)
            buffer.stores_samples = True
        # Only samples the runtime could believe go on (and, with a durable sink, are stored):
        # anyone on the broker can publish (DESIGN §8).
        rating_w = None if site.rack_rating_kw is None else site.rack_rating_kw * 1000.0
        gate = PlausibleSamples(inv, to_loop, time.time, rack_rating_w=rating_w)
        topics: str | list[str] = telemetry_filter(mq["site"])
        if own_topics:
            topics = [telemetry_topic(mq["site"], rack) for rack in inv.rack_ids]
        ingester = MqttIngester(
            broker_from_map(mq),
            topics,
            gate,
            client_id=ingest_client_id(mq["site"], instance_id),
        )
        buffer.quarantine = ingester.quarantine
        buffer.gates.append(gate)
        telemetry["mqtt"] = buffer
        wiring.background.append(Background("ingester:mqtt", ingester.run))
    if mb := device_map.get("modbus"):
        flywheels: dict[str, FlywheelPort] = {}
        for domain, unit in mb["units"].items():
            fw = SunSpecFlywheelClient(
                mb["host"],
                int(mb["port"]),
                unit_id=int(unit),
                timeout_s=wt(max(timeout_s, 2.0)),
                revert_s=int(mb.get("revert_s", flywheel_revert_s)),
            )
            flywheels[domain] = SunSpecFlywheel(fw)
            wiring.closers.append(fw.close)
        devices.flywheels = flywheels
    http = httpx.AsyncClient(timeout=wt(timeout_s))
    wiring.closers.append(http.aclose)
    if url := device_map.get("reserve_url"):
        devices.reserve = HttpReserve(url, http)
    if url := device_map.get("scheduler_url"):
        hook = WebhookSchedulerHook(
            url, timeout_s=wt(timeout_s), retries=1 if write_timeout_s is None else 0
        )
        devices.scheduler = HookScheduler(hook, site)
        wiring.closers.append(hook.close)
    elif sm := device_map.get("scheduler_mqtt"):
        devices.scheduler = HookScheduler(
            MqttSchedulerHook(str(sm["site"]), str(sm["host"]), int(sm["port"])), site
        )
    devices.telemetry = telemetry
    return wiring


# ------------------------------------------------------------------------------ leadership
def shard_map(domain_ids: Sequence[str], specs: Sequence[str] = ()) -> dict[str, str]:
    """Domain id -> shard. ``specs`` like ``"row-a=pdu6,pdu7"`` (one per shard); none: one
    shard per power domain, named after it. Every domain must be in exactly one shard."""
    if not specs:
        shard_of = {d: d for d in domain_ids}
    else:
        shard_of = {}
        for spec in specs:
            shard, sep, members = spec.partition("=")
            domains = [m.strip() for m in members.split(",") if m.strip()]
            if not sep or not shard.strip() or not domains:
                raise ConfigError("--shard", spec, "expected SHARD=DOMAIN[,DOMAIN...]")
            for dom in domains:
                if dom not in domain_ids:
                    raise ConfigError(
                        "--shard", spec, f"unknown domain {dom!r}: {list(domain_ids)}"
                    )
                if dom in shard_of:
                    raise ConfigError("--shard", spec, f"domain {dom!r} is in two shards")
                shard_of[dom] = shard.strip()
        missing = [d for d in domain_ids if d not in shard_of]
        if missing:
            raise ConfigError("--shard", list(specs), f"domains in no shard: {missing}")
    for shard in set(shard_of.values()):
        try:
            leader_key("site", shard)
        except ValueError as exc:
            raise ConfigError("--shard", shard, str(exc)) from None
        if shard == COORDINATOR:
            raise ConfigError("--shard", shard, "reserved for the site coordinator role")
    return shard_of


class Leadership:
    """Ties an elector to a :class:`Runtime`: which domains it may command (checked right before
    each write), whether it is the site coordinator, and what a promotion resets. A demotion
    writes nothing (the devices' own fallbacks are the safe state, ``docs/redundancy.md``)."""

    #: a shard's leader resigns once its command writes to the shard's devices have all failed
    #: for this long (s), at least :attr:`resign_after_failures` of them (a CPU-starved moment
    #: or one slow tick does not hand a shard over)
    resign_after_s = 5.0
    resign_after_failures = 3
    #: after resigning, how long (s) the instance does not campaign for the shard (hysteresis)
    resign_hold_off_s = 30.0

    def __init__(self, shard_of: Mapping[str, str], clock: Clock) -> None:
        self.shard_of = dict(shard_of)
        self.clock = clock
        self.elector: LeaderElector | None = None
        self.runtime: Runtime | None = None
        self._failures: dict[str, tuple[int, float]] = {}  # shard -> (count, first at s)
        self._resigning: set[asyncio.Task[bool]] = set()

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.shard_of.values()))

    def commandable(self) -> frozenset[str]:
        if self.elector is None:
            return frozenset()
        return commandable_domains(self.elector, self.shard_of, self.clock.monotonic_s())

    def coordinating(self) -> bool:
        return self.elector is not None and self.elector.may_command(
            COORDINATOR, self.clock.monotonic_s()
        )

    def on_promote(self, role: str, token: int) -> None:
        rt = self.runtime
        if rt is None:
            return  # not running yet: it starts knowing nothing was applied
        if role == COORDINATOR:
            rt.forget_schedule()
            rt.event("leader.promote", f"site coordinator (fencing token {token})")
        else:
            domains = [d for d, s in self.shard_of.items() if s == role]
            rt.forget_applied(domains)
            rt.event("leader.promote", f"leader of shard {role} {domains} (fencing token {token})")
        rt.tick_now()  # command at once, not at the next period

    def command_result(self, domain_id: str, ok: bool) -> None:
        """A command write to ``domain_id`` went through or failed. Once a shard's writes have
        all failed for :attr:`resign_after_s` (its devices stopped answering this instance) the
        instance resigns the shard so a follower that can reach them leads, and holds off
        campaigning for :attr:`resign_hold_off_s`. A single instance (no election) has nobody
        to hand over to: it says so with an event. One report per streak."""
        shard = self.shard_of.get(domain_id)
        if shard is None:
            return
        now_s = self.clock.monotonic_s()
        if ok:
            self._failures.pop(shard, None)
            return
        n, since_s = self._failures.get(shard, (0, now_s))
        n += 1
        self._failures[shard] = (n, since_s)
        failing_s = now_s - since_s
        if n < self.resign_after_failures or failing_s < self.resign_after_s:
            return
        self._failures[shard] = (-(10**9), since_s)  # reported: not again in this streak
        reason = f"{n} command writes to {domain_id} failed in a row over {failing_s:.1f} s"
        elector, rt = self.elector, self.runtime
        if not isinstance(elector, Elector):
            if rt is not None:
                rt.event("leader.cannot_command", f"shard {shard}: {reason}", domain_id)
            return
        if rt is not None:
            rt.event(
                "leader.resign",
                f"resigning shard {shard}: {reason}; not campaigning for it for "
                f"{self.resign_hold_off_s:g} s",
                domain_id,
            )
        task = asyncio.ensure_future(elector.resign(shard, self.resign_hold_off_s, reason))
        self._resigning.add(task)
        task.add_done_callback(self._resigning.discard)

    def on_demote(self, role: str, reason: str) -> None:
        if self.runtime is not None:
            what = "site coordinator" if role == COORDINATOR else f"shard {role}"
            self.runtime.event("leader.demote", f"no longer {what}: {reason}")

    def audit_tag(self, domain_id: str) -> str:
        """The audit note of a domain's decision: whether this instance commanded it, and
        with which fencing token."""
        elector, shard = self.elector, self.shard_of.get(domain_id, "")
        if elector is None:
            return "follower"
        now_s = self.clock.monotonic_s()
        if elector.may_command(shard, now_s):
            return f"leader {shard} token {elector.fencing_token(shard)}"
        return f"follower of {shard}"

    def attach(self, runtime: Runtime) -> None:
        self.runtime = runtime
        runtime.commandable = self.commandable
        runtime.coordinator = self.coordinating
        runtime.audit_tag = self.audit_tag
        runtime.writer.on_result = self.command_result


def build_leadership(
    site_name: str,
    shard_of: Mapping[str, str],
    clock: Clock,
    *,
    etcd_urls: Sequence[str] = (),
    instance_id: str,
    ttl_s: int = 2,
    campaign_every_s: float | None = None,
    etcd_transport: httpx.AsyncBaseTransport | None = None,
    coordinator: bool = True,
) -> tuple[Leadership, list[Callable[[], Any]]]:
    """The leadership of one instance and what to close afterwards. No etcd URL: a
    :class:`FakeElector` leading every shard and the coordinator (a single instance).
    ``coordinator=False`` (one shard's process): it does not campaign for the coordinator role."""
    lead = Leadership(shard_of, clock)
    roles = [*lead.shards, COORDINATOR] if coordinator else list(lead.shards)
    if not etcd_urls:
        lead.elector = FakeElector(roles, on_promote=lead.on_promote, on_demote=lead.on_demote)
        return lead, []
    try:
        leader_key(site_name, "shard")
    except ValueError as exc:
        raise ConfigError(
            "site.name", site_name, f"cannot name etcd election keys: {exc}"
        ) from None
    timing = LeaseTiming(ttl_s=ttl_s)
    # A request that hangs must give up before the next renewal is due.
    client = EtcdClient(
        list(etcd_urls),
        timeout_s=min(0.5, timing.keepalive_period / 2),
        transport=etcd_transport,
    )
    store = EtcdLeaseStore(client)
    lead.elector = Elector(
        store,
        clock,
        site=site_name,
        shards=lead.shards,
        instance_id=instance_id,
        coordinator=coordinator,
        timing=timing,
        campaign_every_s=campaign_every_s,
        on_promote=lead.on_promote,
        on_demote=lead.on_demote,
        watcher=store,
    )
    return lead, [client.aclose]
