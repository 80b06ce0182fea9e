"""Async SNMP v2c client for one APC rack PDU: read device/outlet power, switch outlets.

A thin layer over ``pysnmp.hlapi.v3arch.asyncio``: it fetches variable bindings, turns pysnmp
objects into plain values and hands them to :mod:`wattwheel.adapters.snmp.codec`.

Faults never reach the control loop from :meth:`ApcPduClient.read`: a PDU that stops answering
is logged once at WARNING (then DEBUG until it answers again) and ``read`` returns the last good
samples with their original timestamps, so :func:`wattwheel.domain.telemetry.check_sample`
flags them stale. Commands are different: :meth:`ApcPduClient.set_outlet` raises, because the
caller must know a shed did not happen.

Shedding safety: switching an outlet OFF is only allowed for outlets in the target's explicit
``sheddable_outlets`` allow-list; any other outlet is critical and the request is refused before
anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    Counter32,
    Counter64,
    EndOfMibView,
    Gauge32,
    Integer,
    Integer32,
    NoSuchInstance,
    NoSuchObject,
    Null,
    ObjectIdentifier,
    ObjectIdentity,
    ObjectType,
    OctetString,
    SnmpEngine,
    TimeTicks,
    UdpTransportTarget,
    bulk_cmd,
    bulk_walk_cmd,
    get_cmd,
    set_cmd,
)

from wattwheel.adapters.snmp import codec
from wattwheel.adapters.snmp.codec import ControlTable, PduReading, SnmpValue
from wattwheel.adapters.snmp.snmprec import oid_key
from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.telemetry import PowerSample

log = logging.getLogger(__name__)

#: Columns walked on every read: what changes (power, outlet states).
POLLED_COLUMNS = (
    codec.RPDU2_OUTLET_METERED_POWER,
    codec.RPDU_OUTLET_CONTROL_COMMAND,
    codec.RPDU2_OUTLET_SWITCHED_STATE,
)
#: Columns walked on the first successful read only: the outlet inventory (numbers, names).
INVENTORY_COLUMNS = (
    codec.RPDU2_OUTLET_METERED_NUMBER,
    codec.RPDU2_OUTLET_METERED_NAME,
    codec.RPDU2_OUTLET_SWITCHED_NAME,
)
DEVICE_SCALARS = (codec.RPDU_IDENT_DEVICE_POWER_W, f"{codec.RPDU2_DEVICE_STATUS_POWER}.1")


class SnmpUnavailable(WattwheelError):
    """The agent did not answer, or answered with an SNMP error; names the target."""


class OutletNotSheddable(WattwheelError):
    """Refused to switch off an outlet that is not in the shedding allow-list (critical load)."""


@dataclass(frozen=True)
class PduTarget:
    """Where a PDU is and what may be done to it.

    Attributes:
        rack_id: the rack its samples belong to.
        host, port: the agent's UDP endpoint.
        community: SNMP v2c community string.
        sheddable_outlets: outlet numbers that carry NON-critical load and may be switched off;
            every other outlet is treated as critical.
        control_table: ``"rpdu"`` (rPDUOutletControlOutletCommand), ``"rpdu2"``
            (rPDU2OutletSwitchedControlCommand) or ``"auto"``: rPDU when the agent implements
            it (every recorded APC agent does), else rPDU2, decided from the objects read.
        timeout_s: per-request timeout in seconds; retries: per-request retries.
        read_deadline_s: a whole :meth:`ApcPduClient.read` (GET + walks) gives up after this.
    """

    rack_id: str
    host: str
    port: int = 161
    community: str = "public"
    sheddable_outlets: frozenset[int] = field(default_factory=frozenset)
    control_table: ControlTable | Literal["auto"] = "auto"
    timeout_s: float = 1.0
    retries: int = 0
    read_deadline_s: float = 3.0

    @property
    def source(self) -> str:
        return f"snmp:{self.host}:{self.port}/{self.community}"


class ApcPduClient:
    """Reads one APC PDU and switches its non-critical outlets (a ``TelemetrySource``)."""

    def __init__(
        self,
        target: PduTarget,
        clock: Callable[[], float] = time.time,
        engine: SnmpEngine | None = None,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        """``engine`` and ``limiter`` may be shared by many clients: one UDP socket, and at
        most ``limiter``'s value requests in flight (a burst of answers from hundreds of PDUs
        would otherwise overflow the socket's receive buffer and be lost)."""
        self.target = target
        self._clock = clock
        self._engine = engine or SnmpEngine()
        self._owns_engine = engine is None
        self._limiter = limiter or asyncio.Semaphore(1)
        self._transport: UdpTransportTarget | None = None
        self._last_samples: list[PowerSample] = []
        self._inventory: dict[str, SnmpValue] | None = None
        self._has_rpdu_table: bool | None = None
        self.healthy = True
        self.failures = 0

    async def read(self) -> list[PowerSample]:
        """Latest samples, or the last good ones (old timestamps, i.e. stale) on a fault."""
        try:
            reading = await asyncio.wait_for(self.read_pdu(), self.target.read_deadline_s)
        except TimeoutError:
            self._note_failure(f"no complete reading within {self.target.read_deadline_s} s")
            return list(self._last_samples)
        except (SnmpUnavailable, codec.SnmpCodecError) as exc:
            self._note_failure(exc)
            return list(self._last_samples)
        self._note_recovery()
        self._last_samples = codec.pdu_samples(
            reading, self.target.source, self.target.rack_id, self._clock()
        )
        return list(self._last_samples)

    async def read_pdu(self) -> PduReading:
        """Device power and outlet power/state columns (usually one GETBULK). Raises on faults.

        Outlet numbers and names are read once (first call) and reused.
        """
        if self._inventory is None:
            self._inventory = await self.poll((), INVENTORY_COLUMNS)
        values = dict(self._inventory)
        # One more repetition than there are outlets: every column ends in a single request.
        outlets = max(
            sum(oid.startswith(column + ".") for oid in self._inventory)
            for column in INVENTORY_COLUMNS
        )
        repetitions = min(outlets + 1, 20)
        values.update(await self.poll(DEVICE_SCALARS, POLLED_COLUMNS, repetitions))
        self._has_rpdu_table = any(
            oid.startswith(codec.RPDU_OUTLET_CONTROL_COMMAND + ".") and v is not None
            for oid, v in values.items()
        )
        return codec.decode_pdu(values)

    async def set_outlet(self, outlet: int, on: bool) -> None:
        """Switch ``outlet`` on or off now; OFF only for an outlet in ``sheddable_outlets``."""
        if not on and outlet not in self.target.sheddable_outlets:
            raise OutletNotSheddable(
                f"outlet {outlet} of rack {self.target.rack_id!r} ({self.target.source}) is "
                f"critical: only outlets {sorted(self.target.sheddable_outlets)} may be shed"
            )
        oid, value = codec.encode_outlet_command(outlet, on, await self._control_table())
        response = await self._request(set_cmd, ObjectType(ObjectIdentity(oid), Integer32(value)))
        codec.check_set_response(oid, value, response)
        log.info("%s outlet %d switched %s", self.target.source, outlet, "on" if on else "off")

    async def _control_table(self) -> ControlTable:
        if self.target.control_table != "auto":
            return self.target.control_table
        if self._has_rpdu_table is None:
            rpdu_rows = await self.walk(codec.RPDU_OUTLET_CONTROL_COMMAND)
            self._has_rpdu_table = any(v is not None for v in rpdu_rows.values())
        return "rpdu" if self._has_rpdu_table else "rpdu2"

    async def get(self, oids: Collection[str]) -> dict[str, SnmpValue]:
        """GET these OIDs (missing objects map to None)."""
        return await self._request(get_cmd, *(ObjectType(ObjectIdentity(o)) for o in oids))

    async def poll(
        self, scalars: Sequence[str], columns: Sequence[str], max_repetitions: int = 20
    ) -> dict[str, SnmpValue]:
        """Scalars and whole table columns in as few GETBULK requests as possible.

        The scalars ride along as non-repeaters in the first request (a GETNEXT of the OID
        just before each, i.e. without its last arc); the columns are walked side by side, one
        repeater each, until every column has run past its end.
        """
        found: dict[str, SnmpValue] = {}
        cursors = {column: column for column in columns}
        previous = [scalar.rsplit(".", 1)[0] for scalar in scalars]
        while cursors:
            open_columns = list(cursors)
            answer = await self._bulk(previous, [cursors[c] for c in open_columns], max_repetitions)
            for scalar, (oid, value) in zip(scalars if previous else [], answer, strict=False):
                found[scalar] = value if oid == scalar else None
            rows = answer[len(previous) :]
            previous = []
            for i, (oid, value) in enumerate(rows):
                column = open_columns[i % len(open_columns)]
                if column not in cursors:
                    continue
                if value is None or not oid.startswith(column + "."):
                    del cursors[column]  # ran past the end of this column
                elif oid_key(oid) <= oid_key(cursors[column]):
                    raise SnmpUnavailable(
                        f"{self.target.source}: agent answered {oid} after {cursors[column]} "
                        "(OIDs must increase; refusing to loop)"
                    )
                else:
                    found[oid] = value
                    cursors[column] = oid
            if not rows:
                break
        return found

    async def _bulk(
        self, non_repeaters: Sequence[str], repeaters: Sequence[str], max_repetitions: int
    ) -> list[tuple[str, SnmpValue]]:
        async with self._limiter:
            error_indication, error_status, error_index, answer = await bulk_cmd(
                self._engine,
                self._auth(),
                await self._target(),
                ContextData(),
                len(non_repeaters),
                max_repetitions,
                *(ObjectType(ObjectIdentity(oid)) for oid in [*non_repeaters, *repeaters]),
                lookupMib=False,
            )
        self._raise_on_error(error_indication, error_status, error_index)
        return [(str(name), _plain(value)) for name, value in answer]

    async def walk(self, subtree: str) -> dict[str, SnmpValue]:
        """Every object under ``subtree`` (GETBULK walk)."""
        found: dict[str, SnmpValue] = {}
        walker = bulk_walk_cmd(
            self._engine,
            self._auth(),
            await self._target(),
            ContextData(),
            0,
            25,
            ObjectType(ObjectIdentity(subtree)),
            lexicographicMode=False,
            lookupMib=False,
        )
        async with self._limiter:
            async for error_indication, error_status, error_index, var_binds in walker:
                self._raise_on_error(error_indication, error_status, error_index)
                found.update(_plain_varbinds(var_binds))
        return found

    def close(self) -> None:
        """Release the UDP socket (only if this client created the engine)."""
        if self._owns_engine:
            self._engine.close_dispatcher()

    async def _request(self, command: Any, *var_binds: ObjectType) -> dict[str, SnmpValue]:
        async with self._limiter:
            error_indication, error_status, error_index, answer = await command(
                self._engine,
                self._auth(),
                await self._target(),
                ContextData(),
                *var_binds,
                lookupMib=False,  # numeric OIDs only: no MIB resolution (most of the CPU time)
            )
        self._raise_on_error(error_indication, error_status, error_index)
        return _plain_varbinds(answer)

    def _raise_on_error(self, indication: object, status: Any, index: object) -> None:
        if indication:
            raise SnmpUnavailable(f"{self.target.source}: {indication}")
        if status and int(status) != 0:
            raise SnmpUnavailable(
                f"{self.target.source}: SNMP error {status.prettyPrint()} at varbind {index}"
            )

    def _auth(self) -> CommunityData:
        return CommunityData(self.target.community, mpModel=1)

    async def _target(self) -> UdpTransportTarget:
        if self._transport is None:
            self._transport = await UdpTransportTarget.create(
                (self.target.host, self.target.port),
                timeout=self.target.timeout_s,
                retries=self.target.retries,
            )
        return self._transport

    def _note_failure(self, exc: Exception | str) -> None:
        self.failures += 1
        if self.healthy:
            log.warning("PDU %s unavailable, serving stale readings: %s", self.target.source, exc)
        else:
            log.debug("PDU %s still unavailable: %s", self.target.source, exc)
        self.healthy = False

    def _note_recovery(self) -> None:
        if not self.healthy:
            log.warning("PDU %s answers again after %d failures", self.target.source, self.failures)
        self.healthy = True


def _plain_varbinds(var_binds: Collection[Any]) -> dict[str, SnmpValue]:
    return {str(name): _plain(value) for name, value in var_binds}


def _plain(value: object) -> SnmpValue:
    """pysnmp value -> int / bytes / str, or None for the 'no object here' exceptions."""
    if isinstance(value, NoSuchObject | NoSuchInstance | EndOfMibView | Null):
        return None
    if isinstance(value, OctetString):
        return bytes(value)
    if isinstance(value, ObjectIdentifier):
        return str(value)
    if isinstance(value, Integer | Integer32 | Counter32 | Counter64 | Gauge32 | TimeTicks):
        return int(value)
    raise codec.SnmpCodecError(f"unsupported SNMP value type {type(value).__name__}")
