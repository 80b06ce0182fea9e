"""The API over the real store stack (BufferedStore -> SqlStore on a SQLite file): the audit log
pages through SQL and overrides land in the events table."""

from __future__ import annotations

import math
from pathlib import Path

from api_support import DOMAINS, OPERATOR, TOKENS, VIEWER, auth, feed
from fastapi.testclient import TestClient

from wattwheel.adapters.store import open_store
from wattwheel.api import create_app
from wattwheel.runtime.state import LiveState, Overrides


def test_api_over_sqlite(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    state = LiveState(DOMAINS)
    for k in range(30):
        feed(state, None, 1000.0 + k, k)
        store.write_decisions(state.recent_decisions(2)[::-1])
    app = create_app(state, store, Overrides(), TOKENS, clock=lambda: 2000.0)
    with TestClient(app) as c:
        page = c.get("/api/v1/decisions", params={"limit": 25}, headers=auth(VIEWER)).json()
        assert page["source"] == "store" and len(page["decisions"]) == 25
        rest = c.get(
            "/api/v1/decisions", params={"before_id": page["next_before_id"]}, headers=auth(VIEWER)
        ).json()
        assert len(rest["decisions"]) == 35 and rest["next_before_id"] is None
        newest = page["decisions"][0]
        assert newest["reason"].startswith("tick 29") and newest["timestamp_s"] == 1029.0
        assert not math.isnan(newest["soc_target"])
        # the largest id SQL can hold pages from the top; one more is a 422, never a 500
        top = {"before_id": 2**63 - 1, "limit": 1}
        r = c.get("/api/v1/decisions", params=top, headers=auth(VIEWER))
        assert r.json()["decisions"][0]["reason"] == newest["reason"]
        r = c.get("/api/v1/events", params={"before_id": 2**63}, headers=auth(VIEWER))
        assert r.status_code == 422
        body = {"domain_id": "row-a", "action": "forbid", "reason": "genset maintenance"}
        assert (
            c.post("/api/v1/overrides/reserve", json=body, headers=auth(OPERATOR)).status_code
            == 201
        )
    store.close()
    reopened = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    [(_, ev)] = reopened.events(kind="override")
    assert (ev.actor, ev.domain_id, ev.data["action"]) == ("olga", "row-a", "forbid")
    assert reopened.counts()["decisions"] == 60
    reopened.close()
