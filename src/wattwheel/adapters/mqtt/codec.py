"""MQTT telemetry payload: JSON <-> :class:`~wattwheel.domain.telemetry.PowerSample`.

Topic: ``wattwheel/<site>/telemetry/<rack_id>`` (subscribe to ``wattwheel/<site>/telemetry/+``).
Payload (UTF-8 JSON object), version 1, either one sample::

    {"v": 1, "ts": 1732450000.0, "rack": "r1", "server": "s1", "power_w": 412.5,
     "kind": "server"}

or a batch (the form the emulator publishes; one message per rack and period)::

    {"v": 1, "samples": [{"ts": ..., "rack": "r1", "server": "s1", "power_w": 412.5}, ...]}

Fields of a sample:

========  ======================================  ===========================================
field     type                                    meaning
========  ======================================  ===========================================
v         int, required at top level              schema version, must be 1
ts        number (epoch s) or ISO-8601 string     when the value was measured; an ISO string
                                                  without a zone is rejected (ambiguous)
rack      string, optional                        rack id; defaults to the topic's last level;
                                                  if given it must equal it
server    string or null, optional                server / outlet id; null for rack totals
power_w   number, required                        active power in watts
kind      string, optional (default "server")     "server", "outlet", "pdu" or "rack"
source    string, optional (default "mqtt")       free text naming the publisher
========  ======================================  ===========================================

Decoding checks structure and types only (a clear :class:`MqttPayloadError` naming the field
and a short ``reason`` code); the value checks (negative, absurd, stale, future) belong to
:func:`wattwheel.domain.telemetry.check_sample`. Non-standard JSON constants (NaN, Infinity)
are rejected here because other JSON parsers cannot read them.

Anything a publisher can send is decoded or rejected with :class:`MqttPayloadError`, never
another exception (issue 7): a payload over :data:`MAX_PAYLOAD_BYTES`, JSON nested deeper
than the interpreter's recursion limit, an integer literal longer than
:data:`MAX_INT_DIGITS` digits, a number that is not finite as a float (``1e400``), more
than :data:`MAX_SAMPLES_PER_MESSAGE` samples, an id longer than :data:`MAX_ID_CHARS` or
holding control characters (a NUL cannot even be stored in PostgreSQL), a date outside
what an epoch timestamp can hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.telemetry import SAMPLE_KINDS, PowerSample

SCHEMA_VERSION = 1
TOPIC_ROOT = "wattwheel"

#: Larger payloads are rejected unread (the emulator's batches are a few tens of kB).
MAX_PAYLOAD_BYTES = 1 << 20
#: An integer literal with more digits is not a reading (epoch ms has 13).
MAX_INT_DIGITS = 20
MAX_SAMPLES_PER_MESSAGE = 10_000
MAX_ID_CHARS = 128


class MqttPayloadError(WattwheelError):
    """A message that is not a valid telemetry payload; names the topic and the field.

    ``reason`` is a short code for counting: ``too-large``, ``not-json``, ``too-deep``,
    ``number``, ``schema``.
    """

    def __init__(self, message: str, reason: str = "schema") -> None:
        super().__init__(message)
        self.reason = reason


def telemetry_topic(site: str, rack_id: str) -> str:
    """The topic a rack's samples are published on."""
    for name, value in (("site", site), ("rack_id", rack_id)):
        if not value or any(c in value for c in "/+#"):
            raise MqttPayloadError(f"{name} {value!r} cannot be an MQTT topic level")
    return f"{TOPIC_ROOT}/{site}/telemetry/{rack_id}"


def telemetry_filter(site: str) -> str:
    """The subscription filter matching every rack of ``site``."""
    return f"{TOPIC_ROOT}/{site}/telemetry/+"


def encode_samples(samples: Sequence[PowerSample]) -> bytes:
    """A batch payload (``{"v": 1, "samples": [...]}``) for samples of one rack."""
    return _dumps({"v": SCHEMA_VERSION, "samples": [_sample_dict(s) for s in samples]})


def encode_sample(sample: PowerSample) -> bytes:
    """A single-sample payload."""
    return _dumps({"v": SCHEMA_VERSION, **_sample_dict(sample)})


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:  # NaN or infinity: not JSON, and not a reading
        raise MqttPayloadError(f"cannot encode a non-finite value: {exc}") from None


