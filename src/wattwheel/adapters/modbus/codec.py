"""SunSpec register codec: typed values <-> 16-bit holding registers. Pure, no sockets.

Register conventions (SunSpec Information Model):
- big-endian words; 32-bit points are two registers, high word first;
- a point with a scale factor holds ``round(value / 10**sf)``; the scale factor (``sunssf``) is
  itself an int16 register of the same model holding the exponent;
- "not implemented" is 0x8000 (int16, sunssf, pad), 0xFFFF (uint16, enum16, bitfield16),
  0x80000000 / 0xFFFFFFFF for the 32-bit kinds, 0 for accumulators and strings (all NULs);
- the map starts with the marker "SunS" (0x5375 0x6E53) at the base address (40000 is the
  usual one), then each model as ``ID, L, body[L]``, and ends with ``0xFFFF, 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wattwheel.adapters.modbus.models import ModelLayout, PointDef, SunSpecModelError

SUNSPEC_BASE_ADDRESS = 40000
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF

Value = float | int | str | None

_NOT_IMPLEMENTED_16: dict[str, int] = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "pad": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0xFFFF,
    "acc16": 0,
}
_NOT_IMPLEMENTED_32: dict[str, int] = {
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc32": 0,
}
_SIGNED = {"int16", "sunssf", "int32"}
# Raw integer range each type can carry (the not-implemented value excluded).
_RAW_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-0x7FFF, 0x7FFF),
    "sunssf": (-10, 10),
    "uint16": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "bitfield16": (0, 0x7FFF),
    "count": (0, 0xFFFE),
    "acc16": (0, 0xFFFF),
    "int32": (-0x7FFFFFFF, 0x7FFFFFFF),
    "uint32": (0, 0xFFFFFFFE),
    "enum32": (0, 0xFFFFFFFE),
    "bitfield32": (0, 0x7FFFFFFF),
    "acc32": (0, 0xFFFFFFFF),
}


class SunSpecValueError(ValueError):
    """A value cannot be encoded in (or decoded from) a SunSpec point."""


# --- single points ---------------------------------------------------------------------------


def _to_words(raw: int, size: int) -> list[int]:
    mask = (1 << (16 * size)) - 1
    raw &= mask
    return [(raw >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def _from_words(words: Sequence[int]) -> int:
    raw = 0
    for word in words:
        raw = (raw << 16) | (word & 0xFFFF)
    return raw


def not_implemented(point: PointDef) -> list[int]:
    """The registers meaning "not implemented" for ``point``."""
    if point.type == "string":
        return [0] * point.size
    table = _NOT_IMPLEMENTED_16 if point.size == 1 else _NOT_IMPLEMENTED_32
    if point.type not in table:
        raise SunSpecValueError(f"{point.name}: type {point.type} not supported by the codec")
    return _to_words(table[point.type], point.size)


def encode_raw(point: PointDef, raw: int | str | None) -> list[int]:
    """Registers for an unscaled raw value (int, or str for strings); None = not implemented."""
    if raw is None:
        return not_implemented(point)
    if point.type == "string":
        data = str(raw).encode("ascii")
        if len(data) > 2 * point.size:
            raise SunSpecValueError(
                f"{point.name}: string {raw!r} longer than {2 * point.size} bytes"
            )
        data = data.ljust(2 * point.size, b"\0")
        return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]
    if isinstance(raw, str):
        raise SunSpecValueError(f"{point.name}: expected an integer, got string {raw!r}")
    low, high = _RAW_RANGE[point.type]
    if not low <= raw <= high:
        raise SunSpecValueError(
            f"{point.name}: raw value {raw} outside [{low}, {high}] for type {point.type}"
        )
    return _to_words(raw, point.size)


def decode_raw(point: PointDef, registers: Sequence[int]) -> int | str | None:
    """The unscaled raw value of ``point``; None when it reads "not implemented"."""
    if len(registers) != point.size:
        raise SunSpecValueError(
            f"{point.name}: expected {point.size} registers, got {len(registers)}"
        )
    if point.type == "string":
        data = b"".join(bytes(((w >> 8) & 0xFF, w & 0xFF)) for w in registers)
        text = data.split(b"\0", 1)[0].decode("ascii", errors="replace")
        return text or None
    if list(registers) == not_implemented(point) and point.type not in ("acc16", "acc32"):
        return None
    raw = _from_words(registers)
    if point.type in _SIGNED and raw >= 1 << (16 * point.size - 1):
        raw -= 1 << (16 * point.size)
    return raw


def scale(raw: int, sf: int | None) -> float:
    """Engineering value of a raw register value with scale-factor exponent ``sf``."""
    return float(raw) * (10.0**sf) if sf else float(raw)


def unscale(point: PointDef, value: float, sf: int | None) -> int:
    """Raw register value for engineering ``value`` (rounded to the point's resolution)."""
    if value != value:  # NaN: refuse rather than write garbage to a device
        raise SunSpecValueError(f"{point.name}: value is NaN")
    return round(value / (10.0**sf)) if sf else round(value)


# --- model blocks ----------------------------------------------------------------------------


def _scale_factor_of(layout: ModelLayout, point: PointDef, values: Mapping[str, Value]) -> int:
    assert point.sf is not None
    sf = values.get(point.sf)
    if not isinstance(sf, int):
        raise SunSpecValueError(
            f"model {layout.model_id}: {point.name} needs its scale factor {point.sf} "
            "as an int exponent"
        )
    return sf


def _encode_point(layout: ModelLayout, point: PointDef, values: Mapping[str, Value]) -> list[int]:
    value = values.get(point.name)
    if point.type == "string":
        return encode_raw(point, None if value is None else str(value))
    if value is None or isinstance(value, str):
        return encode_raw(point, value)
    if point.sf is None:
        return encode_raw(point, unscale(point, value, None))
    return encode_raw(point, unscale(point, value, _scale_factor_of(layout, point, values)))


def encode_model(layout: ModelLayout, values: Mapping[str, Value]) -> list[int]:
    """The block ``ID, L, body`` of one model from engineering values.

    ``values`` maps point names to engineering values (scale-factor points to their int
    exponent, strings to str); points left out read "not implemented". Unknown names are an
    error, so a typo cannot silently drop a value.
    """
    unknown = set(values) - set(layout.points) - {"ID", "L"}
    if unknown:
        raise SunSpecModelError(
            f"model {layout.model_id} ({layout.name}) has no point(s) {sorted(unknown)}"
        )
    block: list[int] = [layout.model_id, layout.length]
    for name, point in layout.points.items():
        if name in ("ID", "L"):
            continue
        block.extend(_encode_point(layout, point, values))
    return block


def _check_block(layout: ModelLayout, block: Sequence[int]) -> None:
    if len(block) < layout.block_size:
        raise SunSpecValueError(
            f"model {layout.model_id}: block of {len(block)} registers, need {layout.block_size}"
        )
    if block[0] != layout.model_id or block[1] != layout.length:
        raise SunSpecValueError(
            f"model {layout.model_id}: block header is ID={block[0]} L={block[1]}, "
            f"expected ID={layout.model_id} L={layout.length}"
        )


def point_registers(point: PointDef, block: Sequence[int]) -> Sequence[int]:
    """The registers of ``point`` inside a model ``block`` (which starts at ``ID``)."""
    return block[point.offset : point.offset + point.size]


def decode_model(layout: ModelLayout, block: Sequence[int]) -> dict[str, Value]:
    """Engineering values of every point of a model block (None = not implemented).

    Scale-factor points decode to their int exponent; a scaled point whose scale factor is
    not implemented decodes to None (its value cannot be interpreted).
    """
    _check_block(layout, block)
    raws = {name: decode_raw(p, point_registers(p, block)) for name, p in layout.points.items()}
    values: dict[str, Value] = {}
    for name, point in layout.points.items():
        raw = raws[name]
        if point.sf is None or raw is None or isinstance(raw, str):
            values[name] = raw
            continue
        sf = raws.get(point.sf)
        values[name] = scale(raw, sf) if isinstance(sf, int) else None
    return values


# --- the whole map ---------------------------------------------------------------------------


def build_image(blocks: Sequence[Sequence[int]]) -> list[int]:
    """The SunSpec register map: marker, each model block in order, end model."""
    image: list[int] = list(SUNSPEC_MARKER)
    for block in blocks:
        image.extend(block)
    image.extend([END_MODEL_ID, 0])
    return image


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """Where a model block sits: ``address`` of its ``ID`` register and its ``L``."""

    model_id: int
    address: int
    length: int


def is_sunspec_marker(registers: Sequence[int]) -> bool:
    """True if the two registers read "SunS"."""
    return tuple(registers[:2]) == SUNSPEC_MARKER


def walk_models(image: Sequence[int], base_address: int) -> list[ModelLocation]:
    """Locate every model of a register image that starts with the marker at ``base_address``.

    The same walk the client does over the wire, but over an in-memory image (used by the
    emulator and the tests).
    """
    if not is_sunspec_marker(image):
        raise SunSpecValueError(f"no SunSpec marker at {base_address}: {list(image[:2])}")
    found: list[ModelLocation] = []
    offset = 2
    while offset + 1 < len(image):
        model_id, length = image[offset], image[offset + 1]
        if model_id == END_MODEL_ID:
            return found
        found.append(ModelLocation(model_id, base_address + offset, length))
        offset += 2 + length
    raise SunSpecValueError("SunSpec map has no end model (0xFFFF) before the image ends")
