"""etcd gateway JSON, on replies recorded from etcd 3.4.23 (``curl -XPOST .../v3/...``)."""

from __future__ import annotations

import base64
import json

import pytest

from wattwheel.adapters.etcd import codec
from wattwheel.runtime.leader import KeyOwner

HEADER = '"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952",'
GRANT = (
    "{" + HEADER + '"revision":"1","raft_term":"2"},"ID":"2324035587301165829","TTL":"3"}'
).encode()
KEEPALIVE = (
    '{"result":{' + HEADER + '"revision":"2","raft_term":"2"},"ID":"2324035587301165834",'
    '"TTL":"3"}}\n'
).encode()
KEEPALIVE_GONE = ('{"result":{' + HEADER + '"revision":"2","raft_term":"2"},"ID":"123"}}').encode()
TXN_CREATED = (
    "{" + HEADER + '"revision":"2","raft_term":"2"},"succeeded":true,'
    '"responses":[{"response_put":{"header":{"revision":"2"}}}]}'
).encode()
TXN_HELD = (
    "{" + HEADER + '"revision":"2","raft_term":"2"},"responses":[{"response_range":{"header":'
    '{"revision":"2"},"kvs":[{"key":"L3dhdHR3aGVlbC9zL2xlYWRlci9h","create_revision":"2",'
    '"mod_revision":"2","version":"1","value":"bWU=","lease":"2324035587301165834"}],'
    '"count":"1"}}]}'
).encode()
LEASE_NOT_FOUND = (
    b'{"error":"etcdserver: requested lease not found",'
    b'"message":"etcdserver: requested lease not found","code":5}'
)
DELETED_NONE = ("{" + HEADER + '"revision":"3","raft_term":"2"}}').encode()


def test_grant_and_keepalive() -> None:
    assert codec.parse_grant(codec.decode_body(GRANT)) == 2324035587301165829
    assert codec.parse_keepalive(codec.decode_body(KEEPALIVE)) == 3
    # proto3 JSON leaves TTL out when it is 0: the lease is gone
    assert codec.parse_keepalive(codec.decode_body(KEEPALIVE_GONE)) == 0
    assert codec.grant_request(3) == {"TTL": "3"}
    assert codec.lease_request(2324035587301165834) == {"ID": "2324035587301165834"}


def test_create_if_absent_request_is_a_create_revision_compare() -> None:
    txn = codec.create_if_absent_txn("/wattwheel/s/leader/a", "me", 42)
    key = base64.b64encode(b"/wattwheel/s/leader/a").decode()
    assert txn["compare"] == [
        {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    ]
    assert txn["success"] == [{"request_put": {"key": key, "value": "bWU=", "lease": "42"}}]
    assert txn["failure"] == [{"request_range": {"key": key}}]
    json.dumps(txn)  # serialisable as is


def test_create_if_absent_replies() -> None:
    created = codec.parse_create_if_absent(codec.decode_body(TXN_CREATED), "me", 7)
    assert created == KeyOwner(created=True, create_revision=2, lease_id=7, holder="me")
    held = codec.parse_create_if_absent(codec.decode_body(TXN_HELD), "other", 7)
    assert held == KeyOwner(False, 2, 2324035587301165834, "me")


def test_failed_compare_without_range_is_refused() -> None:
    with pytest.raises(ValueError, match="failure branch"):
        codec.parse_create_if_absent({"header": {"revision": "3"}}, "me", 7)


def test_errors_carry_the_grpc_code() -> None:
    with pytest.raises(codec.EtcdError) as err:
        codec.decode_body(LEASE_NOT_FOUND)
    assert err.value.code == codec.NOT_FOUND
    assert "lease not found" in str(err.value)
    streamed = b'{"error":{"grpc_code":14,"http_code":503,"message":"unavailable","code":14}}'
    with pytest.raises(codec.EtcdError) as err:
        codec.decode_body(streamed)
    assert err.value.code == 14
    with pytest.raises(ValueError, match="empty"):
        codec.decode_body(b"  ")
    with pytest.raises(ValueError):
        codec.decode_body(b"<html>bad gateway</html>")


def test_range_and_delete() -> None:
    kvs = codec.parse_range(codec.decode_body(TXN_HELD)["responses"][0]["response_range"])
    assert [(kv.key, kv.value, kv.create_revision, kv.lease_id) for kv in kvs] == [
        ("/wattwheel/s/leader/a", "me", 2, 2324035587301165834)
    ]
    assert codec.parse_range(codec.decode_body(DELETED_NONE)) == []
    assert codec.parse_deleted(codec.decode_body(DELETED_NONE)) == 0
    assert codec.parse_deleted({"deleted": "2"}) == 2


def test_prefix_range_end() -> None:
    req = codec.range_request("/wattwheel/s/", prefix=True)
    assert base64.b64decode(req["range_end"]) == b"/wattwheel/s0"  # '/' + 1 == '0'
    assert base64.b64decode(codec.range_request("a\xff", prefix=True)["range_end"]) == b"a\xc3\xc0"
    assert codec.unb64(codec.b64("ünïcode")) == "ünïcode"
