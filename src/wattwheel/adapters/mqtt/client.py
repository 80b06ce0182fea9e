"""MQTT telemetry over aiomqtt: a batching ingester and a buffering publisher.

Delivery guarantee ("acknowledged telemetry is never lost", DESIGN §6):

- Ingester: subscribes with QoS 1 on a persistent session (fixed client id,
  ``clean_session=False``) and acknowledges each message (PUBACK) only AFTER the sink accepted
  the batch holding it (manual acks). If the process dies or the sink fails, unacknowledged
  messages stay with the broker and are redelivered on reconnect. While the sink fails, the
  batch is retried with backoff and nothing is acknowledged, so the broker's in-flight window
  throttles the flow (back-pressure instead of loss). Delivery is at-least-once: a sink sees
  duplicates after a redelivery and must tolerate them (the store's key deduplicates).
- Publisher: samples wait in a bounded in-memory buffer and leave it only when the broker
  acknowledged their PUBLISH (QoS 1 PUBACK). While the broker is down the buffer fills; when it
  is full the OLDEST samples are dropped and counted (fresh telemetry is worth more).

A broker that goes away is logged once at WARNING, then at DEBUG until it is back; both loops
reconnect with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiomqtt

from wattwheel.adapters.mqtt import codec
from wattwheel.adapters.mqtt.quarantine import Quarantine
from wattwheel.domain.telemetry import PowerSample

log = logging.getLogger(__name__)

Sink = Callable[[list[PowerSample]], Awaitable[None]]


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the broker: its certificate is verified against ``ca_file`` (the system's CAs
    when None); ``cert_file``/``key_file`` present a client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in. ``keepalive_s`` bounds how long a dead broker
    goes unnoticed; ``tls`` None: plain TCP."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 10
    tls: TlsOptions | None = None


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``min_s`` doubling up to ``max_s`` (seconds)."""

    min_s: float = 0.1
    max_s: float = 5.0

    def delays(self) -> _Delays:
        return _Delays(self)


class _Delays:
    def __init__(self, policy: Backoff) -> None:
        self._policy = policy
        self._next_s = policy.min_s

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self._policy.max_s)
        return delay

    def reset(self) -> None:
        self._next_s = self._policy.min_s


