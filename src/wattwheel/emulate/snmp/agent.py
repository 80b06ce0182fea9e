"""An SNMP v2c agent (pysnmp) serving one virtual APC PDU per rack on a single UDP port.

The community string selects the rack (community = rack id), as snmpsim does with file names.
Readings are computed at each request from the :class:`~wattwheel.emulate.snmp.pdu.
RackPowerSource`, so they follow the trace; outlet SETs switch the virtual outlets.
GET, GETNEXT, GETBULK and SET are supported.
"""

from __future__ import annotations

import bisect
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto.api import v2c
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from wattwheel.adapters.snmp.snmprec import oid_key
from wattwheel.emulate.snmp.pdu import PduCommandError, RackPowerSource, VirtualPdu

log = logging.getLogger(__name__)


class _PduInstrumentation(AbstractMibInstrumController):  # type: ignore[misc]
    """Answers SNMP operations for one rack's virtual PDU."""

    def __init__(self, pdu: VirtualPdu, source: RackPowerSource) -> None:
        self.pdu = pdu
        self.source = source
        self._cache_key: tuple[float, tuple[bool, ...]] | None = None
        self._cache: tuple[list[tuple[int, ...]], dict[tuple[int, ...], Any]] = ([], {})

    def _table(self) -> tuple[list[tuple[int, ...]], dict[tuple[int, ...], Any]]:
        # A GETBULK calls read_next once per repetition: rebuild the pyasn1 objects only when
        # the rack power or an outlet state changed.
        power_w = self.source.power_w(self.pdu.rack_id)
        key = (power_w, self.pdu.outlet_states())
        if key != self._cache_key:
            values = self.pdu.values(power_w)
            table = {oid_key(oid): _snmp_value(value) for oid, value in values.items()}
            self._cache_key, self._cache = key, (sorted(table), table)
        return self._cache

    def read_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        _, table = self._table()
        return [
            (name, table.get(tuple(name), v2c.NoSuchInstance(""))) for name, _value in var_binds
        ]

    def read_next_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        keys, table = self._table()
        answer: list[tuple[Any, Any]] = []
        for name, _value in var_binds:
            i = bisect.bisect_right(keys, tuple(name))
            if i < len(keys):
                answer.append((v2c.ObjectIdentifier(keys[i]), table[keys[i]]))
            else:
                answer.append((name, v2c.EndOfMibView("")))
        return answer

    def write_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        for index, (name, value) in enumerate(var_binds):
            oid = str(name)
            if not self.pdu.is_writable(oid):
                raise smi_error.NotWritableError(name=name, idx=index)
            try:
                self.pdu.apply_set(oid, int(value))
            except (PduCommandError, TypeError, ValueError):
                raise smi_error.WrongValueError(name=name, idx=index) from None
            log.info("rack %s: %s set to %s", self.pdu.rack_id, oid, int(value))
        return self.read_variables(*var_binds)


def _snmp_value(value: int | bytes | str) -> Any:
    if isinstance(value, int):
        return v2c.Integer32(value)
    return v2c.OctetString(value.encode() if isinstance(value, str) else value)


@dataclass
class SnmpEmulatorHandle:
    """A running PDU emulator: the bound UDP port, the PDUs by rack id, and ``stop()``."""

    host: str
    port: int
    pdus: dict[str, VirtualPdu]
    _engine: Any = field(repr=False)

    def community(self, rack_id: str) -> str:
        """The community string that reads ``rack_id``'s PDU."""
        if rack_id not in self.pdus:
            raise KeyError(f"no emulated PDU for rack {rack_id!r}")
        return rack_id

    async def stop(self) -> None:
        """Close the UDP socket."""
        self._engine.transport_dispatcher.close_dispatcher()


async def start_snmp_emulator(
    racks: Sequence[str] | Iterable[str],
    source: RackPowerSource,
    port: int = 1161,
    *,
    host: str = "127.0.0.1",
    outlets_per_pdu: int = 8,
) -> SnmpEmulatorHandle:
    """Serve a virtual APC PDU per rack on ``host:port`` (UDP; ``port=0`` picks a free one).

    The agent runs on the current event loop. The community string of each PDU is its rack id.
    """
    # Bind the socket ourselves so a busy port fails here and port 0 tells us what it got.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    snmp_engine = engine.SnmpEngine()
    transport = udp.UdpTransport().open_server_mode(sock=sock)
    await transport._lport  # the datagram endpoint is listening once this completes
    config.add_transport(snmp_engine, udp.DOMAIN_NAME, transport)
    snmp_context = context.SnmpContext(snmp_engine)
    pdus: dict[str, VirtualPdu] = {}
    for index, rack_id in enumerate(racks):
        if rack_id in pdus:
            raise ValueError(f"rack {rack_id!r} listed twice")
        pdus[rack_id] = VirtualPdu(rack_id, outlets_per_pdu)
        config.add_v1_system(snmp_engine, f"rack-{index}", rack_id, contextName=rack_id)
        snmp_context.register_context_name(
            rack_id.encode(), _PduInstrumentation(pdus[rack_id], source)
        )
    for responder in (
        cmdrsp.GetCommandResponder,
        cmdrsp.NextCommandResponder,
        cmdrsp.BulkCommandResponder,
        cmdrsp.SetCommandResponder,
    ):
        responder(snmp_engine, snmp_context)
    bound_port = int(sock.getsockname()[1])
    log.info("SNMP PDU emulator for %d racks on udp://%s:%d", len(pdus), host, bound_port)
    return SnmpEmulatorHandle(host, bound_port, pdus, snmp_engine)
