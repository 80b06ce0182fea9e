"""What every route needs: the live state, the store, the overrides, the clock and the auth
dependencies. Built once by :func:`wattwheel.api.app.create_app`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattwheel.adapters.store.base import Store, StoreUnavailable
from wattwheel.api.pins import PinGuard
from wattwheel.runtime.state import EventRecord, LiveState, Overrides

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    state: LiveState
    store: Store
    overrides: Overrides
    clock: Callable[[], float]
    site_name: str = ""
    pins: PinGuard | None = None  # None: no inventory, pins are not checked against it
    #: the store's health as another process reports it (``serve``'s API process); None: ask
    #: ``store``
    health: Callable[[], dict[str, Any]] | None = None

    def store_health(self) -> dict[str, Any]:
        """``healthy``, ``pending_items`` (memory + spill journal), ``spilled_items``,
        ``spill_bytes`` / ``spill_max_bytes`` (the journal and its bound; 0 without a spill),
        ``durable`` and ``dropped`` when the store buffers (else defaults)."""
        if self.health is not None:
            return self.health()
        return {
            "healthy": bool(getattr(self.store, "healthy", True)),
            "pending_items": int(getattr(self.store, "pending_items", 0))
            + int(getattr(self.store, "spilled_items", 0)),
            "spilled_items": int(getattr(self.store, "spilled_items", 0)),
            "spill_bytes": int(getattr(self.store, "spill_bytes", 0)),
            "spill_max_bytes": int(getattr(self.store, "max_spill_bytes", 0)),
            "durable": bool(getattr(self.store, "durable", False)),
            "dropped": int(getattr(self.store, "dropped", 0)),
        }

    def record_event(self, event: EventRecord) -> None:
        """Into the live state (SSE, dashboard) and the store (the audit trail)."""
        self.state.record_event(event)
        try:
            self.store.write_event(event)
        except StoreUnavailable as exc:  # a plain store without a buffer
            self.state.count_error("store")
            log.warning("event %s not stored: %s", event.kind, exc)
