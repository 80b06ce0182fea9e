"""The snmpsim ``.snmprec`` text format: ``OID|TAG|VALUE`` per line, sorted by OID.

Used to read recorded PDU walks in tests and to write simulation data for ``snmpsim``. Only the
plain tags are decoded; a line with a variation module (``2:numeric|...``) is kept as raw text.

Tags (ASN.1 / SNMP application types): 2 INTEGER, 4 OCTET STRING (``4x`` = hex encoded),
5 NULL, 6 OBJECT IDENTIFIER, 64 IpAddress, 65 Counter32, 66 Gauge32, 67 TimeTicks,
68 Opaque, 70 Counter64.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from wattwheel.adapters.snmp.codec import SnmpValue
from wattwheel.domain.errors import WattwheelError

_INT_TAGS = {"2", "65", "66", "67", "70"}


class SnmprecError(WattwheelError):
    """A ``.snmprec`` line that cannot be parsed; names the line."""


@dataclass(frozen=True)
class SnmprecRecord:
    """One line: the OID, its tag (with variation suffix, e.g. ``2:writecache``) and raw value."""

    oid: str
    tag: str
    raw: str

    @property
    def variation(self) -> str | None:
        return self.tag.split(":", 1)[1] if ":" in self.tag else None

    def value(self) -> SnmpValue:
        """The decoded value (int, bytes or OID string); None for variation or unknown tags."""
        if self.variation is not None:
            return None
        if self.tag in _INT_TAGS:
            return int(self.raw)
        if self.tag == "4":
            return self.raw.encode("latin-1")
        if self.tag == "4x":
            return bytes.fromhex(self.raw)
        if self.tag in ("6", "64"):
            return self.raw
        return None


def parse_snmprec(lines: Iterable[str]) -> list[SnmprecRecord]:
    """Parse ``.snmprec`` text lines (blank lines and ``#`` comments skipped)."""
    records: list[SnmprecRecord] = []
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text or text.startswith("#"):
            continue
        parts = text.split("|", 2)
        if len(parts) != 3:
            raise SnmprecError(f"line {number}: expected OID|TAG|VALUE, got {text[:60]!r}")
        records.append(SnmprecRecord(*parts))
    return records


def snmprec_values(records: Iterable[SnmprecRecord]) -> dict[str, SnmpValue]:
    """OID -> decoded value, the shape :mod:`wattwheel.adapters.snmp.codec` decodes."""
    return {r.oid: r.value() for r in records}


def format_snmprec(
    values: Mapping[str, int | bytes | str], writecache: Collection[str] = ()
) -> str:
    """Render OID -> value as ``.snmprec`` text, sorted by OID as snmpsim requires.

    ints become INTEGER (tag 2), bytes become hex OCTET STRING (4x), str becomes OCTET STRING.
    INTEGER OIDs listed in ``writecache`` are made writable with snmpsim's ``writecache``
    variation (``OID|2:writecache|value=N``).
    """
    lines: list[str] = []
    for oid in sorted(values, key=oid_key):
        value = values[oid]
        if isinstance(value, bool) or not isinstance(value, int | bytes | str):
            raise SnmprecError(f"{oid}: cannot encode {type(value).__name__} {value!r}")
        if oid in writecache:
            if not isinstance(value, int):
                raise SnmprecError(f"{oid}: only INTEGER objects can be made writable")
            lines.append(f"{oid}|2:writecache|value={value}")
        elif isinstance(value, int):
            lines.append(f"{oid}|2|{value}")
        elif isinstance(value, bytes):
            lines.append(f"{oid}|4x|{value.hex()}")
        else:
            lines.append(f"{oid}|4x|{value.encode('utf-8').hex()}")
    return "\n".join(lines) + "\n"


def oid_key(oid: str) -> tuple[int, ...]:
    """Sort key putting OIDs in SNMP lexicographic order (numeric per arc)."""
    return tuple(int(arc) for arc in oid.strip(".").split("."))
