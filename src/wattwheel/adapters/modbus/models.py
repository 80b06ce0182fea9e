"""SunSpec model layouts read from pysunspec2's JSON model definitions.

A layout turns a model's point list into register offsets, so nothing in the codec hard-codes
an offset: offset 0 is the model ``ID`` register, 1 is ``L`` (the body length), the body
follows. Only fixed-size top-level groups are supported; that covers the models a flywheel
controller uses here (1, 124, 713, 802), whose repeating groups (802 has none; 1 has none) are
absent. A model with a repeating group is rejected with a clear error rather than mis-laid out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Register width of each fixed-size SunSpec point type (strings use the point's ``size``).
_TYPE_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "acc16": 1,
    "enum16": 1,
    "bitfield16": 1,
    "sunssf": 1,
    "count": 1,
    "pad": 1,
    "int32": 2,
    "uint32": 2,
    "acc32": 2,
    "enum32": 2,
    "bitfield32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "acc64": 4,
}


class SunSpecModelError(ValueError):
    """A SunSpec model definition or register block cannot be used as asked."""


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model: its register offset from the model's ``ID`` register.

    ``sf`` names the scale-factor point of the same model (or is None); ``symbols`` maps enum
    and bitfield symbol names to values.
    """

    name: str
    offset: int
    size: int
    type: str
    sf: str | None
    writable: bool
    symbols: dict[str, int]


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """The register layout of one SunSpec model. ``length`` is the ``L`` value (body only)."""

    model_id: int
    name: str
    length: int
    points: dict[str, PointDef]

    def point(self, name: str) -> PointDef:
        """The point named ``name``; a clear error if the model has no such point."""
        try:
            return self.points[name]
        except KeyError:
            raise SunSpecModelError(
                f"SunSpec model {self.model_id} ({self.name}) has no point {name!r}"
            ) from None

    @property
    def block_size(self) -> int:
        """Registers of the whole block: ``ID`` + ``L`` + body."""
        return self.length + 2


def _point_size(raw: dict[str, object]) -> int:
    ptype = str(raw["type"])
    if ptype == "string":
        return int(str(raw["size"]))
    if ptype not in _TYPE_WIDTH:
        raise SunSpecModelError(f"point {raw.get('name')!r}: unsupported SunSpec type {ptype!r}")
    return _TYPE_WIDTH[ptype]


def layout_from_definition(definition: dict[str, object]) -> ModelLayout:
    """Lay out a model from its pysunspec2 JSON definition (a dict)."""
    group = definition["group"]
    if not isinstance(group, dict):
        raise SunSpecModelError("model definition has no top-level group")
    model_id = int(str(definition["id"]))
    if group.get("groups"):
        raise SunSpecModelError(f"SunSpec model {model_id} has nested groups: not supported")
    points: dict[str, PointDef] = {}
    offset = 0
    for raw in group["points"]:
        size = _point_size(raw)
        sf = raw.get("sf")
        points[raw["name"]] = PointDef(
            name=raw["name"],
            offset=offset,
            size=size,
            type=raw["type"],
            sf=sf if isinstance(sf, str) else None,
            writable=raw.get("access") == "RW",
            symbols={s["name"]: int(s["value"]) for s in raw.get("symbols", [])},
        )
        offset += size
    return ModelLayout(model_id=model_id, name=str(group["name"]), length=offset - 2, points=points)


#: Vendor models (SunSpec's 64000-65535 range) whose definitions wattwheel ships itself.
VENDOR_MODELS = frozenset({64220})


@cache
def load_layout(model_id: int) -> ModelLayout:
    """The layout of SunSpec model ``model_id`` from the definitions shipped with pysunspec2
    (wattwheel's own vendor models from ``adapters/modbus/vendor``)."""
    if model_id in VENDOR_MODELS:
        own = resources.files("wattwheel.adapters.modbus").joinpath(
            "vendor", f"model_{model_id}.json"
        )
        return layout_from_definition(json.loads(own.read_text(encoding="utf-8")))
    source = resources.files("sunspec2").joinpath("models", "json", f"model_{model_id}.json")
    if not source.is_file():
        raise SunSpecModelError(f"pysunspec2 has no definition for SunSpec model {model_id}")
    definition = json.loads(source.read_text(encoding="utf-8"))
    return layout_from_definition(definition)