class _OutageLog:
    """Log the first failure at WARNING, repeats at DEBUG, the recovery at WARNING."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if self.down:
            log.debug("%s still unavailable: %s", self.what, exc)
        else:
            log.warning("%s unavailable, retrying with backoff: %s", self.what, exc)
        self.down = True

    def recovered(self) -> None:
        if self.down:
            log.warning("%s available again", self.what)
        self.down = False


@dataclass
class IngestStats:
    """Counters of an ingester (since start)."""

    messages: int = 0
    samples: int = 0
    bad_messages: int = 0
    batches: int = 0
    sink_failures: int = 0
    connections: int = 0


@dataclass
class _Pending:
    samples: list[PowerSample] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    first_at_s: float | None = None


class SampleBuffer:
    """A sink that keeps ingested samples until the control loop reads them.

    Pass it as the ingester's ``sink`` (or call it from a sink that also stores the batch);
    it is a :class:`~wattwheel.domain.telemetry.TelemetrySource`: ``read()`` returns and
    forgets everything received since the previous call. At most ``max_samples`` are held;
    beyond that the oldest are dropped and counted (the loop only needs the latest readings,
    the store keeps the full history).
    """

    def __init__(self, max_samples: int = 1_000_000) -> None:
        self._samples: deque[PowerSample] = deque(maxlen=max_samples)
        self.dropped = 0

    async def __call__(self, samples: list[PowerSample]) -> None:
        overflow = len(self._samples) + len(samples) - (self._samples.maxlen or 0)
        self.dropped += max(overflow, 0)
        self._samples.extend(samples)

    async def read(self) -> list[PowerSample]:
        taken = list(self._samples)
        self._samples.clear()
        return taken


class MqttIngester:
    """Subscribe to telemetry topics and hand samples to ``sink`` in batches.

    A batch is flushed when it holds ``batch_max_samples`` samples, when
    ``batch_max_messages`` messages await acknowledgement (keep it at or below the broker's
    in-flight window, Mosquitto's default is 20), or ``batch_interval_s`` after its first
    message.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        topic_filter: str | Sequence[str],
        sink: Sink,
        *,
        client_id: str = "wattwheel-ingest",
        batch_max_samples: int = 5000,
        batch_max_messages: int = 20,
        batch_interval_s: float = 0.05,
        backoff: Backoff | None = None,
        unacked_flush_timeout_s: float = 5.0,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.broker = broker
        self.quarantine = quarantine or Quarantine()
        self.unacked_flush_timeout_s = unacked_flush_timeout_s
        self.topic_filter = topic_filter
        self.sink = sink
        self.client_id = client_id
        self.batch_max_samples = batch_max_samples
        self.batch_max_messages = batch_max_messages
        self.batch_interval_s = batch_interval_s
        self.backoff = backoff or Backoff()
        self.stats = IngestStats()
        self.subscribed = asyncio.Event()
        self._outage = _OutageLog(f"MQTT broker {broker.host}:{broker.port}")
        self._pending = _Pending()
        self._batch_ready = asyncio.Event()

    async def run(self) -> None:
        """Ingest until cancelled, reconnecting after any broker failure."""
        delays = self.backoff.delays()
        while True:
            raise_if_cancelling()
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                raise_if_cancelling()  # aiomqtt's __aexit__ may have replaced the cancellation
                self._outage.failed(exc)
                await asyncio.sleep(delays.next())
            else:
                delays.reset()

    async def _session(self) -> None:
        client = _client(self.broker, self.client_id, clean_session=False)
        # Acknowledge only after the sink took the batch (see module docstring).
        _paho(client).manual_ack_set(True)
        async with client:
            self.stats.connections += 1
            self._outage.recovered()
            if isinstance(self.topic_filter, str):
                await client.subscribe(self.topic_filter, qos=1)
            else:  # one shard's racks: a topic each, in one SUBSCRIBE
                await client.subscribe([(topic, 1) for topic in self.topic_filter])
            self.subscribed.set()
            flusher = asyncio.create_task(self._flush_forever(client))
            try:
                async for message in client.messages:
                    raise_if_cancelling()
                    self._accept(message)
                    if flusher.done():
                        flusher.result()
            except aiomqtt.MqttError:
                await self._stop(flusher)
                await self._flush_unacked()
                raise
            finally:
                # On cancellation (shutdown) the unacknowledged batch is simply dropped: the
                # persistent session redelivers it to the next ingester.
                await self._stop(flusher)

    @staticmethod
    async def _stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _accept(self, message: aiomqtt.Message) -> None:
        self.stats.messages += 1
        pending = self._pending
        if pending.first_at_s is None:
            pending.first_at_s = time.monotonic()
        if message.qos > 0:
            pending.message_ids.append(message.mid)
        topic, payload = str(message.topic.value), _payload_bytes(message.payload)
        try:
            samples = codec.decode_payload(topic, payload)
        except codec.MqttPayloadError as exc:
            self._count_bad(topic, payload, exc.reason, str(exc))
        except Exception as exc:  # a decoder bug must cost one message, never the ingester
            self._count_bad(topic, payload, "decoder-error", f"{type(exc).__name__}: {exc}")
        else:
            # Provenance is the transport's to say, not the payload's: whatever ``source`` a
            # publisher claims, these came over MQTT (the telemetry view never takes them
            # for a rack's meter).
            pending.samples.extend(_over_mqtt(s) for s in samples)
        if (
            len(pending.samples) >= self.batch_max_samples
            or len(pending.message_ids) >= self.batch_max_messages
        ):
            self._batch_ready.set()

    def _count_bad(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        # A malformed message will never become valid: it is acknowledged with its batch (no
        # redelivery loop), counted and quarantined (logged once per reason at WARNING).
        self.stats.bad_messages += 1
        self.quarantine.add(topic, reason, detail, time.time(), payload)

    async def _flush_forever(self, client: aiomqtt.Client) -> None:
        delays = self.backoff.delays()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_ready.wait(), self._time_to_deadline_s())
            raise_if_cancelling()
            self._batch_ready.clear()
            if not self._due():
                continue
            # Take the batch out first: messages arriving while the sink works start the next
            # batch and are acknowledged only with it.
            batch = self._take_pending()
            if await self._deliver(batch):
                for mid in batch.message_ids:
                    _paho(client).ack(mid, 1)
                delays.reset()
            else:
                self._put_back(batch)
                await asyncio.sleep(delays.next())

    def _time_to_deadline_s(self) -> float:
        if self._pending.first_at_s is None:
            return self.batch_interval_s
        elapsed_s = time.monotonic() - self._pending.first_at_s
        return max(self.batch_interval_s - elapsed_s, 0.0)

    def _due(self) -> bool:
        pending = self._pending
        if pending.first_at_s is None:
            return False
        return (
            len(pending.samples) >= self.batch_max_samples
            or len(pending.message_ids) >= self.batch_max_messages
            or time.monotonic() - pending.first_at_s >= self.batch_interval_s
        )

    def _take_pending(self) -> _Pending:
        batch, self._pending = self._pending, _Pending()
        return batch

    def _put_back(self, batch: _Pending) -> None:
        """Return an undelivered batch ahead of what arrived meanwhile (acks stay in order)."""
        newer = self._pending
        batch.samples.extend(newer.samples)
        batch.message_ids.extend(newer.message_ids)
        self._pending = batch

    async def _deliver(self, batch: _Pending) -> bool:
        """Hand a batch's samples to the sink; True when it accepted them."""
        if batch.samples:
            try:
                await self.sink(list(batch.samples))
            except Exception as exc:  # the sink is someone else's I/O: never crash ingest
                self.stats.sink_failures += 1
                log.warning(
                    "telemetry sink failed, holding %d samples unacknowledged: %s",
                    len(batch.samples),
                    exc,
                )
                return False
            self.stats.batches += 1
            self.stats.samples += len(batch.samples)
        return True

    async def _flush_unacked(self) -> None:
        # The connection is gone, so these cannot be acknowledged; a persistent session will
        # redeliver them, a restarted broker without persistence will not: deliver them now
        # (at-least-once, duplicates possible) rather than risk losing them. If the sink fails
        # or hangs they are left to the broker's redelivery.
        batch = self._take_pending()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._deliver(batch), self.unacked_flush_timeout_s)


