"""The serve-side wiring: device map checks, and the HTTP ports against the emulator's site
controller (in-process ASGI, no sockets)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from wattwheel.adapters.ports import HookScheduler, HttpReserve
from wattwheel.adapters.scheduler.webhook import WebhookSchedulerHook
from wattwheel.cli.live_wiring import inventory_for, load_device_map
from wattwheel.control.base import RESERVE_STARTING
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.shifts import ShiftBook, pair_levels
from wattwheel.domain.site import parse_site
from wattwheel.domain.trace import Trace
from wattwheel.emulate.site import VirtualSite, control_app
from wattwheel.runtime.inventory import default_inventory
from wattwheel.sim.scenario import build_scenario

SITE = """
[site]
name = "w"
servers_per_rack = 4
plan_period_s = 60
[reserve]
capacity_kw = 30
start_delay_s = 10
[domain_defaults.kes]
modules = 1
module_power_kw = 10
module_energy_kwh = 1
[domain_defaults.flex]
noncritical_fraction = 0.5
shift_lead_s = 0
shift_max_fraction_of_peak = 0.5
[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100
[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
"""


def scenario():  # type: ignore[no-untyped-def]
    power = np.array([[80_000.0, 60_000.0], [80_000.0, 60_000.0]])
    return build_scenario(parse_site(SITE), Trace(np.array([0.0, 300.0]), ("a1", "b1"), power))


def test_device_map_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_device_map(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_device_map(bad)
    bad.write_text(json.dumps({"format": "wattwheel-device-map", "domains": {}}))
    with pytest.raises(ConfigError, match=r"devices\.inventory"):
        load_device_map(bad)
    sc = scenario()
    inv = default_inventory(sc.site, 100.0, 1000.0)
    wrong = {"domains": {"A": ["a1"], "B": ["zz"]}, "inventory": inv.to_json()}
    with pytest.raises(ConfigError, match=r"devices\.domains\.B"):
        inventory_for(wrong, sc.site)
    good = {"domains": {"A": ["a1"], "B": ["b1"]}, "inventory": inv.to_json()}
    assert len(inventory_for(good, sc.site).servers) == 8


async def test_reserve_and_scheduler_ports_drive_the_emulated_site() -> None:
    sc = scenario()
    site = VirtualSite(sc, default_inventory(sc.site, 100.0, 40_000.0))
    transport = httpx.ASGITransport(app=control_app(site))
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as http:
        reserve = HttpReserve("http://emu/reserve", http)
        assert await reserve.command("A", True, 12.0)
        status = await reserve.read()
        assert status["A"].mode == RESERVE_STARTING and status["A"].ready_in_s > 0
        hook = WebhookSchedulerHook("http://emu/scheduler", transport=transport, retries=0)
        sched = HookScheduler(hook, sc.site)
        before = site.rack_consumed_w("b1")
        now = site.clock()
        book = ShiftBook(2)
        levels = pair_levels(np.array([10.0, 0.0]), np.array([0.0, 10.0]))
        orders = book.orders_due(now, levels, lead_s=0.0, period_s=60.0)
        assert await sched.request(now, orders, {})
        assert len(site.scheduler_requests) == 1
        assert site.rack_consumed_w("b1") == pytest.approx(before + 10_000.0, abs=1.0)
        # A newer request for the same pair replaces the last one: 4 kW in force, not 14.
        later = [replace(o, kw=4.0, revision=o.revision + 1) for o in orders]
        assert await sched.request(now + 0.001, later, {})
        assert site.rack_consumed_w("b1") == pytest.approx(before + 4_000.0, abs=1.0)
        await hook.close()


def test_each_serve_instance_has_its_own_mqtt_session() -> None:
    # Issue 8: two instances shared one client id and kicked each other off the broker.
    from wattwheel.cli.live_cmds import _election_options
    from wattwheel.cli.live_wiring import build_wiring
    from wattwheel.runtime.telemetry import PlausibleSamples

    sc = scenario()
    site = sc.site
    inv = default_inventory(site, 100.0, 2_000.0)
    mqtt = {"host": "127.0.0.1", "port": 1, "site": "w", "username": "u", "password": "p"}
    ids = []
    for instance in ("ctl-a", "ctl-b", None):
        election = _election_options(None, instance, None, 3, 0.5)
        wiring = build_wiring({"mqtt": mqtt}, site, inv, instance_id=election.session_id)
        [bg] = wiring.background
        assert bg.name == "ingester:mqtt" and bg.forever
        ingester = bg.run.__self__  # type: ignore[attr-defined]
        assert ingester.broker.username == "u"
        assert isinstance(ingester.sink, PlausibleSamples)  # nothing implausible goes on
        ids.append(ingester.client_id)
    assert ids == ["wattwheel-serve-w-ctl-a", "wattwheel-serve-w-ctl-b", "wattwheel-serve-w"]
