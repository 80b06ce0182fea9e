"""The documented MQTT telemetry payload: round trips and named errors."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import astuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattwheel.adapters.mqtt.codec import (
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    MqttPayloadError,
    decode_payload,
    encode_sample,
    encode_samples,
    telemetry_filter,
    telemetry_topic,
)
from wattwheel.domain.telemetry import SAMPLE_KINDS, PowerSample

TOPIC = "wattwheel/dc1/telemetry/r1"


def test_documented_single_sample_example() -> None:
    payload = b'{"v":1,"ts":1732450000.0,"rack":"r1","server":"s1","power_w":412.5,"kind":"server"}'
    assert decode_payload(TOPIC, payload) == [
        PowerSample("mqtt", "r1", "s1", 1732450000.0, 412.5, "server")
    ]


def test_batch_round_trip_keeps_every_field() -> None:
    samples = [
        PowerSample("emu", "r1", "s1", 10.0, 100.0),
        PowerSample("emu", "r1", None, 10.0, 250.5, "rack"),
    ]
    assert decode_payload(TOPIC, encode_samples(samples)) == samples
    assert decode_payload(TOPIC, encode_sample(samples[1])) == samples[1:]


def test_iso_timestamp_and_rack_from_topic() -> None:
    payload = b'{"v":1,"ts":"2024-11-24T12:00:00Z","power_w":7}'
    [sample] = decode_payload(TOPIC, payload)
    assert sample.timestamp_s == 1732449600.0
    assert (sample.rack_id, sample.server_id, sample.kind) == ("r1", None, "server")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "must be a JSON object, got list"),
        (b'{"ts":1,"power_w":1}', "'v' must be 1, got None"),
        (b'{"v":2,"ts":1,"power_w":1}', "'v' must be 1, got 2"),
        (b'{"v":true,"ts":1,"power_w":1}', "'v' must be 1, got True"),
        (b'{"v":1,"ts":1}', "'power_w' must be a number, got None"),
        (b'{"v":1,"ts":1,"power_w":"412"}', "'power_w' must be a number"),
        (b'{"v":1,"ts":1,"power_w":true}', "'power_w' must be a number"),
        (b'{"v":1,"ts":1,"power_w":NaN}', "non-standard JSON constant NaN"),
        (b'{"v":1,"ts":"yesterday","power_w":1}', "'ts' 'yesterday' is not ISO-8601"),
        (b'{"v":1,"ts":"2024-11-24T12:00:00","power_w":1}', "has no time zone"),
        (b'{"v":1,"ts":1,"power_w":1,"rack":"r2"}', "rack 'r2' does not match the topic's 'r1'"),
        (b'{"v":1,"ts":1,"power_w":1,"kind":"toaster"}', "kind 'toaster' is not one of"),
        (b'{"v":1,"ts":1,"power_w":1,"server":5}', "'server' must be a string"),
        (b'{"v":1,"samples":{}}', "'samples' must be a list"),
        (b'{"v":1,"samples":[{"ts":1,"power_w":1},3]}', r"samples\[1\]: a sample must be"),
    ],
)
def test_malformed_payloads_are_named(payload: bytes, message: str) -> None:
    with pytest.raises(MqttPayloadError, match=message):
        decode_payload(TOPIC, payload)


def test_topics() -> None:
    assert telemetry_topic("dc1", "r1") == TOPIC
    assert telemetry_filter("dc1") == "wattwheel/dc1/telemetry/+"
    with pytest.raises(MqttPayloadError, match="rack_id 'a/b'"):
        telemetry_topic("dc1", "a/b")


def test_nan_is_not_encoded() -> None:
    with pytest.raises(MqttPayloadError, match="non-finite"):
        encode_sample(PowerSample("x", "r1", None, 1.0, math.nan))


_ids = st.text(
    alphabet=st.characters(blacklist_characters="/+#", blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=12,
)
_samples = st.builds(
    PowerSample,
    source=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10),
    rack_id=st.just("r1"),
    server_id=st.none() | _ids,
    timestamp_s=st.floats(0, 4e9, allow_nan=False),
    power_w=st.floats(-1e9, 1e9, allow_nan=False),
    kind=st.sampled_from(sorted(SAMPLE_KINDS)),
)


@given(st.lists(_samples, max_size=20))
def test_any_batch_round_trips(samples: list[PowerSample]) -> None:
    decoded = decode_payload(TOPIC, encode_samples(samples))
    # An empty source string decodes to the default "mqtt" (absent and empty are the same).
    assert decoded == [s if s.source else PowerSample("mqtt", *astuple(s)[1:]) for s in samples]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(st.binary(max_size=64) | _json.map(lambda v: json.dumps(v).encode()))
def test_garbage_only_ever_raises_the_payload_error(payload: bytes) -> None:
    # Anything else (TypeError, KeyError...) would escape and fail the test.
    with contextlib.suppress(MqttPayloadError):
        assert all(isinstance(s, PowerSample) for s in decode_payload(TOPIC, payload))


# The messages of issue 7: each raised past the decoder (OverflowError, RecursionError) and
# killed the ingester. Each must be a named rejection with a reason code, at once.
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v":1,"ts":1,"power_w":' + b"9" * 400 + b"}", "number"),
        (b'{"v":1,"ts":' + b"9" * 400 + b',"power_w":1}', "number"),
        (b'{"v":1,"samples":[{"ts":1,"power_w":-' + b"9" * 400 + b"}]}", "number"),
        (b'{"v":1,"ts":1e400,"power_w":1}', "number"),
        (b'{"v":1,"ts":1,"power_w":-1e400}', "number"),
        (b'{"v":1,"ts":1,"power_w":1.' + b"1" * 5000 + b"}", "number"),
        (b"[" * 100_000 + b"]" * 100_000, "too-deep"),
        (b'{"v":1,"ts":1,"power_w":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too-deep"),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "too-large"),
        (
            b'{"v":1,"samples":[' + b",".join([b"{}"] * (MAX_SAMPLES_PER_MESSAGE + 1)) + b"]}",
            "too-large",
        ),
        (b'{"v":1,"ts":1,"power_w":1,"server":"a\\u0000b"}', "schema"),
        (b'{"v":1,"ts":1,"power_w":1,"server":"' + b"s" * (MAX_ID_CHARS + 1) + b'"}', "schema"),
        (b'{"v":1,"ts":"' + b"2" * 10_000 + b'","power_w":1}', "schema"),
        (b'{"v":1,"ts":"+99999-01-01T00:00:00+00:00","power_w":1}', "schema"),
    ],
)
def test_hostile_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MqttPayloadError) as caught:
        decode_payload(TOPIC, payload)
    assert caught.value.reason == reason
    assert len(str(caught.value)) < 400  # the message never carries the payload


def test_extreme_but_valid_dates_decode() -> None:
    payload = b'{"v":1,"ts":"9999-12-31T23:59:59+00:00","power_w":1}'
    [sample] = decode_payload(TOPIC, payload)
    assert sample.timestamp_s == 253402300799.0  # a future timestamp: check_sample's job