class MqttPublisher:
    """Publish samples with QoS 1, buffering them in memory while the broker is unreachable."""

    def __init__(
        self,
        broker: BrokerAddress,
        site: str,
        *,
        client_id: str = "wattwheel-publisher",
        max_buffered_samples: int = 200_000,
        max_samples_per_message: int = 500,
        max_messages_in_flight: int = 20,
        backoff: Backoff | None = None,
    ) -> None:
        self.broker = broker
        self.site = site
        self.client_id = client_id
        self.max_samples_per_message = max_samples_per_message
        self.max_messages_in_flight = max_messages_in_flight
        self.backoff = backoff or Backoff()
        self.published_samples = 0
        self.dropped_samples = 0
        self.rejected_samples = 0
        self.connected = asyncio.Event()
        self._buffer: deque[PowerSample] = deque(maxlen=max_buffered_samples)
        self._wakeup = asyncio.Event()
        self._outage = _OutageLog(f"MQTT broker {broker.host}:{broker.port}")

    @property
    def buffered(self) -> int:
        """Samples waiting for a broker acknowledgement."""
        return len(self._buffer)

    def submit(self, samples: Sequence[PowerSample]) -> None:
        """Queue samples for publication (never blocks; drops the oldest when full).

        A sample that cannot be published (NaN/infinite value, a rack id that is not a valid
        topic level) is rejected here, counted in ``rejected_samples`` and logged once, so it
        can never wedge the publishing loop.
        """
        samples = [s for s in samples if self._publishable(s)]
        overflow = len(self._buffer) + len(samples) - (self._buffer.maxlen or 0)
        self.dropped_samples += max(overflow, 0)
        self._buffer.extend(samples)
        self._wakeup.set()

    def _publishable(self, sample: PowerSample) -> bool:
        try:
            codec.telemetry_topic(self.site, sample.rack_id)
            codec.encode_sample(sample)
        except codec.MqttPayloadError as exc:
            self.rejected_samples += 1
            level = logging.DEBUG if self.rejected_samples > 1 else logging.WARNING
            log.log(
                level, "not publishing sample (%d rejected so far): %s", self.rejected_samples, exc
            )
            return False
        return True

    async def run(self) -> None:
        """Publish until cancelled, reconnecting after any broker failure."""
        delays = self.backoff.delays()
        while True:
            raise_if_cancelling()
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                raise_if_cancelling()  # aiomqtt's __aexit__ may have replaced the cancellation
                self._outage.failed(exc)
                await asyncio.sleep(delays.next())
            else:
                delays.reset()

    async def _session(self) -> None:
        client = _client(self.broker, self.client_id, clean_session=True)
        # We keep a full in-flight window of publishes on purpose; don't warn about it.
        client.pending_calls_threshold = self.max_messages_in_flight + 1
        async with client:
            self._outage.recovered()
            self.connected.set()
            while True:
                raise_if_cancelling()
                if not self._buffer:
                    self._wakeup.clear()
                    await _wait_or_disconnect(client, self._wakeup)
                await self._publish_some(client)

    async def _publish_some(self, client: aiomqtt.Client) -> None:
        """Publish up to the in-flight window of messages; pop them once all are acknowledged."""
        groups = self._next_messages()
        dropped_before = self.dropped_samples
        await asyncio.gather(
            *(
                client.publish(
                    codec.telemetry_topic(self.site, rack), codec.encode_samples(chunk), qos=1
                )
                for rack, chunk in groups
            )
        )
        # Only now are they the broker's responsibility. The buffer grows at its right end and
        # loses its oldest (left) samples on overflow, so the sent samples are the leftmost
        # ones, minus any the overflow evicted while we waited.
        sent = sum(len(chunk) for _, chunk in groups)
        self.published_samples += sent
        evicted_meanwhile = self.dropped_samples - dropped_before
        for _ in range(min(max(sent - evicted_meanwhile, 0), len(self._buffer))):
            self._buffer.popleft()

    def _next_messages(self) -> list[tuple[str, list[PowerSample]]]:
        groups: list[tuple[str, list[PowerSample]]] = []
        current: list[PowerSample] = []
        budget = self.max_messages_in_flight * self.max_samples_per_message
        for i, sample in enumerate(self._buffer):
            if i >= budget:
                break
            if current and (
                sample.rack_id != current[0].rack_id or len(current) >= self.max_samples_per_message
            ):
                groups.append((current[0].rack_id, current))
                current = []
                if len(groups) >= self.max_messages_in_flight:
                    return groups
            current.append(sample)
        if current:
            groups.append((current[0].rack_id, current))
        return groups


