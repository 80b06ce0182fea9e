"""Overrides set through the API are restored from the store's event log after a restart."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from wattwheel.adapters.store import open_store
from wattwheel.adapters.store.restore import restore_overrides
from wattwheel.api import create_app, parse_tokens
from wattwheel.runtime.state import EventRecord, LiveState, Overrides

TOKENS = parse_tokens("olga:operator:operator-token-1")
OP = {"Authorization": "Bearer operator-token-1"}


def test_overrides_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store, now = open_store(url), [1000.0]
    app = create_app(LiveState(["a", "b"]), store, Overrides(), TOKENS, clock=lambda: now[0])
    with TestClient(app) as c:

        def post(path: str, body: dict[str, object]) -> int:
            return c.post("/api/v1/overrides" + path, json=body, headers=OP).status_code

        assert post("/reserve", {"domain_id": "a", "action": "forbid", "reason": "genset"}) == 201
        rack_pin = {"scope": "rack", "target": "r1", "cap_kw": 4, "reason": "hot", "ttl_s": 100}
        assert post("/cap", rack_pin) == 201
        assert post("/cap", {"scope": "domain", "target": "b", "cap_kw": 9, "reason": "x"}) == 201
        assert c.delete("/api/v1/overrides/cap/domain/b", headers=OP).status_code == 200
        assert post("/maintenance", {"reason": "UPS swap"}) == 201
    store.write_event(EventRecord(1001.0, "override.pin_cap", "corrupt", data={"kind": "x"}))
    store.close()

    restored = Overrides()
    active = restore_overrides(open_store(url), restored, now_s=1050.0)
    assert sorted((o.kind, o.target) for o in active) == [
        ("maintenance", "site"),
        ("pin_cap", "r1"),
        ("reserve", "a"),
    ]
    assert restored.reserve_override(["a", "b"], 1050.0).tolist() == [-1, 0]
    assert restored.rack_caps_kw(1050.0) == {"r1": 4.0}
    assert restored.rack_caps_kw(1101.0) == {}  # its expiry was restored too
    new = restored.set_maintenance("olga", "again", 1060.0)
    assert new.id > max(o.id for o in active)
