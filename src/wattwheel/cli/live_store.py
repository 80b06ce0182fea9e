"""``wattwheel serve``'s store: durable by default (a spill journal on local disk) and the
operator overrides restored from the audit log at start-up. See ``docs/live.md`` ("Store").
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from wattwheel.adapters.store import (
    DEFAULT_SPILL_DIR,
    BufferedStore,
    open_store,
)
from wattwheel.adapters.store.restore import restore_overrides
from wattwheel.runtime.state import EventRecord, LiveState, Override, Overrides, jsonable

log = logging.getLogger(__name__)

#: The event kind that shows an override restored at start-up.
RESTORED_KIND = "override.restored"


def default_spill_dir(instance_id: str | None) -> Path:
    """``./wattwheel-spill``, or ``./wattwheel-spill/<instance-id>`` when the instance is named
    (redundant controllers started from one directory each get their own journal)."""
    if not instance_id:
        return DEFAULT_SPILL_DIR
    return DEFAULT_SPILL_DIR / re.sub(r"[^A-Za-z0-9._-]", "_", instance_id)


def open_serve_store(db: str | None, spill_dir: Path, max_spill_mb: float) -> BufferedStore:
    """The database behind a durable write buffer; a spill left by a crash is replayed now.

    Raises StoreUnavailable (database unreachable) or SpillInUse (another process's journal).
    """
    if not max_spill_mb > 0:
        raise ValueError(f"--spill-max-mb must be > 0, got {max_spill_mb}")
    return open_store(db, spill_dir=spill_dir, max_spill_bytes=int(max_spill_mb * 1024 * 1024))


def restore_operator_overrides(
    store: BufferedStore, overrides: Overrides, state: LiveState, now_s: float
) -> list[Override]:
    """Replay the override log into ``overrides`` (each keeps its absolute expiry, so its TTL
    is what remains of it) and record one ``override.restored`` event per override in force."""
    active = restore_overrides(store, overrides, now_s)
    for ov in active:
        left = "no expiry" if ov.expires_s is None else f"{ov.expires_s - now_s:.0f} s left"
        what = ov.action or (f"{ov.cap_kw:g} kW" if ov.cap_kw is not None else "on")
        data = {
            **jsonable(ov),
            "remaining_ttl_s": jsonable(None if ov.expires_s is None else ov.expires_s - now_s),
        }
        event = EventRecord(
            now_s,
            RESTORED_KIND,
            f"restored {ov.kind} {what} on {ov.target} set by {ov.actor} ({left}): {ov.reason}",
            ov.target if ov.scope == "domain" else None,
            "runtime",
            data,
        )
        state.record_event(event)
        store.write_event(event)
    if active:
        log.warning(
            "restored %d operator override(s) in force: %s",
            len(active),
            ", ".join(
                f"{o.kind} {o.action or ''} on {o.target}".replace("  ", " ") for o in active
            ),
        )
    return active
