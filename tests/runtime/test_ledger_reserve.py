"""The modelled reserve keeps a bounded log of its commands: serve runs for months and the
controller commands every domain every tick."""

from __future__ import annotations

import asyncio

import numpy as np

from wattwheel.domain.site import parse_site, resolve_site
from wattwheel.runtime.ledger import COMMANDS_KEPT, ModelledReserve

SITE = """
[site]
name = "log"
[reserve]
capacity_kw = 50
[domain_defaults.kes]
modules = 1
module_power_kw = 20
module_energy_kwh = 1
[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100
"""


def test_the_command_log_keeps_only_the_latest() -> None:
    site = resolve_site(parse_site(SITE), {"A": np.array([100.0])})
    reserve = ModelledReserve(site, ("A",))
    for k in range(COMMANDS_KEPT + 10):
        reserve.advance(float(k))
        asyncio.run(reserve.command("A", k % 2 == 0, float(k)))
    assert len(reserve.commands) == COMMANDS_KEPT
    assert reserve.commands[-1] == ("A", (COMMANDS_KEPT + 9) % 2 == 0, float(COMMANDS_KEPT + 9))
