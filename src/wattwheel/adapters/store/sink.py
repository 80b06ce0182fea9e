"""The telemetry sink an MQTT ingester acknowledges behind: it returns only once the samples are
durable (committed to the database, or fsync'ed to the store's spill journal that the next start
replays), and raises otherwise, so the ingester leaves the messages unacknowledged with the
broker (which redelivers them).

The contract with :class:`~wattwheel.adapters.mqtt.client.MqttIngester`: its ``sink`` is an
``async (list[PowerSample]) -> None`` that raises when the batch was not taken; a PUBACK is sent
only after the call returned. Samples stored here are the audit copy: whoever also feeds them to
the control loop must not store them a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from wattwheel.domain.telemetry import PowerSample


class StoreRefused(Exception):
    """The store did not make the batch durable (its spill is full): do not acknowledge it."""


class DurableTelemetryStore(Protocol):
    """What the sink needs: a store whose ``write_telemetry`` returns True once durable."""

    @property
    def durable(self) -> bool: ...

    def write_telemetry(self, samples: Sequence[PowerSample]) -> bool: ...


class DurableTelemetrySink:
    """``await sink(samples)`` returns once ``samples`` are durable, else raises.

    Args:
        store: a :class:`~wattwheel.adapters.store.buffer.BufferedStore` with a spill directory
            (ValueError otherwise: a memory buffer would acknowledge what a crash loses).
        then: called with the samples after they are durable (e.g. the control loop's buffer).
    """

    def __init__(
        self,
        store: DurableTelemetryStore,
        then: Callable[[list[PowerSample]], Awaitable[None]] | None = None,
    ) -> None:
        if not store.durable:
            raise ValueError(
                "DurableTelemetrySink needs a store with a spill directory (durable writes); "
                "open it with open_store(url, spill_dir=...)"
            )
        self.store = store
        self.then = then
        self.stored_samples = 0

    async def __call__(self, samples: list[PowerSample]) -> None:
        if samples:
            if not await asyncio.to_thread(self.store.write_telemetry, samples):
                raise StoreRefused(
                    f"store refused {len(samples)} samples (spill full): left unacknowledged"
                )
            self.stored_samples += len(samples)
        if self.then is not None:
            await self.then(samples)
