"""Actuating: a Decision becomes device commands, all sent through one fenced writer.

:class:`FencedWriter` is the only way a command leaves the runtime: flywheel setpoints (also
those a :class:`FlywheelWorker` sends later), server caps, outlet switching, reserve commands
and scheduler requests. Each write is checked against the leader election right before it is
sent (a cap of a domain this instance no longer leads is dropped and retried by whoever leads
it). :class:`Actuator` decides what to write: per-server caps by water-filling (operator pins
included), outlet shedding when a breaker is heating with nothing else left, reserve requests
and scheduler levels; it remembers what the devices took.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_OFF, Decision, Observation
from wattwheel.domain.converter import ConverterSettings
from wattwheel.domain.reserve import is_running
from wattwheel.domain.shifts import ShiftBook, ShiftOrder
from wattwheel.domain.site import SiteParams
from wattwheel.runtime import actuate
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.ledger import Ledger, ModelledReserve
from wattwheel.runtime.ports import (
    ConverterPort,
    FlywheelPort,
    FlywheelStatusW,
    OutletActuator,
    RampLimitPort,
    ReservePort,
    SchedulerPort,
    ServerCapActuator,
)
from wattwheel.runtime.state import Mode, Overrides
from wattwheel.runtime.telemetry import TelemetryView
from wattwheel.runtime.workers import FlywheelWorker

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
log = logging.getLogger(__name__)


class FencedWriter:
    """Every command the runtime sends, each checked against leadership when it is sent.

    ``commandable``: the domains this instance may command now (None: all of them);
    ``coordinator``: may it command what the domains share (reserve, scheduler) now (None:
    only when it may command every domain). ``on_result`` (set by the leadership wiring) hears
    ``(domain_id, ok)`` after each flywheel setpoint or cap write of a domain: leadership
    follows the ability to command.
    """

    def __init__(
        self,
        domain_ids: tuple[str, ...],
        faults: FaultBook,
        timeout_s: float,
        commandable: Callable[[], Collection[str]] | None = None,
        coordinator: Callable[[], bool] | None = None,
    ) -> None:
        self.domain_ids = domain_ids
        self.faults = faults
        self.timeout_s = timeout_s
        self.commandable = commandable
        self.coordinator = coordinator
        self.on_result: Callable[[str, bool], None] | None = None

    def report(self, domain_id: str, ok: bool) -> None:
        """A command write to ``domain_id`` went through (``ok``) or failed."""
        if self.on_result is not None:
            try:
                self.on_result(domain_id, ok)
            except Exception:
                log.exception("command result hook failed")

    # ------------------------------------------------------------------ fencing
    def allowed(self) -> BoolArray:
        """Per domain: may this instance command it right now? (An election that cannot be
        checked is counted as a fault and commands nothing.)"""
        if self.commandable is None:
            return np.ones(len(self.domain_ids), dtype=bool)
        try:
            mine = set(self.commandable())
        except Exception as exc:  # an election we cannot check: command nothing
            self.faults.fault("leader", "elector", f"{type(exc).__name__}: {exc}")
            mine = set()
        return np.array([d in mine for d in self.domain_ids], dtype=bool)

    def may_command(self, domain_id: str) -> bool:
        """The fencing check of one domain at the moment of writing."""
        if self.commandable is None:
            return True
        try:
            return domain_id in set(self.commandable())
        except Exception:  # counted by the tick's own check
            return False

    def may_coordinate(self, allowed: BoolArray | None = None) -> bool:
        """May this instance send shared commands (reserve, scheduler) right now?"""
        if self.coordinator is None:
            return bool((self.allowed() if allowed is None else allowed).all())
        try:
            return bool(self.coordinator())
        except Exception as exc:  # an election we cannot check: command nothing shared
            self.faults.fault("leader", "coordinator", f"{type(exc).__name__}: {exc}")
            return False

    def _may_share(self) -> bool:
        if self.coordinator is None:
            return all(self.may_command(d) for d in self.domain_ids)
        try:
            return bool(self.coordinator())
        except Exception:  # counted by the tick's own check
            return False

    # ------------------------------------------------------------------ writes
    def flywheel(self, domain_id: str, port: FlywheelPort) -> FlywheelPort:
        """``port`` with its setpoint writes fenced (for a worker that writes later)."""
        return _FencedFlywheel(port, domain_id, self.may_command, self.report)

    async def setpoint(self, domain_id: str, port: FlywheelPort, power_w: float) -> bool:
        async def write() -> bool:
            if not self.may_command(domain_id):
                return False
            if not await _reported(port.write_setpoint(power_w), domain_id, self.report):
                raise ConnectionError(f"setpoint {power_w:.0f} W not accepted")
            return True

        return await guarded(
            self.faults, "device", f"flywheel:{domain_id}", write, self.timeout_s, False
        )

    async def converter(
        self, domain_id: str, port: ConverterPort, settings: ConverterSettings
    ) -> bool:
        """Write a converter's loop parameters, fenced like a setpoint."""

        async def write() -> bool:
            if not self.may_command(domain_id):
                return False
            if not await _reported(port.write_converter(settings), domain_id, self.report):
                raise ConnectionError("converter parameters not accepted")
            return True

        return await guarded(
            self.faults, "device", f"converter:{domain_id}", write, self.timeout_s, False
        )

    async def caps(
        self,
        actuator: ServerCapActuator,
        changes: Mapping[str, float | None],
        domain_of: Mapping[str, str],
    ) -> dict[str, bool]:
        """Write the caps of the servers whose domain this instance leads now; the others
        are reported as not written."""
        # One fencing check for the whole batch (nothing runs between it and the write).
        domains = set(map(domain_of.__getitem__, changes))
        mine_domains = {d for d in domains if self.may_command(d)}
        mine = (
            changes
            if mine_domains == domains
            else {sid: w for sid, w in changes.items() if domain_of[sid] in mine_domains}
        )
        no_writes: dict[str, bool] = {}
        written = (
            await guarded(
                self.faults,
                "device",
                "caps",
                functools.partial(actuator.set_caps, mine),
                self.timeout_s,
                no_writes,
            )
            if mine
            else {}
        )
        if mine and len(written) == len(mine) and all(written.values()):
            went_through = dict.fromkeys(mine_domains, True)  # the usual case, in one pass
        else:
            went_through = dict.fromkeys(set(map(domain_of.__getitem__, mine)), False)
            for sid, ok in written.items():
                if ok and sid in mine:
                    went_through[domain_of[sid]] = True
        for dom, ok in went_through.items():
            self.report(dom, ok)
        if mine is changes and written.keys() == changes.keys():
            return {sid: bool(ok) for sid, ok in written.items()}
        return {sid: bool(written.get(sid)) for sid in changes}

    async def outlets(
        self, actuator: OutletActuator, states: Mapping[str, bool], domain_of: Mapping[str, str]
    ) -> dict[str, bool]:
        mine = {k: on for k, on in states.items() if self.may_command(domain_of[k])}
        if not mine:
            return {}
        return await guarded(
            self.faults,
            "device",
            "outlets",
            functools.partial(actuator.set_outlets, mine),
            self.timeout_s,
            {},
        )

    async def reserve(
        self,
        port: ReservePort,
        domain_id: str,
        on: bool,
        power_kw: float,
        shared: bool,
        warm: bool = False,
    ) -> bool:
        """A reserve command: by the coordinator (``shared``) or by the domain's leader."""

        async def write() -> bool:
            ok = self._may_share() if shared else self.may_command(domain_id)
            return await port.command(domain_id, on, power_kw, warm=warm) if ok else False

        return await guarded(self.faults, "device", "reserve", write, self.timeout_s, False)

    async def schedule(
        self,
        scheduler: SchedulerPort,
        now_s: float,
        shifts: Sequence[ShiftOrder],
        defer_kw: Mapping[str, float],
    ) -> bool:
        async def write() -> bool:
            if not self._may_share():
                return False
            return await scheduler.request(now_s, shifts, defer_kw)

        return await guarded(self.faults, "device", "scheduler", write, self.timeout_s * 4, False)

    async def ramp_limit(
        self, scheduler: RampLimitPort, now_s: float, levels: Mapping[str, float], period_s: float
    ) -> bool:
        """The ramp-up limits at job start, fenced like the other shared commands."""

        async def write() -> bool:
            if not self._may_share():
                return False
            return await scheduler.ramp_limit(now_s, levels, period_s)

        return await guarded(
            self.faults, "device", "scheduler-ramp", write, self.timeout_s * 4, False
        )


