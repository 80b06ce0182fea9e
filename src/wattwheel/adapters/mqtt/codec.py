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

Decoding checks structure and types only (a clear :class:`MqttPayloadError` naming the field);
the value checks (NaN, negative, absurd, stale) belong to
:func:`wattwheel.domain.telemetry.check_sample`. Non-standard JSON constants (NaN, Infinity)
are rejected here because other JSON parsers cannot read them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.telemetry import SAMPLE_KINDS, PowerSample

SCHEMA_VERSION = 1
TOPIC_ROOT = "wattwheel"


class MqttPayloadError(WattwheelError):
    """A message that is not a valid telemetry payload; names the topic and the field."""


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
    try:
        body = json.loads(payload, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MqttPayloadError(f"{topic}: payload is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise MqttPayloadError(f"{topic}: payload must be a JSON object, got {type(body).__name__}")
    version = body.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, not 1.0
        raise MqttPayloadError(
            f"{topic}: field 'v' must be {SCHEMA_VERSION}, got {body.get('v')!r}"
        )
    if "samples" not in body:
        return [_decode_sample(topic, topic_rack, body)]
    items = body["samples"]
    if not isinstance(items, list):
        raise MqttPayloadError(f"{topic}: field 'samples' must be a list")
    return [
        _decode_sample(f"{topic} samples[{i}]", topic_rack, item) for i, item in enumerate(items)
    ]


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
        raise MqttPayloadError(f"{where}: field {key!r} must be a number, got {value!r}")
    return float(value)


def _optional_str(where: str, item: Mapping[str, object], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise MqttPayloadError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def _timestamp_s(where: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MqttPayloadError(f"{where}: field 'ts' {value!r} is not ISO-8601") from None
        if moment.tzinfo is None:
            raise MqttPayloadError(f"{where}: field 'ts' {value!r} has no time zone")
        return moment.timestamp()
    raise MqttPayloadError(f"{where}: field 'ts' must be epoch seconds or ISO-8601, got {value!r}")


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")
