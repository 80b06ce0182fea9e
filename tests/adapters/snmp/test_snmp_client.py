"""ApcPduClient against a real SNMP agent: snmpsim serving the recorded APC AP8641."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from services import SnmpSim, free_port
from wattwheel.adapters.snmp import codec
from wattwheel.adapters.snmp.client import (
    DEVICE_SCALARS,
    POLLED_COLUMNS,
    ApcPduClient,
    OutletNotSheddable,
    PduTarget,
    SnmpUnavailable,
)
from wattwheel.domain.telemetry import check_sample

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

DATA = Path(__file__).resolve().parents[2] / "data" / "snmp"
COMMAND_LINE = re.compile(rf"^({re.escape(codec.RPDU_OUTLET_CONTROL_COMMAND)}\.\d+)\|2\|(\d+)$")


def _writable_recording(directory: Path) -> Path:
    """apc-8641 with every rPDUOutletControlOutletCommand row writable (writecache variation)."""
    directory.mkdir()
    lines = (DATA / "apc-8641.snmprec").read_text().splitlines()
    patched = [COMMAND_LINE.sub(r"\1|2:writecache|value=\2", line) for line in lines]
    assert sum(a != b for a, b in zip(lines, patched, strict=True)) == 24
    (directory / "apc-8641.snmprec").write_text("\n".join(patched) + "\n")
    return directory


@pytest.fixture
def pdu_agent(snmpsim_factory: Callable[[Path, str], SnmpSim], tmp_path: Path) -> SnmpSim:
    return snmpsim_factory(_writable_recording(tmp_path / "data"), "apc-8641")


def _client(port: int, **kw: object) -> ApcPduClient:
    target = PduTarget(
        rack_id="r1",
        host="127.0.0.1",
        port=port,
        community="apc-8641",
        sheddable_outlets=frozenset({3, 4}),
        # Generous: a loaded CI machine can take a while to schedule snmpsim; the timeout
        # path has its own tests below.
        timeout_s=5.0,
        **kw,  # type: ignore[arg-type]
    )
    return ApcPduClient(target, clock=lambda: 1000.0)


async def test_reads_device_and_outlet_power(pdu_agent: SnmpSim) -> None:
    client = _client(pdu_agent.port)
    try:
        samples = await client.read()
    finally:
        client.close()
    device = [s for s in samples if s.kind == "pdu"]
    assert [s.power_w for s in device] == [1230.0]
    outlets = {s.server_id: s.power_w for s in samples if s.kind == "outlet"}
    assert len(outlets) == 24
    assert outlets["outlet-1"] == 163.0 and outlets["outlet-19"] == 101.0
    assert all(s.rack_id == "r1" and s.timestamp_s == 1000.0 for s in samples)


async def test_outlet_set_through_writecache_reads_back(pdu_agent: SnmpSim) -> None:
    client = _client(pdu_agent.port)
    try:
        before = await client.read_pdu()
        assert before.outlets[2].is_on is True
        await client.set_outlet(3, on=False)
        after = await client.read_pdu()
        assert after.outlets[2].is_on is False
        assert [o.is_on for o in after.outlets if o.number != 3] == [
            o.is_on for o in before.outlets if o.number != 3
        ]
        await client.set_outlet(3, on=True)
        assert (await client.read_pdu()).outlets[2].is_on is True
    finally:
        client.close()


async def test_critical_outlet_is_refused_and_nothing_is_sent(pdu_agent: SnmpSim) -> None:
    client = _client(pdu_agent.port)
    try:
        with pytest.raises(OutletNotSheddable, match=r"outlet 1 of rack 'r1'.*critical.*\[3, 4\]"):
            await client.set_outlet(1, on=False)
        # Still on: the refusal happened before any SET.
        assert (await client.read_pdu()).outlets[0].is_on is True
        await client.set_outlet(1, on=True)  # switching on is always allowed
    finally:
        client.close()


async def test_silent_pdu_gives_stale_samples_logged_once(
    pdu_agent: SnmpSim, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    target = PduTarget(
        rack_id="r1",
        host="127.0.0.1",
        port=pdu_agent.port,
        community="apc-8641",
        timeout_s=2.0,
        read_deadline_s=2.5,
    )
    client = ApcPduClient(target, clock=lambda: now[0])
    try:
        fresh = await client.read()
        pdu_agent.stop()
        now[0] = 1060.0
        with caplog.at_level(logging.DEBUG, logger="wattwheel.adapters.snmp.client"):
            first = await client.read()
            second = await client.read()
    finally:
        client.close()
    assert first == fresh and second == fresh  # last good values, old timestamps
    assert not client.healthy and client.failures == 2
    problem = check_sample(first[0], now_s=now[0], max_age_s=10, max_power_w=1e5)
    assert problem is not None and problem.code == "stale"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()


async def test_no_agent_at_all_yields_no_samples() -> None:
    target = PduTarget(rack_id="r9", host="127.0.0.1", port=free_port(2), timeout_s=0.2)
    client = ApcPduClient(target)
    try:
        assert await client.read() == []
    finally:
        client.close()
    assert client.failures == 1


@pytest.mark.parametrize(
    ("rows", "expected"),
    [({f"{codec.RPDU_OUTLET_CONTROL_COMMAND}.1": 1}, "rpdu"), ({}, "rpdu2")],
)
async def test_auto_control_table_prefers_rpdu_when_present(
    rows: dict[str, codec.SnmpValue], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ApcPduClient(PduTarget(rack_id="r1", host="127.0.0.1", port=free_port(2)))
    walked: list[str] = []

    async def fake_walk(subtree: str) -> dict[str, codec.SnmpValue]:
        walked.append(subtree)
        return rows

    monkeypatch.setattr(client, "walk", fake_walk)
    try:
        assert await client._control_table() == expected
        assert await client._control_table() == expected  # decided once
    finally:
        client.close()
    assert walked == [codec.RPDU_OUTLET_CONTROL_COMMAND]


async def test_bulk_poll_matches_get_and_walks(pdu_agent: SnmpSim) -> None:
    client = _client(pdu_agent.port)
    try:
        expected = await client.get(DEVICE_SCALARS)
        for column in POLLED_COLUMNS:
            expected.update(await client.walk(column))
        # Few repetitions: several requests, columns of equal length ending together.
        polled = await client.poll(DEVICE_SCALARS, POLLED_COLUMNS, max_repetitions=5)
    finally:
        client.close()
    assert polled == expected
    assert polled[codec.RPDU_IDENT_DEVICE_POWER_W] == 1230
    assert len(polled) == 2 + 3 * 24


async def test_poll_refuses_an_agent_that_does_not_advance(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ApcPduClient(PduTarget(rack_id="r1", host="127.0.0.1", port=free_port(2)))
    column = codec.RPDU2_OUTLET_METERED_POWER

    async def stuck_bulk(
        non_repeaters: list[str], repeaters: list[str], max_repetitions: int
    ) -> list[tuple[str, codec.SnmpValue]]:
        return [(f"{column}.1", 5)]  # the same row, forever

    monkeypatch.setattr(client, "_bulk", stuck_bulk)
    try:
        with pytest.raises(SnmpUnavailable, match="OIDs must increase"):
            await client.poll((), [column])
    finally:
        client.close()
