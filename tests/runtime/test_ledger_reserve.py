"""The modelled reserve keeps a bounded log of its commands: serve runs for months and the
controller commands every domain every tick."""

from __future__ import annotations

import asyncio

from sites import one_domain_site
from wattwheel.runtime.ledger import COMMANDS_KEPT, ModelledReserve


def test_the_command_log_keeps_only_the_latest() -> None:
    site = one_domain_site("log")
    reserve = ModelledReserve(site, ("A",))
    for k in range(COMMANDS_KEPT + 10):
        reserve.advance(float(k))
        asyncio.run(reserve.command("A", k % 2 == 0, float(k)))
    assert len(reserve.commands) == COMMANDS_KEPT
    assert reserve.commands[-1] == ("A", (COMMANDS_KEPT + 9) % 2 == 0, float(COMMANDS_KEPT + 9))
