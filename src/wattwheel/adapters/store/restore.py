"""Operator overrides survive a controller restart: replay them from the event log.

The API records every override change as an ``override.*`` event whose data is the override
itself. At start-up the runtime calls :func:`restore_overrides` so a reserve forbidden for genset
maintenance, say, is not silently forgotten when the controller restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from wattwheel.adapters.store.base import Store
from wattwheel.runtime.state import EventRecord, Override, Overrides

log = logging.getLogger(__name__)

_KINDS = frozenset({"pin_cap", "reserve", "maintenance"})


def override_from_data(data: Mapping[str, Any]) -> Override:
    """Rebuild an :class:`Override` from an event's data; ValueError naming what is missing."""
    try:
        kind = data["kind"]
        if kind not in _KINDS:
            raise ValueError(f"unknown override kind {kind!r}")
        return Override(
            id=int(data["id"]),
            kind=kind,
            target=str(data["target"]),
            actor=str(data["actor"]),
            reason=str(data["reason"]),
            created_s=float(data["created_s"]),
            expires_s=None if data.get("expires_s") is None else float(data["expires_s"]),
            scope=data.get("scope", "site"),
            cap_kw=None if data.get("cap_kw") is None else float(data["cap_kw"]),
            action=data.get("action"),
        )
    except KeyError as exc:
        raise ValueError(f"override event data lacks {exc.args[0]!r}") from exc


def _override_events(store: Store, max_events: int) -> list[EventRecord]:
    """``override.*`` events, oldest first (the store pages newest first)."""
    rows: list[EventRecord] = []
    before: int | None = None
    while len(rows) < max_events:
        page = store.events(kind="override.", before_id=before, limit=500)
        rows.extend(e for _, e in page)
        if len(page) < 500:
            break
        before = page[-1][0]
    return rows[::-1]


def restore_overrides(
    store: Store, overrides: Overrides, now_s: float, max_events: int = 10_000
) -> list[Override]:
    """Replay the override log into ``overrides``; returns those still in force at ``now_s``."""
    for event in _override_events(store, max_events):
        try:
            ov = override_from_data(event.data)
        except (ValueError, TypeError) as exc:
            log.warning("override event at %s skipped: %s", event.timestamp_s, exc)
            continue
        if event.kind == "override.clear":
            overrides.clear(ov.kind, ov.target, ov.scope)
        else:
            overrides.restore(ov)
    active = overrides.active(now_s)
    if active:
        log.info("restored %d operator override(s) from the event log", len(active))
    return active
