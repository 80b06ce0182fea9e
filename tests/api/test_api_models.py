"""``GET /api/v1/models``: the model history of continuous learning from the store's
``model_versions`` table (real SQLite through the serve store stack), with the learner's state."""

from __future__ import annotations

import math
from pathlib import Path

from api_support import DOMAINS, TOKENS, VIEWER, auth
from fastapi.testclient import TestClient

from wattwheel.adapters.store import MemoryStore, open_store
from wattwheel.adapters.store.models import model_history_for
from wattwheel.api import create_app
from wattwheel.forecast.online import ModelRecord
from wattwheel.runtime.state import LiveState, Overrides


def test_models_route_lists_versions_newest_first_with_status_and_metrics(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    history = model_history_for(store)
    assert history is not None
    shipped = ModelRecord("v0", None, 100.0, "live", -math.inf, "/m/v0", {"source": "shipped"})
    history.write_model(shipped, 100.0)
    shadow = ModelRecord("v1", "v0", 200.0, "shadow", 190.0, "/m/v1", {"rolling_mae": 1.5})
    history.write_model(shadow, 200.0)
    # a promotion updates both rows in place
    history.write_model(ModelRecord(**{**vars(shadow), "status": "live"}), 300.0)
    history.write_model(ModelRecord(**{**vars(shipped), "status": "predecessor"}), 300.0)
    state = LiveState(DOMAINS)
    state.learning = lambda: {"live": "v1", "fine_tuning": "on"}
    app = create_app(state, store, Overrides(), TOKENS, clock=lambda: 400.0)
    with TestClient(app) as c:
        assert c.get("/api/v1/models").status_code == 401
        body = c.get("/api/v1/models", headers=auth(VIEWER)).json()
    assert body["source"] == "store"
    assert body["learner"] == {"live": "v1", "fine_tuning": "on"}
    assert [(m["version"], m["status"], m["parent"]) for m in body["models"]] == [
        ("v1", "live", "v0"),
        ("v0", "predecessor", None),
    ]
    assert body["models"][0]["metrics"] == {"rolling_mae": 1.5}
    assert body["models"][0]["trained_until_s"] == 190.0
    assert body["models"][1]["trained_until_s"] is None  # the shipped model: not this site's
    store.close()
    reopened = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    reloaded = model_history_for(reopened)
    assert reloaded is not None and len(reloaded.models()) == 2
    reopened.close()


def test_models_route_without_a_model_history_says_so() -> None:
    app = create_app(LiveState(DOMAINS), MemoryStore(), Overrides(), TOKENS, clock=lambda: 1.0)
    with TestClient(app) as c:
        body = c.get("/api/v1/models", headers=auth(VIEWER)).json()
    assert body == {"models": [], "learner": None, "source": "none"}