def decode_payload(topic: str, payload: bytes) -> list[PowerSample]:
    """Samples in one message (single or batch form). Raises MqttPayloadError."""
    topic_rack = topic.rsplit("/", 1)[-1]
    body = _parse_json(topic, payload)
    if not isinstance(body, dict):
        raise MqttPayloadError(f"{topic}: payload must be a JSON object, got {type(body).__name__}")
    version = body.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, not 1.0
        raise MqttPayloadError(
            f"{topic}: field 'v' must be {SCHEMA_VERSION}, got {_short(body.get('v'))}"
        )
    if "samples" not in body:
        return [_decode_sample(topic, topic_rack, body)]
    items = body["samples"]
    if not isinstance(items, list):
        raise MqttPayloadError(f"{topic}: field 'samples' must be a list")
    if len(items) > MAX_SAMPLES_PER_MESSAGE:
        raise MqttPayloadError(
            f"{topic}: {len(items)} samples in one message (max {MAX_SAMPLES_PER_MESSAGE})",
            "too-large",
        )
    return [
        _decode_sample(f"{topic} samples[{i}]", topic_rack, item) for i, item in enumerate(items)
    ]


def _parse_json(topic: str, payload: bytes) -> object:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MqttPayloadError(
            f"{topic}: payload of {len(payload)} bytes (max {MAX_PAYLOAD_BYTES})", "too-large"
        )
    try:
        return json.loads(
            payload,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except _NumberError as exc:
        raise MqttPayloadError(f"{topic}: {exc}", "number") from None
    except RecursionError:
        # The C parser bounds its recursion (a RecursionError, not a crash) whatever the depth.
        raise MqttPayloadError(f"{topic}: JSON nested too deep", "too-deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise MqttPayloadError(f"{topic}: payload is not JSON ({exc})", "not-json") from None


class _NumberError(ValueError):
    pass


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _NumberError(f"an integer of {digits} digits is not a reading")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise _NumberError(f"a number literal of {len(text)} characters is not a reading")
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(f"number {text} is not finite as a float")
    return value


def _sample_dict(sample: PowerSample) -> dict[str, Any]:
    return {
        "ts": sample.timestamp_s,
        "rack": sample.rack_id,
        "server": sample.server_id,
        "power_w": sample.power_w,
        "kind": sample.kind,
        "source": sample.source,
    }


def _decode_sample(where: str, topic_rack: str, item: object) -> PowerSample:
    if not isinstance(item, dict):
        raise MqttPayloadError(f"{where}: a sample must be a JSON object")
    rack = _optional_str(where, item, "rack") or topic_rack
    if rack != topic_rack:
        raise MqttPayloadError(f"{where}: rack {rack!r} does not match the topic's {topic_rack!r}")
    kind = _optional_str(where, item, "kind") or "server"
    if kind not in SAMPLE_KINDS:
        raise MqttPayloadError(f"{where}: kind {kind!r} is not one of {sorted(SAMPLE_KINDS)}")
    return PowerSample(
        source=_optional_str(where, item, "source") or "mqtt",
        rack_id=rack,
        server_id=_optional_str(where, item, "server"),
        timestamp_s=_timestamp_s(where, item.get("ts")),
        power_w=_number(where, item, "power_w"),
        kind=kind,
    )


def _number(where: str, item: Mapping[str, object], key: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MqttPayloadError(f"{where}: field {key!r} must be a number, got {_short(value)}")
    return float(value)  # finite: the parser bounds integer digits and float literals


def _optional_str(where: str, item: Mapping[str, object], key: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MqttPayloadError(f"{where}: field {key!r} must be a string, got {_short(value)}")
    if len(value) > MAX_ID_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise MqttPayloadError(
            f"{where}: field {key!r} must be at most {MAX_ID_CHARS} printable characters, "
            f"got {_short(value)}"
        )
    return value


def _short(value: object) -> str:
    """A scalar's ``repr`` cut to 80 characters, a container's type: a rejection message never
    carries a whole payload (nor recurses into a deeply nested one)."""
    if not isinstance(value, str | int | float | bool) and value is not None:
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _timestamp_s(where: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise MqttPayloadError(f"{where}: field 'ts' {value!r} has no time zone")
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):
            raise MqttPayloadError(f"{where}: field 'ts' {value!r} is not ISO-8601") from None
    raise MqttPayloadError(
        f"{where}: field 'ts' must be epoch seconds or ISO-8601, got {_short(value)}"
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")
