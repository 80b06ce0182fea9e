"""A Hypothesis corpus of hostile MQTT payloads fed through a real Mosquitto broker to a real
ingester: after every payload a valid sample published behind it must still be delivered
(no payload stops ingestion; issue 7). Bounded: a fixed number of examples, a few seconds."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import Mosquitto
from wattwheel.adapters.mqtt.client import Backoff, BrokerAddress, MqttIngester
from wattwheel.adapters.mqtt.codec import encode_sample, telemetry_filter, telemetry_topic
from wattwheel.domain.telemetry import PowerSample

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

SITE = "fuzz"
TOPIC = telemetry_topic(SITE, "r1")
EXAMPLES = 150

# ---------------------------------------------------------------- hostile payloads
_huge_int = st.integers(21, 5000).map(lambda n: b"9" * n)
_number_literal = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.integers(-(10**15), 10**15).map(lambda i: str(i).encode()),
    _huge_int,
    _huge_int.map(lambda b: b"-" + b),
    st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"1e-400"]),
    st.integers(65, 3000).map(lambda n: b"1." + b"1" * n),
)
_text = st.text(max_size=40) | st.integers(129, 2000).map(lambda n: "s" * n)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_deep = st.integers(20, 120_000).map(lambda n: b"[" * n + b"]" * n)
_field = _number_literal | _json_value.map(lambda v: json.dumps(v).encode()) | _deep


@st.composite
def _sample_like(draw: st.DrawFn) -> bytes:
    """A payload shaped like a sample whose fields may each be hostile."""
    fields = {
        b'"v"': draw(st.sampled_from([b"1", b"1.0", b"true", b"2"]) | _field),
        b'"ts"': draw(st.just(b"1700000000") | _field),
        b'"power_w"': draw(st.just(b"500") | _field),
        b'"server"': draw(_json_value.map(lambda v: json.dumps(v).encode())),
        b'"kind"': draw(st.sampled_from([b'"rack"', b'"server"', b'"pdu"', b'"x"']) | _field),
    }
    keep = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    body = b",".join(k + b":" + fields[k] for k in keep)
    if draw(st.booleans()):
        return b'{"v":1,"samples":[{' + body + b"}]}"
    return b"{" + body + b"}"


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    _json_value.map(lambda v: json.dumps(v).encode()),
    _sample_like(),
    _deep,
)


# ---------------------------------------------------------------- an ingester on its own loop
class Harness:
    """An ingester and a publisher running on an event loop in a thread."""

    def __init__(self, port: int) -> None:
        self.received: list[PowerSample] = []
        self.arrived = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ingester = MqttIngester(
            BrokerAddress(port=port),
            telemetry_filter(SITE),
            self._sink,
            client_id="fuzz-ingest",
            batch_interval_s=0.005,
            backoff=Backoff(0.05, 0.2),
        )

        async def start() -> asyncio.Task[None]:
            return asyncio.create_task(self.ingester.run())

        self.task: asyncio.Task[None] = self._call(start())

        async def connect() -> aiomqtt.Client:
            client = aiomqtt.Client("127.0.0.1", port, identifier="fuzz-publisher")
            return await client.__aenter__()

        self.client: aiomqtt.Client = self._call(connect())
        self._call(asyncio.wait_for(self.ingester.subscribed.wait(), 10))
        self.tried = 0

    async def _sink(self, samples: list[PowerSample]) -> None:
        with self.arrived:
            self.received.extend(samples)
            self.arrived.notify_all()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)

    def feed(self, payload: bytes) -> None:
        """Publish ``payload``, then a sentinel; wait for the sentinel (or fail)."""
        self.tried += 1
        sentinel = PowerSample("fuzz", "r1", "sentinel", float(self.tried), 1.0, "rack")

        async def publish() -> None:
            await self.client.publish(TOPIC, payload, qos=1)
            await self.client.publish(TOPIC, encode_sample(sentinel), qos=1)

        self._call(publish())
        with self.arrived:
            got = self.arrived.wait_for(
                lambda: any(s.timestamp_s == sentinel.timestamp_s for s in self.received), 10
            )
        assert not self.task.done(), f"the ingester stopped: {self.task}"
        assert got, f"ingestion stopped after payload {payload[:200]!r}"

    def close(self) -> None:
        async def stop() -> None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            await self.client.__aexit__(None, None, None)

        self._call(stop())
        print(
            f"\nMQTT fuzz: {self.tried} payloads through the broker, "
            f"{self.ingester.quarantine.total} quarantined "
            f"{dict(sorted(self.ingester.quarantine.counts.items()))}, "
            f"{self.ingester.stats.samples} samples delivered, 0 ingestion stops"
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def harness(mosquitto: Mosquitto) -> Iterator[Harness]:
    h = Harness(mosquitto.port)
    yield h
    h.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(payload=PAYLOADS)
def test_no_payload_stops_ingestion(harness: Harness, payload: bytes) -> None:
    harness.feed(payload)


def test_the_corpus_was_fed_and_counted(harness: Harness) -> None:
    # The poison messages of issue 7 themselves (the corpus draws them only by chance).
    for payload in (b'{"v":1,"ts":1,"power_w":' + b"9" * 400 + b"}", b"[" * 100_000):
        harness.feed(payload)
    assert harness.ingester.stats.messages == 2 * harness.tried
    assert harness.ingester.quarantine.counts == {"number": 1, "too-deep": 1}
