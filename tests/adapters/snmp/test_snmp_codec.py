"""PowerNet-MIB codec on the recorded walks of three real APC PDUs (tests/data/snmp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattwheel.adapters.snmp import codec
from wattwheel.adapters.snmp.snmprec import (
    SnmprecError,
    format_snmprec,
    parse_snmprec,
    snmprec_values,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "snmp"


def _recording(name: str) -> dict[str, codec.SnmpValue]:
    return snmprec_values(parse_snmprec((DATA / f"{name}.snmprec").read_text().splitlines()))


def test_apc_8641_device_and_outlet_power() -> None:
    reading = codec.decode_pdu(_recording("apc-8641"))
    assert reading.device_power_w == 1230.0
    assert len(reading.outlets) == 24
    first = reading.outlets[0]
    assert (first.number, first.name, first.power_w, first.is_on) == (
        1,
        "CP-CM-SAN-01",
        163.0,
        True,
    )
    # Outlet 8 is switched off in the recording and meters 0 W.
    eighth = reading.outlets[7]
    assert (eighth.is_on, eighth.power_w) == (False, 0.0)
    # The metered outlets add up to less than the device total (PDU overhead, sampling skew).
    outlets_w = sum(o.power_w or 0.0 for o in reading.outlets)
    assert outlets_w == 1117.0
    assert outlets_w < reading.device_power_w


def test_rpdu2_device_power_is_hundredths_of_kw() -> None:
    values = _recording("apc-8641")
    del values[codec.RPDU_IDENT_DEVICE_POWER_W]
    # 121 hundredths of kW = 1210 W, next to the 1230 W rPDUIdentDevicePowerWatts reports.
    assert codec.decode_device_power_w(values) == 1210.0
    values8932 = _recording("apc-8932")
    del values8932[codec.RPDU_IDENT_DEVICE_POWER_W]
    assert codec.decode_device_power_w(values8932) == 160.0


def test_unsupported_minus_one_is_not_a_power() -> None:
    values = _recording("apc-7902b")
    assert values[f"{codec.RPDU2_DEVICE_STATUS_POWER}.1"] == -1
    assert codec.decode_device_power_w(values) == 192.0
    del values[codec.RPDU_IDENT_DEVICE_POWER_W]
    assert codec.decode_device_power_w(values) is None
    reading = codec.decode_pdu(values)
    assert all(o.power_w is None for o in reading.outlets)
    assert [o.is_on for o in reading.outlets[:3]] == [True, True, False]


def test_samples_carry_rack_source_and_kind() -> None:
    reading = codec.decode_pdu(_recording("apc-8641"))
    samples = codec.pdu_samples(reading, "snmp:test", "r7", 1000.0)
    assert samples[0].kind == "pdu" and samples[0].power_w == 1230.0
    assert samples[0].server_id is None
    outlets = [s for s in samples if s.kind == "outlet"]
    assert len(outlets) == 24
    assert outlets[0].server_id == "outlet-1" and outlets[0].rack_id == "r7"


def test_wrong_type_names_the_oid() -> None:
    with pytest.raises(codec.SnmpCodecError, match=r"12\.1\.16\.0: expected an INTEGER, got bytes"):
        codec.decode_device_power_w({codec.RPDU_IDENT_DEVICE_POWER_W: b"1230"})
    with pytest.raises(codec.SnmpCodecError, match="expected an OCTET STRING"):
        codec.decode_outlets(
            {
                f"{codec.RPDU2_OUTLET_METERED_POWER}.1": 5,
                f"{codec.RPDU2_OUTLET_METERED_NAME}.1": 7,
            }
        )
    with pytest.raises(codec.SnmpCodecError, match="negative value -5"):
        codec.decode_device_power_w({codec.RPDU_IDENT_DEVICE_POWER_W: -5})


def test_encode_outlet_command() -> None:
    assert codec.encode_outlet_command(3, on=False) == (f"{codec.RPDU_OUTLET_CONTROL_COMMAND}.3", 2)
    assert codec.encode_outlet_command(3, on=True, table="rpdu2") == (
        f"{codec.RPDU2_OUTLET_SWITCHED_COMMAND}.3",
        1,
    )
    with pytest.raises(codec.SnmpCodecError, match="positive integer"):
        codec.encode_outlet_command(0, on=True)
    with pytest.raises(codec.SnmpCodecError, match="unknown outlet control table"):
        codec.encode_outlet_command(1, on=True, table="rpdu3")  # type: ignore[arg-type]


def test_check_set_response() -> None:
    oid = f"{codec.RPDU_OUTLET_CONTROL_COMMAND}.3"
    codec.check_set_response(oid, 2, {oid: 2})
    with pytest.raises(codec.SnmpCodecError, match="noSuchInstance"):
        codec.check_set_response(oid, 2, {oid: None})
    with pytest.raises(codec.SnmpCodecError, match="sent 2, the agent answered 1"):
        codec.check_set_response(oid, 2, {oid: 1})


def test_snmprec_round_trip_and_errors() -> None:
    text = format_snmprec({"1.3.6.1.10.1": 5, "1.3.6.1.9.2": b"\x00ab", "1.3.6.1.9.10": "x"})
    # Numeric arc order: 9.2 < 9.10 < 10.1.
    assert [r.oid for r in parse_snmprec(text.splitlines())] == [
        "1.3.6.1.9.2",
        "1.3.6.1.9.10",
        "1.3.6.1.10.1",
    ]
    assert snmprec_values(parse_snmprec(text.splitlines()))["1.3.6.1.9.2"] == b"\x00ab"
    with pytest.raises(SnmprecError, match="line 2"):
        parse_snmprec(["1.3.6.1|2|1", "garbage"])
    with pytest.raises(SnmprecError, match="cannot encode float"):
        format_snmprec({"1.3.6.1": 1.5})  # type: ignore[dict-item]


def test_rpdu2_switched_state_is_used_when_rpdu_table_is_absent() -> None:
    values: dict[str, codec.SnmpValue] = {
        f"{codec.RPDU2_OUTLET_SWITCHED_STATE}.1": codec.RPDU2_STATE_ON,
        f"{codec.RPDU2_OUTLET_SWITCHED_STATE}.2": codec.RPDU2_STATE_OFF,
        f"{codec.RPDU2_OUTLET_SWITCHED_NAME}.2": b"web-02 ",
    }
    outlets = codec.decode_outlets(values)
    assert [(o.number, o.is_on, o.name) for o in outlets] == [(1, True, None), (2, False, "web-02")]
