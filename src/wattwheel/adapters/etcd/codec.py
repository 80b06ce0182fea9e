"""etcd v3 JSON gateway messages, pure (no I/O).

The gateway speaks the gRPC messages as proto3 JSON: keys and values are base64, 64-bit integers
are decimal strings, and fields at their default (0, false, empty) are left out, so a missing
``succeeded`` means false and a missing ``TTL`` means 0. Errors come back as
``{"error": ..., "message": ..., "code": <gRPC status>}``; a streamed reply (keep-alive) wraps
its message in ``{"result": ...}``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from wattwheel.runtime.leader import KeyOwner

#: gRPC status code etcd uses for "requested lease not found".
NOT_FOUND = 5

Json = dict[str, Any]


class EtcdError(Exception):
    """etcd answered with an error (``code``: gRPC status)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KeyValue:
    """One key as stored (revisions are etcd's store revisions; ``lease_id`` 0: no lease)."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease_id: int


def b64(text: str) -> str:
    """UTF-8 text as the gateway's base64."""
    return base64.b64encode(text.encode()).decode("ascii")


def unb64(data: str) -> str:
    """The gateway's base64 back to UTF-8 text."""
    return base64.b64decode(data, validate=True).decode()


def decode_body(body: bytes) -> Json:
    """The first JSON message of a reply, unwrapped from ``result`` and checked for ``error``."""
    first = body.strip().split(b"\n", 1)[0]
    if not first:
        raise ValueError("empty reply from the etcd gateway")
    msg = json.loads(first)
    if not isinstance(msg, dict):
        raise ValueError(f"etcd reply is not a JSON object: {first[:200]!r}")
    if "result" in msg and isinstance(msg["result"], dict):
        msg = msg["result"]
    error = msg.get("error")
    if error is not None:
        detail = error if isinstance(error, dict) else msg
        raise EtcdError(int(detail.get("code", 2)), str(detail.get("message", error)))
    return msg


def grant_request(ttl_s: int) -> Json:
    return {"TTL": str(ttl_s)}


def parse_grant(msg: Json) -> int:
    """The id of the granted lease."""
    return int(msg["ID"])


def lease_request(lease_id: int) -> Json:
    """Body of keep-alive and revoke."""
    return {"ID": str(lease_id)}


def parse_keepalive(msg: Json) -> int:
    """Remaining TTL (s) of the renewed lease; 0 when the lease does not exist any more."""
    return int(msg.get("TTL", 0))


def create_if_absent_txn(key: str, value: str, lease_id: int) -> Json:
    """A transaction: if ``key`` was never created (create revision 0), put it bound to the
    lease; otherwise read it. Either way the reply says who holds it."""
    k = b64(key)
    return {
        "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": k, "value": b64(value), "lease": str(lease_id)}}],
        "failure": [{"request_range": {"key": k}}],
    }


def delete_if_owned_txn(key: str, lease_id: int) -> Json:
    """A transaction: delete ``key`` if it is bound to the lease (a resignation)."""
    k = b64(key)
    return {
        "compare": [{"key": k, "target": "LEASE", "result": "EQUAL", "lease": str(lease_id)}],
        "success": [{"request_delete_range": {"key": k}}],
    }


def parse_create_if_absent(msg: Json, value: str, lease_id: int) -> KeyOwner:
    """Who holds the key after :func:`create_if_absent_txn` (``value``/``lease_id``: what the
    transaction tried to put). On success the put's revision is the key's create revision."""
    if msg.get("succeeded", False):
        return KeyOwner(True, int(msg["header"]["revision"]), lease_id, value)
    responses = msg.get("responses", [])
    if not responses or "response_range" not in responses[0]:
        raise ValueError(f"etcd txn reply without the range of the failure branch: {msg}")
    kvs = parse_range(responses[0]["response_range"])
    if not kvs:  # cannot happen in one transaction: the compare failed because the key exists
        raise ValueError(f"etcd txn compare failed but the key is absent: {msg}")
    kv = kvs[0]
    return KeyOwner(False, kv.create_revision, kv.lease_id, kv.value)


def put_request(key: str, value: str, lease_id: int = 0) -> Json:
    """Put ``key`` (bound to the lease unless ``lease_id`` is 0)."""
    req: Json = {"key": b64(key), "value": b64(value)}
    if lease_id:
        req["lease"] = str(lease_id)
    return req


def range_request(key: str, prefix: bool = False) -> Json:
    """Read one key, or every key starting with ``key`` when ``prefix``."""
    req: Json = {"key": b64(key)}
    if prefix:
        req["range_end"] = base64.b64encode(_prefix_end(key.encode())).decode("ascii")
    return req


def parse_range(msg: Json) -> list[KeyValue]:
    return [
        KeyValue(
            key=unb64(kv["key"]),
            value=unb64(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease_id=int(kv.get("lease", 0)),
        )
        for kv in msg.get("kvs", [])
    ]


def delete_range_request(key: str, prefix: bool = False) -> Json:
    return range_request(key, prefix)


def parse_deleted(msg: Json) -> int:
    """How many keys a delete-range removed."""
    return int(msg.get("deleted", 0))


def _prefix_end(prefix: bytes) -> bytes:
    # etcd's convention: a prefix's range ends at the prefix with its last byte + 1
    # (trailing 0xff bytes dropped first); all 0xff means "to the end" (a single 0 byte).
    raw = bytearray(prefix.rstrip(b"\xff"))
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def parse_watch_deletions(msg: Json) -> list[str]:
    """The keys a streamed watch message reports deleted (none for the "created" message and
    for puts); an error message raises :class:`EtcdError`."""
    if "result" in msg and isinstance(msg["result"], dict):
        msg = msg["result"]
    error = msg.get("error")
    if error is not None:
        detail = error if isinstance(error, dict) else msg
        raise EtcdError(int(detail.get("code", 2)), str(detail.get("message", error)))
    return [
        unb64(ev["kv"]["key"])
        for ev in msg.get("events", [])
        if ev.get("type") == "DELETE" and "kv" in ev
    ]
