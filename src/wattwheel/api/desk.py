"""The operator desk: what an override command does once the API has authenticated and validated
it (the routes in :mod:`.overrides` only parse and answer).

:class:`LocalDesk` applies a command to the controller's own overrides, live state and store:
unknown targets are refused (404), a pin below the critical load it carries (409, see
:mod:`.pins`), and every change is recorded as an event (who, when, why) in the audit trail and
the live stream. In one process (tests, embedding) the routes call it directly; ``wattwheel
serve`` runs the API in a process of its own, whose desk forwards each command to the control
process (:mod:`.process`), where a LocalDesk runs it: the checks see the controller's live
state, and the answer (201, 404, 409) is the same either way.

A command is a name and keyword arguments of plain values (:data:`COMMANDS`), so that it can
cross a process boundary as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from wattwheel.api.context import ApiContext
from wattwheel.runtime.state import EventRecord, Override, OverrideKind, OverrideScope, jsonable

#: The commands a desk runs, with their keyword arguments.
COMMANDS: dict[str, tuple[str, ...]] = {
    "pin_cap": ("scope", "target", "cap_kw", "actor", "reason", "ttl_s"),
    "set_reserve": ("domain_id", "action", "actor", "reason", "ttl_s"),
    "set_maintenance": ("actor", "reason", "ttl_s"),
    "clear": ("kind", "target", "scope", "actor"),
}


class CommandRefused(Exception):
    """The command is not applied: ``status`` (an HTTP code) and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Desk(Protocol):
    def run(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``command``; the override as JSON-safe values. Raises CommandRefused."""
        ...


class LocalDesk:
    """Runs commands on ``ctx`` (the controller's state, overrides, store and pin guard)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._commands: dict[str, Callable[..., dict[str, Any]]] = {
            "pin_cap": self.pin_cap,
            "set_reserve": self.set_reserve,
            "set_maintenance": self.set_maintenance,
            "clear": self.clear,
        }

    def run(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        fn = self._commands.get(command)
        if fn is None or set(args) != set(COMMANDS[command]):
            raise CommandRefused(400, f"unknown command {command!r} or arguments {sorted(args)}")
        return fn(**args)

    def _record(self, kind: str, ov: Override, actor: str, message: str) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(ov)
        domain = ov.target if ov.scope == "domain" else None
        self.ctx.record_event(EventRecord(self.ctx.clock(), kind, message, domain, actor, data))
        return data

    def _check_domain(self, domain_id: str) -> None:
        ids = self.ctx.state.domain_ids
        if ids and domain_id not in ids:
            raise CommandRefused(404, f"unknown domain {domain_id!r}")

    def pin_cap(
        self,
        scope: str,
        target: str,
        cap_kw: float,
        actor: str,
        reason: str,
        ttl_s: float | None,
    ) -> dict[str, Any]:
        if scope == "domain":
            self._check_domain(target)
        elif scope == "rack":
            racks = self.ctx.state.racks()
            if racks and target not in {x.rack_id for x in racks}:
                raise CommandRefused(404, f"unknown rack {target!r}")
        else:
            raise CommandRefused(422, f"scope must be 'rack' or 'domain', got {scope!r}")
        pins = self.ctx.pins
        refusal = pins.refusal(scope, target, cap_kw) if pins is not None else None
        if refusal is not None:
            raise CommandRefused(409, refusal)
        ov = self.ctx.overrides.pin_cap(
            target,
            "rack" if scope == "rack" else "domain",
            cap_kw,
            actor,
            reason,
            self.ctx.clock(),
            ttl_s,
        )
        message = f"{actor} pinned {scope} {target} at {cap_kw:g} kW: {reason}"
        return self._record("override.pin_cap", ov, actor, message)

    def set_reserve(
        self, domain_id: str, action: str, actor: str, reason: str, ttl_s: float | None
    ) -> dict[str, Any]:
        self._check_domain(domain_id)
        if action not in ("force", "forbid"):
            raise CommandRefused(422, f"action must be 'force' or 'forbid', got {action!r}")
        ov = self.ctx.overrides.set_reserve(
            domain_id,
            "force" if action == "force" else "forbid",
            actor,
            reason,
            self.ctx.clock(),
            ttl_s,
        )
        return self._record(
            "override.reserve", ov, actor, f"{actor} set reserve {action} on {domain_id}: {reason}"
        )

    def set_maintenance(self, actor: str, reason: str, ttl_s: float | None) -> dict[str, Any]:
        ov = self.ctx.overrides.set_maintenance(actor, reason, self.ctx.clock(), ttl_s)
        self.ctx.state.set_mode("maintenance")
        return self._record(
            "override.maintenance", ov, actor, f"{actor} entered maintenance mode: {reason}"
        )

    def clear(self, kind: str, target: str, scope: str | None, actor: str) -> dict[str, Any]:
        kinds: dict[str, OverrideKind] = {
            "pin_cap": "pin_cap",
            "reserve": "reserve",
            "maintenance": "maintenance",
        }
        scopes: dict[str, OverrideScope] = {"rack": "rack", "domain": "domain", "site": "site"}
        if kind not in kinds or (scope is not None and scope not in scopes):
            raise CommandRefused(422, f"cannot clear {kind!r} in scope {scope!r}")
        ov = self.ctx.overrides.clear(kinds[kind], target, scopes[scope] if scope else None)
        if ov is None:
            raise CommandRefused(404, f"no {kind} override on {target!r}")
        data = self._record("override.clear", ov, actor, f"{actor} cleared {kind} on {ov.target}")
        if kind == "maintenance":
            self.ctx.state.set_mode("normal")  # the runtime sets its real mode on its next tick
        return data