def _over_mqtt(sample: PowerSample) -> PowerSample:
    if sample.source == "mqtt" or sample.source.startswith("mqtt:"):
        return sample
    return replace(sample, source=f"mqtt:{sample.source}")


def raise_if_cancelling() -> None:
    """Raise CancelledError if someone asked the current task to stop.

    On Python 3.11, ``asyncio.wait_for`` (used by aiomqtt for every publish, subscribe, connect
    and disconnect, and by our flusher) *swallows* a cancellation that arrives in the same
    event-loop step as the awaited result, and aiomqtt's ``__aexit__`` can replace a
    cancellation with an ``MqttError`` ("Operation timed out") when the DISCONNECT is not
    acknowledged within its timeout. A loop that only relies on CancelledError then runs on
    forever, and whoever awaits the cancelled task hangs (issue 8: the broker-restart test
    hung at shutdown). The task's pending cancel request survives both (only ``uncancel()``
    clears it), so every loop here checks it once per iteration.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _paho(client: aiomqtt.Client) -> Any:
    """The paho client inside aiomqtt: aiomqtt 2.x has no manual-ack API of its own."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set"):
        raise RuntimeError(
            "MqttIngester needs aiomqtt 2.x over paho-mqtt >= 2.0 (manual acknowledgements); "
            f"found aiomqtt without them ({type(client).__module__})"
        )
    return paho


async def _wait_or_disconnect(client: aiomqtt.Client, event: asyncio.Event) -> None:
    """Wait for ``event``; raise MqttError as soon as the connection drops (an idle publisher
    would otherwise only notice at its next publish)."""
    disconnected: asyncio.Future[None] = client._disconnected
    waiter: asyncio.Future[None] = asyncio.ensure_future(_wait_event(event))
    try:
        await asyncio.wait([waiter, disconnected], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if disconnected.done():
        cause = disconnected.exception()
        raise aiomqtt.MqttError(f"disconnected while idle: {cause}")


async def _wait_event(event: asyncio.Event) -> None:
    await event.wait()


def _client(broker: BrokerAddress, client_id: str, *, clean_session: bool) -> aiomqtt.Client:
    tls = broker.tls
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        username=broker.username,
        password=broker.password,
        keepalive=broker.keepalive_s,
        clean_session=clean_session,
        tls_params=None
        if tls is None
        else aiomqtt.TLSParameters(
            ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file
        ),
        timeout=5.0,
        # Small QoS 1 packets and their acks otherwise wait on Nagle + delayed ACK (~40 ms).
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b""