@dataclass
class _FencedFlywheel:
    """A flywheel port whose setpoint writes happen only while this instance may command the
    domain, checked at the moment of writing: a setpoint queued in a :class:`FlywheelWorker`
    before a demotion is dropped (reported as done: there is nothing to retry)."""

    port: FlywheelPort
    domain_id: str
    may_command: Callable[[str], bool]
    report: Callable[[str, bool], None]

    async def read(self) -> FlywheelStatusW | None:
        return await self.port.read()

    async def write_setpoint(self, power_w: float) -> bool:
        if not self.may_command(self.domain_id):
            log.debug("flywheel %s: setpoint dropped, not leader any more", self.domain_id)
            return True
        return await _reported(self.port.write_setpoint(power_w), self.domain_id, self.report)


async def _reported(
    write: Coroutine[Any, Any, bool], domain_id: str, report: Callable[[str, bool], None]
) -> bool:
    """Await a command write and report whether it went through (an exception or a
    cancellation by a timeout is a failure too)."""
    ok = False
    try:
        ok = bool(await write)
    finally:
        report(domain_id, ok)
    return ok


@dataclass(frozen=True)
class Acted:
    """What one tick commanded: cap writes sent, outlets shed, the rack budgets in force."""

    cap_writes: int
    shed: list[str]


