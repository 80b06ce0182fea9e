"""The SNMP PDU emulator, read and commanded through the real SNMP client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    Integer32,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    set_cmd,
)

from services import SnmpSim
from wattwheel.adapters.snmp import codec
from wattwheel.adapters.snmp.client import ApcPduClient, OutletNotSheddable, PduTarget
from wattwheel.adapters.snmp.snmprec import parse_snmprec, snmprec_values
from wattwheel.emulate.snmp import StaticRackPower, VirtualPdu, start_snmp_emulator
from wattwheel.emulate.snmp.pdu import write_site_snmprec

pytestmark = pytest.mark.timeout(60)


def _client(port: int, rack: str, table: codec.ControlTable = "rpdu") -> ApcPduClient:
    target = PduTarget(
        rack,
        "127.0.0.1",
        port,
        community=rack,
        control_table=table,
        sheddable_outlets=frozenset({7, 8}),
        timeout_s=1.0,
    )
    return ApcPduClient(target, clock=lambda: 50.0)


async def test_readings_follow_the_source_and_shedding_drops_power() -> None:
    power = StaticRackPower({"r1": 4000.0, "r2": 800.0})
    emulator = await start_snmp_emulator(["r1", "r2"], power, port=0)
    r1, r2 = _client(emulator.port, "r1"), _client(emulator.port, "r2", table="rpdu2")
    try:
        reading = await r1.read_pdu()
        assert reading.device_power_w == 4000.0
        assert [o.power_w for o in reading.outlets] == [500.0] * 8
        assert (await r2.read_pdu()).device_power_w == 800.0
        power.set("r1", 8000.0)
        assert (await r1.read_pdu()).device_power_w == 8000.0
        await r1.set_outlet(8, on=False)
        await r2.set_outlet(7, on=False)  # through the rPDU2 switched-control table
        after = await r1.read_pdu()
        assert after.device_power_w == 7000.0 and after.outlets[7].is_on is False
        assert emulator.pdus["r2"].outlet_on(7) is False
        assert emulator.pdus["r1"].outlet_on(7) is True
        with pytest.raises(OutletNotSheddable):
            await r1.set_outlet(1, on=False)
        samples = await r1.read()
        assert samples[0].kind == "pdu" and samples[0].power_w == 7000.0
    finally:
        r1.close()
        r2.close()
        await emulator.stop()


async def test_read_only_objects_refuse_a_set() -> None:
    emulator = await start_snmp_emulator(["r1"], StaticRackPower({"r1": 100.0}), port=0)
    engine = SnmpEngine()
    try:
        target = await UdpTransportTarget.create(("127.0.0.1", emulator.port), timeout=1, retries=0)
        indication, status, _, _ = await set_cmd(
            engine,
            CommunityData("r1"),
            target,
            ContextData(),
            ObjectType(ObjectIdentity(codec.RPDU_IDENT_DEVICE_POWER_W), Integer32(5)),
        )
        assert indication is None and status.prettyPrint() == "notWritable"
        indication, status, _, _ = await set_cmd(
            engine,
            CommunityData("r1"),
            target,
            ContextData(),
            ObjectType(ObjectIdentity(f"{codec.RPDU_OUTLET_CONTROL_COMMAND}.1"), Integer32(9)),
        )
        assert status.prettyPrint() == "wrongValue"
        assert emulator.pdus["r1"].outlet_on(1) is True
    finally:
        engine.close_dispatcher()
        await emulator.stop()


def test_generated_snmprec_decodes_to_the_rack_power(tmp_path: Path) -> None:
    [path] = write_site_snmprec(["r3"], StaticRackPower({"r3": 1234.0}), tmp_path, 4)
    records = parse_snmprec(path.read_text().splitlines())
    writable = [r.oid for r in records if r.variation == "writecache"]
    assert len(writable) == 8  # rPDU and rPDU2 command columns, 4 outlets each
    values = snmprec_values(records)
    for oid in writable:  # the writecache lines carry value=N; decode them as their value
        values[oid] = codec.IMMEDIATE_ON
    reading = codec.decode_pdu(values)
    assert reading.device_power_w == 1234.0
    assert [o.power_w for o in reading.outlets] == [308.0, 308.0, 308.0, 308.0]
    with pytest.raises(ValueError, match="outlet_count"):
        VirtualPdu("r", 0)


@pytest.mark.service
async def test_generated_snmprec_served_by_snmpsim_with_writable_outlets(
    tmp_path: Path, snmpsim_factory: Callable[[Path, str], SnmpSim]
) -> None:
    write_site_snmprec(["r5"], StaticRackPower({"r5": 2000.0}), tmp_path / "data", 4)
    sim = snmpsim_factory(tmp_path / "data", "r5")
    target = PduTarget(
        "r5", "127.0.0.1", sim.port, community="r5", sheddable_outlets=frozenset({4}), timeout_s=1.0
    )
    client = ApcPduClient(target)
    try:
        reading = await client.read_pdu()
        assert reading.device_power_w == 2000.0 and len(reading.outlets) == 4
        await client.set_outlet(4, on=False)
        assert (await client.read_pdu()).outlets[3].is_on is False
    finally:
        client.close()
