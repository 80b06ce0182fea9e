"""In-memory devices for tests, the benchmark and demos: they record what they are told and can
be made slow or dead, so every fallback of the loop can be exercised without a network."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wattwheel.domain.converter import ConverterSettings
from wattwheel.domain.shifts import ShiftOrder
from wattwheel.domain.telemetry import PowerSample
from wattwheel.runtime.ports import FlywheelStatusW


@dataclass
class FakeRackTelemetry:
    """Reports one PDU total per rack (W), stamped with ``now_s`` (set it from the test clock).

    ``delay_s`` makes every read take that long (real seconds): a slow device.
    """

    rack_power_w: dict[str, float]
    now_s: float = 0.0
    delay_s: float = 0.0
    kind: str = "pdu"
    reads: int = 0

    async def read(self) -> list[PowerSample]:
        self.reads += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [
            PowerSample("fake", rack, None, self.now_s, watts, self.kind)
            for rack, watts in self.rack_power_w.items()
        ]


@dataclass
class FakeServerTelemetry:
    """Reports each server's power: min(demand, cap) (W), like a capped BMC."""

    demand_w: dict[str, tuple[str, float]]  # server -> (rack, demand W)
    now_s: float = 0.0
    caps_w: dict[str, float] = field(default_factory=dict)

    async def read(self) -> list[PowerSample]:
        return [
            PowerSample(
                "fake-bmc", rack, sid, self.now_s, min(w, self.caps_w.get(sid, w)), "server"
            )
            for sid, (rack, w) in self.demand_w.items()
        ]


@dataclass
class FakeCapActuator:
    """Records caps (None lifts); ``dead`` refuses every write."""

    caps_w: dict[str, float] = field(default_factory=dict)
    writes: int = 0
    dead: bool = False

    async def set_caps(self, caps_w: Mapping[str, float | None]) -> dict[str, bool]:
        self.writes += len(caps_w)
        if self.dead:
            return dict.fromkeys(caps_w, False)
        self.caps_w.update(caps_w)  # type: ignore[arg-type]  # the lifts are popped next
        for sid in [sid for sid, cap in caps_w.items() if cap is None]:
            del self.caps_w[sid]
        return dict.fromkeys(caps_w, True)


@dataclass
class FakeOutletActuator:
    """Records outlet states; refuses to switch off anything in ``critical``."""

    critical: set[str] = field(default_factory=set)
    off: set[str] = field(default_factory=set)

    async def set_outlets(self, states: Mapping[str, bool]) -> dict[str, bool]:
        done = {}
        for key, on in states.items():
            if not on and key in self.critical:
                done[key] = False
                continue
            (self.off.discard if on else self.off.add)(key)
            done[key] = True
        return done


@dataclass
class FakeFlywheel:
    """A bank reporting a fixed status, recording setpoints; ``dead`` stops it answering."""

    soc: float = 1.0
    max_discharge_w: float = 100_000.0
    max_charge_w: float = 100_000.0
    dead: bool = False
    setpoints_w: list[float] = field(default_factory=list)
    #: Converter-loop parameters written to it (one domain's each).
    converter_settings: list[ConverterSettings] = field(default_factory=list)

    async def write_converter(self, settings: ConverterSettings) -> bool:
        if self.dead:
            return False
        self.converter_settings.append(settings)
        return True

    async def read(self) -> FlywheelStatusW | None:
        if self.dead:
            return None
        last = self.setpoints_w[-1] if self.setpoints_w else 0.0
        return FlywheelStatusW(self.soc, last, self.max_charge_w, self.max_discharge_w)

    async def write_setpoint(self, power_w: float) -> bool:
        if self.dead:
            return False
        self.setpoints_w.append(power_w)
        return True


@dataclass
class FakeScheduler:
    """Records the shift orders and deferral levels it was sent (``down``: not delivered)."""

    requests: list[tuple[float, list[ShiftOrder], dict[str, float]]] = field(default_factory=list)
    down: bool = False
    #: Ramp-up limits at job start it was sent: (now_s, kW/s per domain, duration_s).
    ramp_limits: list[tuple[float, dict[str, float], float]] = field(default_factory=list)

    async def ramp_limit(
        self, now_s: float, ramp_kw_per_s: Mapping[str, float], duration_s: float
    ) -> bool:
        if self.down:
            return False
        self.ramp_limits.append((now_s, dict(ramp_kw_per_s), duration_s))
        return True

    async def request(
        self, now_s: float, shifts: Sequence[ShiftOrder], defer_kw: Mapping[str, float]
    ) -> bool:
        if self.down:
            return False
        self.requests.append((now_s, list(shifts), dict(defer_kw)))
        return True