class Actuator:
    """What to command this tick, and what the devices are known to have taken."""

    def __init__(
        self,
        site: SiteParams,
        inv: Inventory,
        writer: FencedWriter,
        overrides: Overrides,
        ledger: Ledger,
        view: TelemetryView,
        event: Callable[[str, str], None],
        *,
        caps: ServerCapActuator | None,
        outlets: OutletActuator | None,
        flywheels: Mapping[str, FlywheelPort],
        reserve: ReservePort | None,
        modelled_reserve: ModelledReserve,
        scheduler: SchedulerPort | None,
        shed_heat: float,
        rewrite_per_tick: int,
    ) -> None:
        self.site = site
        self.inv = inv
        self.domain_ids = site.domain_names
        self.writer = writer
        self.overrides = overrides
        self.ledger = ledger
        self.view = view
        self.event = event
        self.caps = caps
        self.outlets = outlets
        self.flywheels = flywheels
        self.reserve_port: ReservePort = reserve or modelled_reserve
        self.scheduler = scheduler
        self.shed_heat = shed_heat
        self.rewrite_per_tick = rewrite_per_tick
        #: Flywheels commanded by their own worker (set while the runtime runs).
        self.fly_workers: dict[str, FlywheelWorker] = {}
        #: Converter-loop parameters each domain's converter last took (written on change).
        self.converter_sent: dict[str, tuple[float, ...]] = {}
        #: The ramp-up limits the scheduler last took, and when (renewed each half period).
        self.ramp_sent: tuple[tuple[float, ...], float] | None = None
        self.ramp_busy = False
        n = len(inv.servers)
        self.applied_caps = np.full(n, np.nan)
        self.wanted_caps = self.applied_caps.copy()
        self.cap_demand_w = np.zeros(n)
        self.rack_budgets_w: dict[str, float] = {}
        self.shed: set[str] = set()
        # After a promotion: caps and outlet states the predecessor may have left (rewritten).
        self.unknown_caps = np.zeros(n, dtype=bool)
        self.reassert: set[str] = set()
        self.last_sched: tuple[float, ...] | None = None
        self.sched_busy = False
        self.background: set[asyncio.Task[Any]] = set()
        self._server_domain = {
            s.server_id: self.domain_ids[int(inv.server_domain[i])]
            for i, s in enumerate(inv.servers)
        }
        self._outlet_domain = {
            key: self._server_domain[s.server_id] for key, s in inv.outlets().items()
        }

    # ------------------------------------------------------------------ promotion
    def forget_applied(self, domains: Collection[str]) -> None:
        """This instance just became leader of ``domains``: it cannot know what its predecessor
        wrote, so the next ticks rewrite every cap of those domains (lifts included) and switch
        their non-critical outlets back on once they have headroom (or shed them as needed)."""
        mine = np.array([d in domains for d in self.domain_ids], dtype=bool)
        servers = mine[self.inv.server_domain]
        self.unknown_caps |= servers
        for key, outlet in self.inv.outlets().items():
            i = self.inv.server_index[outlet.server_id]
            if servers[i] and not self.inv.critical[i]:
                self.shed.discard(key)
                self.reassert.add(key)

    def forget_schedule(self) -> None:
        """This instance just became site coordinator: resend the scheduler levels (shift
        orders replace the predecessor's per pair: a later revision wins)."""
        self.last_sched = None
        self.ledger.shifts = ShiftBook(self.site.n_domains)

    def _converter_jobs(self, dec: Decision, allowed: BoolArray) -> list[Any]:
        """Parameters for each led domain's converter loop when the decision carries them
        and they changed since that converter last took them (issue 10: the HPMC sets the
        loop's parameters, the converter regulates the feed)."""
        if dec.converter is None:
            return []
        jobs: list[Any] = []
        for i, dom in enumerate(self.domain_ids):
            port = self.flywheels.get(dom)
            if not allowed[i] or port is None or not hasattr(port, "write_converter"):
                continue
            one = dec.converter.for_domain(i)
            if self.converter_sent.get(dom) == one.key():
                continue
            jobs.append(self._send_converter(dom, cast(ConverterPort, port), one))
        return jobs

    async def _send_converter(
        self, dom: str, port: ConverterPort, settings: ConverterSettings
    ) -> bool:
        ok = await self.writer.converter(dom, port, settings)
        if ok:
            self.converter_sent[dom] = settings.key()
        return ok

    # ------------------------------------------------------------------ one tick
    async def act(self, obs: Observation, dec: Decision, mode: Mode, safe: bool = False) -> Acted:
        """Send this tick's commands. ``safe`` (a tick fallback): a cap or shedding plan that
        raises holds the caps in force / sheds nothing instead of stopping the other commands
        (caps are planned again without rack pins first)."""
        allowed = self.writer.allowed()
        shared = self.writer.may_coordinate(allowed)
        # Plan first (a plan that raises sends nothing), then send everything at once.
        changes = self._safe_cap_changes(obs, dec, allowed) if safe else None
        if changes is None:
            changes = self._cap_changes(obs, dec, allowed)
        if safe:
            try:
                shed = self._shed_plan(obs, dec, mode, allowed)
            except Exception as exc:
                self.writer.faults.fault("tick", "shedding", f"{type(exc).__name__}: {exc}")
                shed = {}
        else:
            shed = self._shed_plan(obs, dec, mode, allowed)
        jobs: list[Any] = []
        for i, dom in enumerate(self.domain_ids):
            port = self.flywheels.get(dom)
            if not allowed[i]:
                continue  # another instance leads this domain: command nothing
            if dom in self.fly_workers:
                self.fly_workers[dom].submit(float(dec.kes_kw[i]) * 1000.0)
            elif port is not None:
                jobs.append(self.writer.setpoint(dom, port, float(dec.kes_kw[i]) * 1000.0))
        jobs.extend(self._converter_jobs(dec, allowed))
        # The reserve is shared: with a coordinator role it is commanded by the coordinator,
        # otherwise per domain by that domain's leader.
        by_coordinator = self.writer.coordinator is not None
        reserve_ok = np.full(len(allowed), shared) if by_coordinator else allowed
        jobs.extend(self._reserve_jobs(obs, dec, reserve_ok, by_coordinator))
        cap_job = None
        if changes and self.caps is not None:
            cap_job = asyncio.ensure_future(
                self.writer.caps(self.caps, changes, self._server_domain)
            )
            jobs.append(cap_job)
        if shed and self.outlets is not None:
            jobs.append(self.writer.outlets(self.outlets, shed, self._outlet_domain))
        if mode != "maintenance" and shared:
            self._maybe_schedule(obs.now_s, dec)
            self._maybe_ramp_limit(obs.now_s, dec)
        await asyncio.gather(*jobs)
        written: Mapping[str, bool] = cap_job.result() if cap_job is not None else {}
        # In force from the tick's start: a rack meter read while the writes were in flight
        # (still uncapped) then overstates demand - the safe side; the other stamp (the
        # acknowledgement) understated it for meters that had already seen the caps.
        self._commit_caps(changes, written, obs.now_s)
        return Acted(len(changes), [k for k, on in shed.items() if not on])

    def _reserve_jobs(
        self, obs: Observation, dec: Decision, allowed: BoolArray, shared: bool
    ) -> list[Any]:
        jobs = []
        for i, dom in enumerate(self.domain_ids):
            on, kw = bool(dec.reserve_on[i]), float(dec.reserve_kw[i])
            warm = bool(dec.reserve_warm[i]) if dec.reserve_warm is not None else False
            if not allowed[i] or (not on and not warm and obs.reserve_mode[i] == RESERVE_OFF):
                continue  # nothing to start, pre-warm or release
            jobs.append(self.writer.reserve(self.reserve_port, dom, on, kw, shared, warm))
        return jobs

    def _safe_cap_changes(
        self, obs: Observation, dec: Decision, allowed: BoolArray
    ) -> dict[str, float | None]:
        for pins in (True, False):
            try:
                return self._cap_changes(obs, dec, allowed, pins)
            except Exception as exc:
                what = "caps with rack pins" if pins else "caps"
                self.writer.faults.fault("tick", what, f"{type(exc).__name__}: {exc}")
        self.wanted_caps = self.applied_caps.copy()  # hold the caps in force
        return {}

    def _cap_changes(
        self, obs: Observation, dec: Decision, allowed: BoolArray, rack_pins: bool = True
    ) -> dict[str, float | None]:
        pins = self.overrides.rack_caps_kw(obs.now_s) if rack_pins else {}
        demand_w = self.view.server_demand_w()
        plan = actuate.plan_caps(
            self.inv, demand_w, dec.cap_kw, pins, guessed=self.view.demand_guessed()
        )
        wanted = plan.cap_w
        stale_servers = obs.stale[self.inv.server_domain] if obs.stale is not None else None
        if stale_servers is not None and stale_servers.any():
            wanted = np.where(stale_servers, self.applied_caps, wanted)  # hold last safe caps
        if not allowed.all():
            wanted = np.where(allowed[self.inv.server_domain], wanted, self.applied_caps)
        changes = actuate.cap_changes(self.inv, self.applied_caps, wanted)
        # Caps a predecessor may have written: rewrite them once (a lift as well).
        unknown = np.flatnonzero(self.unknown_caps & allowed[self.inv.server_domain])
        for i in unknown[: self.rewrite_per_tick]:
            cap = wanted[i]
            changes[self.inv.server_ids[i]] = None if np.isnan(cap) else float(cap)
        self.wanted_caps, self.cap_demand_w = wanted, demand_w
        self.rack_budgets_w = plan.rack_budget_w
        return changes

    def _commit_caps(
        self, changes: Mapping[str, float | None], written: Mapping[str, bool], now_s: float
    ) -> None:
        """Caps the BMCs took are in force; a refused or failed write is retried next tick
        (and a cap nobody could write holds nothing back)."""
        applied = self.applied_caps.copy()
        index = self.inv.server_index
        if len(written) == len(changes) and all(written.values()):
            took = np.fromiter(map(index.__getitem__, changes), np.int64, len(changes))
        else:
            took = np.fromiter((index[sid] for sid in changes if written.get(sid)), np.int64)
        applied[took] = self.wanted_caps[took]
        self.unknown_caps[took] = False
        self.applied_caps = applied
        self.view.set_caps(applied, now_s)
        # A server capped before it was ever read uncapped: remember the demand its cap was
        # computed from, or its capped readings would pass for its demand from now on.
        self.view.assume_uncapped(np.isfinite(applied), self.cap_demand_w)

    def _shed_plan(
        self, obs: Observation, dec: Decision, mode: Mode, allowed: BoolArray
    ) -> dict[str, bool]:
        """Outlets to switch, only in the domains this instance may command (``allowed``).
        Maintenance mode sheds too: it holds settings, but protecting a breaker is a safety
        action, never held."""
        if self.outlets is None or not allowed.any():
            return {}
        grid = (
            obs.demand_kw
            - dec.kes_kw
            - dec.cap_kw
            - np.where(is_running(obs.reserve_mode), dec.reserve_kw, 0.0)
        )
        uncovered = np.maximum(grid - self.site.primary_kw, 0.0)
        hot = self.ledger.heat >= self.shed_heat
        shortfall = np.where(hot & allowed, uncovered, 0.0)
        states: dict[str, bool] = {}
        if shortfall.any():
            power = self.view.server_demand_w()
            for key in actuate.outlets_to_shed(self.inv, shortfall, power, self.shed):
                states[key] = False
                self.shed.add(key)
                self.reassert.discard(key)
            self.event("shed", f"shedding {len(states)} non-critical outlets: {sorted(states)[:5]}")
        # Restore once a domain has headroom for what it shed, and the breaker has cooled.
        outlets = self.inv.outlets() if self.shed or self.reassert else {}
        for key in [*self.shed, *sorted(self.reassert)[: self.rewrite_per_tick]]:
            d = int(self.inv.server_domain[self.inv.server_index[outlets[key].server_id]])
            if allowed[d] and not hot[d] and uncovered[d] <= 0 and key not in states:
                states[key] = True
                self.shed.discard(key)
                self.reassert.discard(key)
        return states

    def _maybe_ramp_limit(self, now_s: float, dec: Decision) -> None:
        """Ask the scheduler for the decision's ramp-up limits at job start when they changed
        or less than half a plan period of the last request is left (each request lasts one
        plan period, so a silent controller leaves no limit behind for longer)."""
        scheduler = self.scheduler
        limits = dec.job_ramp_kw_per_s
        if limits is None or scheduler is None or self.ramp_busy:
            return
        if not hasattr(scheduler, "ramp_limit"):
            return
        period = max(self.site.plan_period_s, 1.0)
        key = tuple(float(v) for v in np.round(limits, 3))
        if self.ramp_sent is not None:
            last_key, sent_at = self.ramp_sent
            if last_key == key and now_s - sent_at < period / 2:
                return
        levels = {d: float(v) for d, v in zip(self.domain_ids, limits, strict=True)}
        port = cast(RampLimitPort, scheduler)
        self.ramp_busy = True

        async def send() -> bool:
            try:
                ok = await self.writer.ramp_limit(port, now_s, levels, period)
            finally:
                self.ramp_busy = False
            if ok:
                self.ramp_sent = (key, now_s)
            return ok

        task = asyncio.ensure_future(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _maybe_schedule(self, now_s: float, dec: Decision) -> None:
        """Send the shift orders these levels need (a changed, renewed or ended pair: each
        replaces its pair's previous order) and changed deferral levels. The ledger books an
        order once the scheduler has it; one send at a time (an undelivered order is due again
        next tick)."""
        if self.scheduler is None or self.sched_busy:
            return
        orders = self.ledger.shift_orders(now_s, dec.shift_out_kw, dec.shift_in_kw)
        defer = tuple(np.round(dec.defer_kw, 1))
        new_defer = defer != self.last_sched and (self.last_sched is not None or any(defer))
        if not orders and not new_defer:
            return
        defer_kw = {d: float(v) for d, v in zip(self.domain_ids, dec.defer_kw, strict=True)}
        scheduler, self.sched_busy = self.scheduler, True

        async def send() -> bool:
            try:
                ok = await self.writer.schedule(
                    scheduler, now_s, orders, defer_kw if new_defer else {}
                )
            finally:
                self.sched_busy = False
            if ok:
                self.ledger.place(orders)
                if new_defer:
                    self.last_sched = defer
            return ok

        task = asyncio.ensure_future(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
