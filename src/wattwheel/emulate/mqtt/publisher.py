"""An MQTT telemetry publisher for the emulated site: one batch per rack and period.

Each period it asks the power source for every rack's draw and publishes it with
:class:`wattwheel.adapters.mqtt.client.MqttPublisher` (QoS 1, buffered in memory while the
broker is down), in the payload documented in :mod:`wattwheel.adapters.mqtt.codec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wattwheel.adapters.mqtt.client import Backoff, BrokerAddress, MqttPublisher
from wattwheel.domain.telemetry import PowerSample

log = logging.getLogger(__name__)

SOURCE = "emulate:mqtt"


class RackPowerSource(Protocol):
    """The power a rack draws right now, in watts."""

    def power_w(self, rack_id: str) -> float: ...


def site_samples(
    racks: Sequence[str],
    source: RackPowerSource,
    timestamp_s: float,
    servers: Mapping[str, Sequence[str]] | None = None,
) -> list[PowerSample]:
    """This instant's samples: one ``rack`` sample per rack, or, for racks listed in
    ``servers``, one ``server`` sample per server (an equal share of the rack's power)."""
    samples: list[PowerSample] = []
    for rack_id in racks:
        rack_w = source.power_w(rack_id)
        members = (servers or {}).get(rack_id)
        if not members:
            samples.append(PowerSample(SOURCE, rack_id, None, timestamp_s, rack_w, "rack"))
            continue
        share_w = rack_w / len(members)
        samples.extend(
            PowerSample(SOURCE, rack_id, server_id, timestamp_s, share_w, "server")
            for server_id in members
        )
    return samples


@dataclass
class MqttEmulatorHandle:
    """A running publisher: its :class:`MqttPublisher` (counters, buffer) and ``stop()``."""

    publisher: MqttPublisher
    _tasks: list[asyncio.Task[None]] = field(repr=False)

    async def stop(self) -> None:
        """Stop sampling and publishing (samples still buffered are dropped)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def start_mqtt_emulator(
    racks: Sequence[str],
    source: RackPowerSource,
    broker: BrokerAddress,
    site: str,
    *,
    period_s: float = 1.0,
    servers: Mapping[str, Sequence[str]] | None = None,
    clock: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
) -> MqttEmulatorHandle:
    """Publish the site's telemetry every ``period_s`` seconds on ``wattwheel/<site>/...``."""
    if period_s <= 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    publisher = MqttPublisher(broker, site, client_id=f"wattwheel-emulator-{site}", backoff=backoff)
    rack_list = list(racks)

    async def sample_forever() -> None:
        while True:
            publisher.submit(site_samples(rack_list, source, clock(), servers))
            await asyncio.sleep(period_s)

    tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(sample_forever())]
    log.info(
        "MQTT telemetry emulator: %d racks to %s:%d every %.3g s",
        len(rack_list),
        broker.host,
        broker.port,
        period_s,
    )
    return MqttEmulatorHandle(publisher, tasks)
