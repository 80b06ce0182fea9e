"""Redfish readings -> domain PowerSamples (pure: the clock reading is passed in).

Stale readings and readings without a value are left out: the runtime sees a missing sample and
applies its stale-sensor fallback, rather than an old value passed off as new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wattwheel.adapters.redfish.values import DiscoveredServer, OutletReading, ServerPowerReading
from wattwheel.domain.telemetry import PowerSample


@dataclass
class SampleBatch:
    """Samples made, and the resources left out because no rack is known for them."""

    samples: list[PowerSample] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)


def server_samples(
    readings: Iterable[ServerPowerReading],
    servers: Mapping[str, DiscoveredServer],
    source: str,
    default_rack: str | None,
    received_s: float,
) -> SampleBatch:
    """One `kind="server"` sample per fresh reading; `servers` keyed by chassis URI."""
    batch = SampleBatch()
    for reading in readings:
        server = servers.get(reading.chassis_uri)
        if reading.stale or reading.power_w is None or server is None:
            continue
        rack_id = server.rack or default_rack
        if rack_id is None:
            batch.unplaced.append(server.chassis_uri)
            continue
        timestamp_s = epoch_s(reading.timestamp, received_s)
        batch.samples.append(
            PowerSample(source, rack_id, server.chassis_id, timestamp_s, reading.power_w, "server")
        )
    return batch


def outlet_samples(
    outlets: Iterable[OutletReading], source: str, default_rack: str | None, received_s: float
) -> SampleBatch:
    """One `kind="outlet"` sample per fresh outlet reading (server_id = the outlet's Id)."""
    batch = SampleBatch()
    for outlet in outlets:
        if outlet.stale or outlet.power_w is None:
            continue
        rack_id = outlet.rack or default_rack
        if rack_id is None:
            batch.unplaced.append(outlet.uri)
            continue
        batch.samples.append(
            PowerSample(source, rack_id, outlet.outlet_id, received_s, outlet.power_w, "outlet")
        )
    return batch


def epoch_s(reading_time: str | None, default_s: float) -> float:
    """A device's ISO 8601 reading time in epoch seconds (UTC if it gives no offset)."""
    if reading_time is None:
        return default_s
    try:
        stamp = datetime.fromisoformat(reading_time)
    except ValueError:
        return default_s
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
