"""Ingester and publisher against a real Mosquitto broker started on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import aiomqtt
import pytest

from services import Mosquitto
from wattwheel.adapters.mqtt.client import (
    Backoff,
    BrokerAddress,
    MqttIngester,
    MqttPublisher,
    SampleBuffer,
)
from wattwheel.adapters.mqtt.codec import encode_sample, telemetry_filter, telemetry_topic
from wattwheel.adapters.mqtt.quarantine import Quarantine
from wattwheel.domain.telemetry import PowerSample

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

SITE = "dc1"
FAST = Backoff(min_s=0.05, max_s=0.2)


class Collector:
    """A sink that records batches; can be told to fail or to hang."""

    def __init__(self) -> None:
        self.batches: list[list[PowerSample]] = []
        self.fail_next = 0
        self.hang = False

    async def __call__(self, samples: list[PowerSample]) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("database is down")
        self.batches.append(samples)

    @property
    def samples(self) -> list[PowerSample]:
        return [s for batch in self.batches for s in batch]


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _running(runner: MqttIngester | MqttPublisher) -> AsyncIterator[None]:
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _ingester(broker: Mosquitto, sink: Collector, client_id: str = "ingest-test") -> MqttIngester:
    return MqttIngester(
        BrokerAddress(port=broker.port),
        telemetry_filter(SITE),
        sink,
        client_id=client_id,
        batch_max_messages=20,
        batch_interval_s=0.05,
        backoff=FAST,
    )


def _sample(i: int, rack: str = "r1") -> PowerSample:
    return PowerSample("test", rack, f"s{i}", 1000.0 + i, float(i))


async def _publish_raw(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def test_round_trip_in_batches(mosquitto: Mosquitto) -> None:
    sink = Collector()
    ingester = _ingester(mosquitto, sink)
    async with _running(ingester):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        sent = [_sample(i, f"r{i % 3}") for i in range(100)]
        await _publish_raw(
            mosquitto, [(telemetry_topic(SITE, s.rack_id), encode_sample(s)) for s in sent]
        )
        await _until(lambda: len(sink.samples) == 100)
    # The transport, not the payload, names the provenance: "test" arrives as "mqtt:test".
    assert sorted(sink.samples, key=lambda s: s.timestamp_s) == [
        replace(s, source="mqtt:test") for s in sent
    ]
    # 100 single-sample messages, at most 20 per batch: batched, not one call per message.
    assert 5 <= len(sink.batches) < 100
    assert ingester.stats.messages == 100 and ingester.stats.bad_messages == 0


async def test_malformed_payload_is_counted_skipped_and_logged_once(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Collector()
    ingester = _ingester(mosquitto, sink)
    topic = telemetry_topic(SITE, "r1")
    with caplog.at_level(logging.WARNING, logger="wattwheel.adapters.mqtt.quarantine"):
        async with _running(ingester):
            await asyncio.wait_for(ingester.subscribed.wait(), 10)
            await _publish_raw(
                mosquitto,
                [
                    (topic, b"{broken"),
                    (topic, encode_sample(_sample(1))),
                    (topic, b'{"v":1,"ts":1,"power_w":"lots"}'),
                    (topic, encode_sample(_sample(2))),
                ],
            )
            await _until(lambda: len(sink.samples) == 2)
    assert [s.power_w for s in sink.samples] == [1.0, 2.0]
    assert ingester.stats.bad_messages == 2
    assert ingester.quarantine.counts == {"not-json": 1, "schema": 1}
    assert [q.payload_head for q in ingester.quarantine.latest()] == [
        b"{broken",
        b'{"v":1,"ts":1,"power_w":"lots"}',
    ]
    quarantined = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(quarantined) == 2  # once per reason at WARNING


async def test_ingester_reconnects_after_broker_restart(mosquitto: Mosquitto) -> None:
    sink = Collector()
    ingester = _ingester(mosquitto, sink)
    topic = telemetry_topic(SITE, "r1")
    async with _running(ingester):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(1)))])
        await _until(lambda: len(sink.samples) == 1)
        mosquitto.kill()
        await _until(lambda: not ingester.subscribed.is_set())
        mosquitto.start()  # same port, empty broker (no persistence)
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(2)))])
        await _until(lambda: len(sink.samples) == 2)
    assert ingester.stats.connections == 2
    assert [s.power_w for s in sink.samples] == [1.0, 2.0]


async def test_failed_sink_holds_the_batch_and_retries(mosquitto: Mosquitto) -> None:
    sink = Collector()
    sink.fail_next = 2
    ingester = _ingester(mosquitto, sink)
    topic = telemetry_topic(SITE, "r1")
    async with _running(ingester):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(i))) for i in range(5)])
        await _until(lambda: len(sink.samples) == 5)
    assert ingester.stats.sink_failures == 2
    assert [s.power_w for s in sink.samples] == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_unacknowledged_messages_are_redelivered_to_the_next_ingester(
    mosquitto: Mosquitto,
) -> None:
    # The first ingester receives the messages but its sink never completes, so it never
    # acknowledges them; it then dies. The broker keeps them in the persistent session and
    # hands them to the next ingester with the same client id.
    stuck = Collector()
    stuck.hang = True
    first = _ingester(mosquitto, stuck, client_id="ingest-redeliver")
    topic = telemetry_topic(SITE, "r1")
    async with _running(first):
        await asyncio.wait_for(first.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(i))) for i in range(3)])
        await _until(lambda: first.stats.messages == 3)
    assert stuck.samples == []
    sink = Collector()
    second = _ingester(mosquitto, sink, client_id="ingest-redeliver")
    async with _running(second):
        await _until(lambda: len(sink.samples) == 3)
    assert sorted(s.power_w for s in sink.samples) == [0.0, 1.0, 2.0]


async def test_publisher_buffers_while_broker_is_down(persistent_mosquitto: Mosquitto) -> None:
    # A persistent broker keeps the ingester's session and subscription across its restart,
    # so what the publisher sends before the ingester is back is queued, not dropped (with
    # persistence off a restarted broker forgets the subscription: see docs/mqtt.md).
    mosquitto = persistent_mosquitto
    sink = Collector()
    ingester = _ingester(mosquitto, sink)
    publisher = MqttPublisher(
        BrokerAddress(port=mosquitto.port), SITE, backoff=FAST, max_samples_per_message=7
    )
    async with _running(ingester), _running(publisher):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        publisher.submit([_sample(i, "r1") for i in range(10)])
        await _until(lambda: len(sink.samples) == 10)
        mosquitto.stop()
        await _until(lambda: not publisher.connected.is_set())
        publisher.submit([_sample(i, f"r{i % 2}") for i in range(10, 60)])
        await asyncio.sleep(0.3)
        assert publisher.buffered == 50  # held in memory, nothing lost
        mosquitto.start()
        await _until(lambda: len({s.timestamp_s for s in sink.samples}) == 60)
        assert publisher.buffered == 0
    assert publisher.dropped_samples == 0
    assert {s.power_w for s in sink.samples} == {float(i) for i in range(60)}


async def test_publisher_drops_oldest_when_buffer_is_full() -> None:
    publisher = MqttPublisher(BrokerAddress(port=1), SITE, max_buffered_samples=5)
    publisher.submit([_sample(i) for i in range(8)])
    assert publisher.buffered == 5 and publisher.dropped_samples == 3


async def test_sample_buffer_is_a_telemetry_source() -> None:
    buffer = SampleBuffer(max_samples=3)
    await buffer([_sample(1), _sample(2)])
    await buffer([_sample(3), _sample(4)])
    assert [s.power_w for s in await buffer.read()] == [2.0, 3.0, 4.0]
    assert buffer.dropped == 1
    assert await buffer.read() == []


def test_publisher_rejects_unpublishable_samples_up_front() -> None:
    publisher = MqttPublisher(BrokerAddress(port=1), SITE)
    publisher.submit(
        [
            _sample(1),
            PowerSample("test", "r1", "s", 1.0, float("nan")),
            PowerSample("test", "bad/rack", "s", 1.0, 5.0),
        ]
    )
    assert publisher.buffered == 1 and publisher.rejected_samples == 2


async def test_messages_arriving_during_a_slow_sink_are_not_lost(mosquitto: Mosquitto) -> None:
    delivered: list[PowerSample] = []
    first_call = asyncio.Event()
    release = asyncio.Event()

    async def slow_sink(samples: list[PowerSample]) -> None:
        if not first_call.is_set():
            first_call.set()
            await release.wait()
        delivered.extend(samples)

    ingester = MqttIngester(
        BrokerAddress(port=mosquitto.port),
        telemetry_filter(SITE),
        slow_sink,
        client_id="ingest-slow",
        batch_max_messages=20,
        batch_interval_s=0.01,
        backoff=FAST,
    )
    topic = telemetry_topic(SITE, "r1")
    async with _running(ingester):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(0)))])
        await asyncio.wait_for(first_call.wait(), 10)
        # The first batch is inside the sink; these arrive meanwhile.
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(i))) for i in range(1, 6)])
        await _until(lambda: ingester.stats.messages == 6)
        release.set()
        await _until(lambda: len(delivered) == 6)
    assert [s.power_w for s in delivered] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


POISON = [
    b'{"v":1,"ts":1,"power_w":' + b"9" * 400 + b"}",
    b'{"v":1,"ts":' + b"9" * 400 + b',"power_w":1}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"v":1,"ts":1,"power_w":1,"server":"nul\\u0000"}',
]


async def test_poison_messages_are_quarantined_acknowledged_and_never_redelivered(
    mosquitto: Mosquitto,
) -> None:
    # Issue 7: each of these raised past the decoder and killed the ingester for good, and the
    # broker redelivered them to every restarted ingester. Now: quarantined, acknowledged,
    # and the valid sample published after them is delivered.
    sink = Collector()
    first = _ingester(mosquitto, sink, client_id="ingest-poison")
    topic = telemetry_topic(SITE, "r1")
    async with _running(first):
        await asyncio.wait_for(first.subscribed.wait(), 10)
        await _publish_raw(
            mosquitto, [(topic, p) for p in POISON] + [(topic, encode_sample(_sample(7)))]
        )
        await _until(lambda: len(sink.samples) == 1)
        await asyncio.sleep(0.2)  # the batch's acknowledgements leave
    assert first.stats.bad_messages == len(POISON)
    assert first.quarantine.counts == {"number": 2, "too-deep": 1, "schema": 1}
    second_sink = Collector()
    second = _ingester(mosquitto, second_sink, client_id="ingest-poison")  # same session
    async with _running(second):
        await asyncio.wait_for(second.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(8)))])
        await _until(lambda: len(second_sink.samples) == 1)
    assert second.stats.messages == 1  # nothing redelivered
    assert second.quarantine.total == 0


async def test_quarantine_is_bounded(mosquitto: Mosquitto) -> None:
    sink = Collector()
    ingester = _ingester(mosquitto, sink)
    ingester.quarantine = Quarantine(max_kept=3, head_bytes=8)
    topic = telemetry_topic(SITE, "r1")
    async with _running(ingester):
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, b"garbage-%d" % i) for i in range(10)])
        await _until(lambda: ingester.quarantine.total == 10)
    kept = ingester.quarantine.latest()
    assert [q.payload_head for q in kept] == [b"garbage-", b"garbage-", b"garbage-"]
    assert [q.payload_bytes for q in kept] == [9, 9, 9]


def test_asyncio_wait_for_can_swallow_a_cancellation() -> None:
    # Why the loops check task.cancelling(): on 3.11 this is real (3.12 fixed wait_for).
    async def main() -> tuple[bool, int]:
        event = asyncio.Event()
        finished = asyncio.Event()

        async def waiter() -> None:
            await asyncio.wait_for(event.wait(), 5)
            finished.set()
            await asyncio.sleep(0)

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        event.set()
        task.cancel()  # same loop step as the result
        await asyncio.gather(task, return_exceptions=True)
        return finished.is_set(), task.cancelling() if not task.done() else 0

    import sys

    swallowed, _ = asyncio.run(main())
    assert swallowed == (sys.version_info < (3, 12))


async def test_publisher_stops_when_connecting_swallowed_the_cancellation(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 8: aiomqtt waits for the CONNACK with asyncio.wait_for; a cancellation landing in
    # the step the CONNACK does is lost (see the test above), the session starts, and the
    # idle publisher then waits for samples that never come: whoever stops it hangs.
    swallowed: list[int] = []
    real_aenter = aiomqtt.Client.__aenter__

    async def swallowing_aenter(self: aiomqtt.Client) -> aiomqtt.Client:
        client = await real_aenter(self)
        try:
            await asyncio.sleep(0.2)  # the window in which the test cancels us
        except asyncio.CancelledError:
            swallowed.append(1)  # what wait_for does when the result is already there
        return client

    monkeypatch.setattr(aiomqtt.Client, "__aenter__", swallowing_aenter)
    publisher = MqttPublisher(BrokerAddress(port=mosquitto.port), SITE, backoff=FAST)
    task = asyncio.create_task(publisher.run())
    await asyncio.sleep(0.1)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert swallowed == [1]
    assert done, "the publisher ignored its cancellation"


async def test_flusher_stops_when_its_wait_swallowed_the_cancellation() -> None:
    # The ingester's flusher waits with asyncio.wait_for on "a batch is ready": a batch that
    # becomes ready in the step its cancellation arrives swallowed it, the flusher looped on,
    # and the ingester's shutdown (which awaits the flusher) hung.
    ingester = MqttIngester(BrokerAddress(port=1), telemetry_filter(SITE), Collector())
    flusher = asyncio.create_task(ingester._flush_forever(client=None))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    ingester._batch_ready.set()
    flusher.cancel()  # same step: the wait's result and the cancellation
    done, _ = await asyncio.wait([flusher], timeout=2)
    assert done, "the flusher ignored its cancellation"


async def test_ingester_stops_when_the_disconnect_replaces_the_cancellation(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiomqtt's __aexit__ raises MqttError("Operation timed out") when the broker does not
    # acknowledge the DISCONNECT in time; that error replaced the CancelledError and the
    # reconnect loop went on.
    real_aexit = aiomqtt.Client.__aexit__

    async def timing_out_aexit(self: aiomqtt.Client, *exc: object) -> None:
        await real_aexit(self, *exc)  # type: ignore[arg-type]
        raise aiomqtt.MqttError("Operation timed out")

    monkeypatch.setattr(aiomqtt.Client, "__aexit__", timing_out_aexit)
    ingester = _ingester(mosquitto, Collector())
    task = asyncio.create_task(ingester.run())
    await asyncio.wait_for(ingester.subscribed.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the ingester reconnected after its cancellation"


async def test_two_instances_each_get_all_the_telemetry(mosquitto: Mosquitto) -> None:
    # Issue 8: with one shared client id the broker kicked one instance off whenever the other
    # connected, and each stored about half; with one session per instance both get it all.
    from wattwheel.adapters.mqtt.config import ingest_client_id

    leader, follower = Collector(), Collector()
    a = _ingester(mosquitto, leader, client_id=ingest_client_id(SITE, "ctl-a"))
    b = _ingester(mosquitto, follower, client_id=ingest_client_id(SITE, "ctl-b"))
    topic = telemetry_topic(SITE, "r1")
    async with _running(a), _running(b):
        await asyncio.wait_for(a.subscribed.wait(), 10)
        await asyncio.wait_for(b.subscribed.wait(), 10)
        await _publish_raw(mosquitto, [(topic, encode_sample(_sample(i))) for i in range(50)])
        await _until(lambda: len(leader.samples) == 50 and len(follower.samples) == 50)
    assert a.stats.connections == 1 and b.stats.connections == 1  # nobody was kicked off
