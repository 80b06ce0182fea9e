"""One power reading from a live device, and the checks every reading passes before use.

Every adapter (Redfish, SNMP, MQTT, Modbus) turns its wire format into :class:`PowerSample`;
:func:`check_sample` is the single place that decides whether a reading may reach the policy
(DESIGN §6: NaN, negative, absurd, stale or future readings are detected and named).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

#: What a sample measures: one server, one PDU outlet, a whole PDU, or a whole rack.
SAMPLE_KINDS: frozenset[str] = frozenset({"server", "outlet", "pdu", "rack"})

#: A timestamp this far ahead of the reader's clock is a clock error, not a reading (seconds).
FUTURE_TOLERANCE_S = 5.0

ProblemCode = Literal["nan", "negative", "absurd", "stale", "future", "kind"]


@dataclass(frozen=True)
class PowerSample:
    """A power reading.

    Attributes:
        source: where it came from, e.g. ``"snmp:10.0.0.5"`` or ``"mqtt"``.
        rack_id: the rack the reading belongs to.
        server_id: the server, outlet id or None for PDU/rack totals.
        timestamp_s: epoch seconds when the value was measured (or received, if the device
            gives no time).
        power_w: active power in watts.
        kind: one of :data:`SAMPLE_KINDS`.
    """

    source: str
    rack_id: str
    server_id: str | None
    timestamp_s: float
    power_w: float
    kind: str = "server"


@dataclass(frozen=True)
class SampleProblem:
    """Why a sample was rejected: a machine code and a sentence naming the value."""

    code: ProblemCode
    message: str


def check_sample(
    sample: PowerSample,
    now_s: float,
    max_age_s: float,
    max_power_w: float,
    max_future_s: float = FUTURE_TOLERANCE_S,
) -> SampleProblem | None:
    """Return the first problem with ``sample`` or None if it is usable.

    Args:
        sample: the reading.
        now_s: the reader's clock, epoch seconds.
        max_age_s: readings older than this (seconds) are stale.
        max_power_w: readings above this (watts) are absurd (a wrong unit, a corrupt sensor,
            more than the rack's rating).
        max_future_s: timestamps further ahead of ``now_s`` (seconds) are a clock error or
            a forgery.
    """
    where = f"{sample.source} rack {sample.rack_id!r}" + (
        f" server {sample.server_id!r}" if sample.server_id is not None else ""
    )
    if sample.kind not in SAMPLE_KINDS:
        return SampleProblem("kind", f"{where}: unknown kind {sample.kind!r}")
    if not (math.isfinite(sample.power_w) and math.isfinite(sample.timestamp_s)):
        return SampleProblem(
            "nan", f"{where}: power {sample.power_w!r} W at {sample.timestamp_s!r} is not finite"
        )
    if sample.power_w < 0:
        return SampleProblem("negative", f"{where}: negative power {sample.power_w!r} W")
    if sample.power_w > max_power_w:
        return SampleProblem(
            "absurd", f"{where}: {sample.power_w!r} W exceeds the plausible {max_power_w!r} W"
        )
    age_s = now_s - sample.timestamp_s
    if age_s > max_age_s:
        return SampleProblem("stale", f"{where}: reading is {age_s:.1f} s old (max {max_age_s} s)")
    if -age_s > max_future_s:
        return SampleProblem("future", f"{where}: timestamp is {-age_s:.1f} s in the future")
    return None


class TelemetrySource(Protocol):
    """Anything that yields the latest power readings (one adapter per protocol)."""

    async def read(self) -> list[PowerSample]:
        """The readings gathered since the previous call (never raises on a device fault)."""
        ...


@dataclass(frozen=True)
class MessageRejection:
    """Messages a transport rejected before they became samples (e.g. the MQTT quarantine):
    ``count`` of them for ``reason`` since the last report, ``detail`` naming the latest."""

    reason: str
    count: int
    detail: str


@runtime_checkable
class ReportsRejections(Protocol):
    """A telemetry source that can also say which whole messages it rejected."""

    def take_rejections(self) -> list[MessageRejection]:
        """Rejections since the previous call, one entry per reason."""
        ...


class FakeTelemetrySource:
    """In-memory :class:`TelemetrySource` for tests and the simulator: returns queued batches."""

    def __init__(self, batches: list[list[PowerSample]] | None = None) -> None:
        self._batches = list(batches or [])

    def push(self, samples: list[PowerSample]) -> None:
        self._batches.append(list(samples))

    async def read(self) -> list[PowerSample]:
        return self._batches.pop(0) if self._batches else []
