"""The live controller: the same policy code as the simulator, fed by devices.

Fast loop, every control period: read every telemetry source, flywheel bank and the reserve
concurrently (each within its own timeout), aggregate racks into per-domain demand, build the
:class:`Observation`, call the policy, and command the devices: flywheel setpoints, reserve
requests, per-server caps (priority-aware water-filling), non-critical outlet shedding when a
breaker is heating with nothing else left, and shift/defer requests to the scheduler. The
planning loop calls the forecaster every plan period (in a worker thread) and hands the fresh
forecast to the next tick. A writer task batches telemetry, forecasts, decisions and events into
the store off the event loop. Nothing a device does can stop a tick; see :mod:`.faults`.

Fallbacks (DESIGN §6): a stale domain holds its last good demand and its caps; a flywheel that
does not answer is assumed floating (0 kW available either way); no fresh forecast means the
policy runs its reactive loop (mode ``reactive-fallback``); a policy that raises is replaced for
that tick by the reactive policy; a store that fails is counted and retried by its buffer.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_OFF, Decision, Observation, Policy
from wattwheel.control.simple import ReactivePolicy
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import PowerSample, TelemetrySource
from wattwheel.forecast.base import Forecast, Forecaster
from wattwheel.runtime import actuate
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.history import DemandHistory
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.ledger import Ledger, ModelledReserve
from wattwheel.runtime.ports import (
    FlywheelPort,
    FlywheelStatusW,
    OutletActuator,
    RecordSink,
    ReservePort,
    ReserveStatus,
    SchedulerPort,
    ServerCapActuator,
)
from wattwheel.runtime.snapshots import domain_snapshots, forecast_bands, rack_snapshots
from wattwheel.runtime.state import (
    EventRecord,
    LiveState,
    Mode,
    Overrides,
    decision_records,
)
from wattwheel.runtime.telemetry import TelemetryView
from wattwheel.runtime.workers import FlywheelWorker, PollerThread

FloatArray = NDArray[np.float64]
log = logging.getLogger(__name__)
#: A flywheel not read yet this long after start is not a fault (connecting, SunSpec discovery).
STARTUP_GRACE_S = 5.0


@dataclass
class Devices:
    """Everything the runtime talks to. Missing pieces are allowed: no flywheel port for a
    domain means its bank is treated as absent; no reserve port means the reserve state is
    modelled from our own commands; no actuator means that command kind is not sent."""

    telemetry: Mapping[str, TelemetrySource] = field(default_factory=dict)
    caps: ServerCapActuator | None = None
    outlets: OutletActuator | None = None
    flywheels: Mapping[str, FlywheelPort] = field(default_factory=dict)
    reserve: ReservePort | None = None
    scheduler: SchedulerPort | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    """Loop settings (seconds unless named otherwise).

    Attributes:
        control_period_s: fast-loop period.
        device_timeout_s: longest a single device call may take inside a tick.
        plan_period_s: planning period (None: the site's ``plan_period_s``).
        forecast_timeout_s: longest a forecast may take (it runs in a worker thread).
        history_step_s: grid of the demand history given to the forecaster.
        min_history_rows: rows needed before the first forecast.
        telemetry_max_age_s: readings older than this are stale.
        max_server_power_w: a server reading above this is absurd (PDU totals scale with the
            servers behind them).
        store_flush_s: how often the writer task flushes batches to the store.
        shed_heat: breaker heat (0..1, trips at 1) above which non-critical outlets are shed
            when capping, the flywheel and the reserve leave load uncovered.
        racks_every_ticks: publish per-rack snapshots every N ticks (large sites).
        poll_period_s: telemetry source name -> polling period while :meth:`Runtime.run`
            runs (default: the control period). Sources are polled by their own tasks and
            each tick takes what arrived; a bare :meth:`Runtime.tick` reads them inline.
        poll_in_thread: run the telemetry pollers on an event loop in their own thread (their
            sources must then not be used by anything else on the main loop).
        plan_in_tick_s: how long a tick waits for the policy to plan on a fresh forecast before
            acting reactively for that period (the plan is adopted when it is ready).
        rewrite_per_tick: after a promotion (:meth:`Runtime.forget_applied`), how many caps
            and outlets of unknown state are rewritten per tick (hundreds of writes at once
            would not fit in a tick's device timeout).
    """

    control_period_s: float = 1.0
    device_timeout_s: float = 0.5
    plan_period_s: float | None = None
    forecast_timeout_s: float = 30.0
    history_step_s: float = 60.0
    min_history_rows: int = 3
    telemetry_max_age_s: float = 5.0
    max_server_power_w: float = 100_000.0
    store_flush_s: float = 1.0
    shed_heat: float = 0.5
    racks_every_ticks: int = 1
    poll_period_s: Mapping[str, float] = field(default_factory=dict)
    plan_in_tick_s: float = 0.05
    poll_in_thread: bool = False
    rewrite_per_tick: int = 32


@dataclass
class TickReport:
    """What one tick did (for tests and benchmarks)."""

    now_s: float
    latency_s: float
    observation: Observation
    decision: Decision
    mode: Mode
    cap_writes: int = 0
    shed: list[str] = field(default_factory=list)


@dataclass
class _Outbox:
    telemetry: list[PowerSample] = field(default_factory=list)
    decisions: list[Any] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)


class Runtime:
    """One controller instance for a whole site (see the module docstring)."""

    def __init__(
        self,
        site: SiteParams,
        policy: Policy,
        devices: Devices,
        inventory: Inventory,
        clock: Clock,
        state: LiveState | None = None,
        overrides: Overrides | None = None,
        sink: RecordSink | None = None,
        forecaster: Forecaster | None = None,
        config: RuntimeConfig | None = None,
        commandable: Callable[[], Collection[str]] | None = None,
        coordinator: Callable[[], bool] | None = None,
        audit_tag: Callable[[str], str] | None = None,
    ) -> None:
        self.site = site
        self.policy = policy
        self.devices = devices
        self.inv = inventory
        self.clock = clock
        self.cfg = config or RuntimeConfig()
        self.domain_ids = site.domain_names
        self.state = state or LiveState(self.domain_ids)
        self.overrides = overrides or Overrides()
        self.sink = sink
        self.forecaster = forecaster
        #: The domains this instance may command now (e.g. ``leader.commandable_domains``
        #: bound to an elector), checked right before each tick's writes; None: all of them.
        self.commandable = commandable
        #: May this instance command what the domains share (reserve, scheduler shifts) now?
        #: (the site coordinator role); None: only when it may command every domain.
        self.coordinator = coordinator
        #: domain id -> a note appended to that domain's audit row (e.g. leader, fencing token).
        self.audit_tag = audit_tag
        self.faults = FaultBook(self._on_fault)
        self.view = TelemetryView(
            inventory,
            1.0 - site.flex.noncritical_fraction,
            self.cfg.telemetry_max_age_s,
            self.cfg.max_server_power_w,
            rack_rating_w=None if site.rack_rating_kw is None else site.rack_rating_kw * 1000.0,
        )
        self._valid_samples: list[PowerSample] = []
        self.ledger = Ledger(site, self.cfg.control_period_s)
        self.modelled_reserve = ModelledReserve(site, self.domain_ids)
        self.history = DemandHistory(self.domain_ids, self.cfg.history_step_s)
        self.plan_period_s = self.cfg.plan_period_s or site.plan_period_s
        self._policy_state = policy.initial_state(site)
        self._reactive = ReactivePolicy(site)
        self._fresh_forecast: Forecast | None = None
        self.latest_forecast: Forecast | None = None
        self._forecast_at_s = -math.inf
        self._applied_caps = np.full(len(inventory.servers), np.nan)
        self._wanted_caps = self._applied_caps.copy()
        self._cap_demand_w = np.zeros(len(inventory.servers))
        self._shed: set[str] = set()
        # After a promotion: caps and outlet states the predecessor may have left (rewritten).
        self._unknown_caps = np.zeros(len(inventory.servers), dtype=bool)
        self._reassert: set[str] = set()
        self._kes_soc = site.kes_initial_soc.astype(float).copy()
        self._last_kes_kw = np.zeros(site.n_domains)
        self._mode: Mode = "normal"
        self._ticks = 0
        self._out = _Outbox()
        self._last_sched: tuple[float, ...] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._pollers: dict[str, Any] = {}
        self._polled: dict[str, deque[PowerSample]] = {}
        self._fly_workers: dict[str, FlywheelWorker] = {}
        self._planning: asyncio.Future[tuple[Decision, Any]] | None = None
        #: Recent tick durations (s), for benchmarks and diagnostics.
        self.latencies_s: deque[float] = deque(maxlen=100_000)
        self.started_s = clock.now_s()

    # ------------------------------------------------------------------ faults & events
    def _on_fault(self, kind: str, device: str, message: str, first: bool) -> None:
        self.state.count_error(kind)
        if first:
            self.event(f"{kind}.fault", f"{device}: {message}")

    def event(self, kind: str, message: str, domain_id: str | None = None) -> None:
        ev = EventRecord(self.clock.now_s(), kind, message, domain_id, "runtime")
        self.state.record_event(ev)
        self._out.events.append(ev)

    def forget_applied(self, domains: Collection[str]) -> None:
        """This instance just became leader of ``domains``: it cannot know what its predecessor
        wrote, so the next ticks rewrite every cap of those domains (lifts included) and switch
        their non-critical outlets back on once they have headroom (or shed them as needed)."""
        mine = np.array([d in domains for d in self.domain_ids], dtype=bool)
        servers = mine[self.inv.server_domain]
        self._unknown_caps |= servers
        for key, outlet in self.inv.outlets().items():
            i = self.inv.server_index[outlet.server_id]
            if servers[i] and not self.inv.critical[i]:
                self._shed.discard(key)
                self._reassert.add(key)

    def forget_schedule(self) -> None:
        """This instance just became site coordinator: resend the scheduler levels."""
        self._last_sched = None

    # ------------------------------------------------------------------ reading
    async def _read_all(
        self,
    ) -> tuple[
        list[PowerSample], dict[str, FlywheelStatusW | None], dict[str, ReserveStatus] | None
    ]:
        t = self.cfg.device_timeout_s
        empty: list[PowerSample] = []
        polled = self._drain_polled()
        tele = asyncio.gather(
            *(
                guarded(self.faults, "device", f"telemetry:{name}", src.read, t, empty)
                for name, src in self.devices.telemetry.items()
                if name not in self._pollers
            )
        )
        none_status: FlywheelStatusW | None = None
        max_age = 3 * self.cfg.control_period_s
        cached = {d: w.status(max_age) for d, w in self._fly_workers.items()}
        fly = asyncio.gather(
            *(
                guarded(self.faults, "device", f"flywheel:{d}", port.read, t, none_status)
                for d, port in self.devices.flywheels.items()
                if d not in self._fly_workers
            )
        )
        no_reserve: dict[str, ReserveStatus] | None = None
        res = (
            guarded(self.faults, "device", "reserve", self.devices.reserve.read, t, no_reserve)
            if self.devices.reserve is not None
            else self.modelled_reserve.read()
        )
        batches, statuses, reserve = await asyncio.gather(tele, fly, res)
        samples = polled + [s for batch in batches for s in batch]
        inline = [d for d in self.devices.flywheels if d not in self._fly_workers]
        return samples, {**cached, **dict(zip(inline, statuses, strict=True))}, reserve

    def _drain_polled(self) -> list[PowerSample]:
        # popleft is atomic: a poller thread may append while we drain.
        out: list[PowerSample] = []
        for buffer in self._polled.values():
            for _ in range(len(buffer)):
                out.append(buffer.popleft())
        return out

    async def _poll(
        self, name: str, source: TelemetrySource, period_s: float, offset_s: float = 0.0
    ) -> None:
        """Read one telemetry source on its own schedule (a slow one never holds a tick)."""
        buffer = self._polled.setdefault(name, deque(maxlen=1_000_000))
        empty: list[PowerSample] = []
        timeout = max(self.cfg.device_timeout_s, period_s)
        await self.clock.sleep(offset_s)
        while True:
            started = self.clock.monotonic_s()
            batch = await guarded(
                self.faults, "device", f"telemetry:{name}", source.read, timeout, empty
            )
            buffer.extend(batch)  # bounded: nobody draining keeps the newest readings only
            await self.clock.sleep(period_s - (self.clock.monotonic_s() - started))

    # ------------------------------------------------------------------ observation
    def _kes(
        self, fly: dict[str, FlywheelStatusW | None]
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        d = self.site.n_domains
        dis, chg, power = np.zeros(d), np.zeros(d), np.zeros(d)
        for i, dom in enumerate(self.domain_ids):
            st = fly.get(dom)
            key = f"flywheel:{dom}/status"
            if st is None or st.stale or not math.isfinite(st.soc):
                # Unreachable or stale: the bank floats; count on nothing from it.
                starting = st is None and self.clock.now_s() - self.started_s < STARTUP_GRACE_S
                if dom in self.devices.flywheels and not starting:
                    self.faults.fault("device", key, "no fresh status, KES assumed floating")
                continue
            self.faults.ok(key)
            self._kes_soc[i] = min(max(st.soc, 0.0), 1.0)
            dis[i] = max(st.max_discharge_w, 0.0) / 1000.0
            chg[i] = max(st.max_charge_w, 0.0) / 1000.0
            power[i] = st.power_w / 1000.0
        return self._kes_soc.copy(), dis, chg, power

    def _reserve(
        self, status: dict[str, ReserveStatus] | None
    ) -> tuple[NDArray[np.int64], FloatArray, FloatArray, FloatArray]:
        d = self.site.n_domains
        mode = np.full(d, RESERVE_OFF, dtype=np.int64)
        ready, left, kw = np.zeros(d), np.zeros(d), np.zeros(d)
        for i, dom in enumerate(self.domain_ids):
            st = (status or {}).get(dom)
            if st is None:
                continue
            mode[i], ready[i], left[i], kw[i] = (
                st.mode,
                st.ready_in_s,
                st.min_on_left_s,
                st.delivered_kw,
            )
        return mode, ready, left, kw

    def _observe(
        self,
        now_s: float,
        samples: list[PowerSample],
        fly: dict[str, FlywheelStatusW | None],
        reserve: dict[str, ReserveStatus] | None,
    ) -> tuple[Observation, FloatArray, FloatArray]:
        ok = self.view.ingest(samples, now_s)
        # Only readings the view believed are stored as readings (DESIGN §8).
        self._valid_samples = [s for s, good in zip(samples, ok, strict=True) if good]
        accepted = len(self._valid_samples)
        self.state.count_telemetry(accepted)
        rejected = len(samples) - accepted
        if rejected:
            self.state.count_error("input", rejected)
        view = self.view.demand(now_s)
        for notice in self.view.take_notices():
            self.event("telemetry.trust", notice)
        soc, dis, chg, kes_power = self._kes(fly)
        mode, ready, left, res_kw = self._reserve(reserve)
        out_kw, in_kw = self.ledger.shifts_now(now_s)
        ov_pins = self.overrides.pinned_cap_kw(self.domain_ids, now_s)
        obs = Observation(
            now_s=now_s,
            dt_s=self.cfg.control_period_s,
            demand_kw=view.demand_kw,
            critical_kw=view.critical_kw,
            shift_out_kw=out_kw,
            shift_in_kw=in_kw,
            due_repay_kw=self.ledger.due_repay_kw(now_s),
            debt_kwh=self.ledger.debt_kwh(),
            kes_soc=soc,
            kes_max_discharge_kw=dis,
            kes_max_charge_kw=chg,
            reserve_mode=mode,
            reserve_ready_in_s=ready,
            reserve_min_on_left_s=left,
            breaker_heat=self.ledger.heat.copy(),
            last_grid_kw=self.ledger.last_grid_kw.copy(),
            pinned_cap_kw=ov_pins,
            reserve_override=self.overrides.reserve_override(self.domain_ids, now_s),
            stale=view.stale,
        )
        self._rack_view = view
        return obs, kes_power, res_kw

    # ------------------------------------------------------------------ deciding
    def _current_mode(self, now_s: float) -> Mode:
        if self.overrides.maintenance(now_s):
            return "maintenance"
        if self.policy.forecast_period_s > 0:
            grace = 2 * self.plan_period_s
            if now_s - self._forecast_at_s > grace and now_s - self.started_s > grace:
                return "reactive-fallback"
        return "normal"

    async def _decide(self, obs: Observation, mode: Mode) -> Decision:
        """The policy's decision. A tick that carries a fresh forecast runs the policy (and its
        planner) in a worker thread; if that takes longer than ``plan_in_tick_s`` the tick acts
        on the reactive loop and the plan is adopted by a later tick when it is ready."""
        forecast, self._fresh_forecast = self._fresh_forecast, None
        if mode == "maintenance":
            return self._reactive_decision(obs)
        if self._planning is not None:
            if not self._planning.done():
                return self._reactive_decision(obs)  # the policy state is busy planning
            self._adopt_plan(self._planning)
        if forecast is None:
            return self._policy_decision(obs, None)
        task = asyncio.ensure_future(
            asyncio.to_thread(self.policy.decide, obs, self._policy_state, forecast)
        )
        await asyncio.wait({task}, timeout=self.cfg.plan_in_tick_s)
        if not task.done():
            self._planning = task
            return self._reactive_decision(obs)
        decision = self._adopt_plan(task)
        return decision if decision is not None else self._reactive_decision(obs)

    def _adopt_plan(self, task: asyncio.Future[tuple[Decision, Any]]) -> Decision | None:
        self._planning = None
        try:
            decision, self._policy_state = task.result()
        except Exception as exc:  # a planner bug must not stop the site's protection
            self.faults.fault("policy", self.policy.name, f"{type(exc).__name__}: {exc}")
            return None
        return decision

    def _policy_decision(self, obs: Observation, forecast: Forecast | None) -> Decision:
        try:
            decision, self._policy_state = self.policy.decide(obs, self._policy_state, forecast)
        except Exception as exc:  # a policy bug must not stop the site's protection
            self.faults.fault("policy", self.policy.name, f"{type(exc).__name__}: {exc}")
            return self._reactive_decision(obs)
        return decision

    def _reactive_decision(self, obs: Observation) -> Decision:
        decision, _ = self._reactive.decide(obs, None, None)
        return decision

    # ------------------------------------------------------------------ acting
    async def _act(self, obs: Observation, dec: Decision, mode: Mode) -> tuple[int, list[str]]:
        t = self.cfg.device_timeout_s
        jobs: list[Any] = []
        allowed = self._allowed()
        for i, dom in enumerate(self.domain_ids):
            port = self.devices.flywheels.get(dom)
            if not allowed[i]:
                continue  # another instance leads this domain: command nothing
            if dom in self._fly_workers:
                self._fly_workers[dom].submit(float(dec.kes_kw[i]) * 1000.0)
            elif port is not None:
                jobs.append(
                    guarded(
                        self.faults,
                        "device",
                        f"flywheel:{dom}",
                        _bind_setpoint(port, float(dec.kes_kw[i]) * 1000.0),
                        t,
                        False,
                    )
                )
        shared = self._may_coordinate(allowed)
        # The reserve is shared: with a coordinator role it is commanded by the coordinator,
        # otherwise per domain by that domain's leader.
        reserve_ok = allowed if self.coordinator is None else np.full(len(allowed), shared)
        jobs.extend(self._reserve_jobs(obs, dec, t, reserve_ok))
        changes = self._cap_changes(obs, dec, allowed)
        no_writes: dict[str, bool] = {}
        cap_job = None
        if changes and self.devices.caps is not None:
            caps = self.devices.caps
            cap_job = asyncio.ensure_future(
                guarded(self.faults, "device", "caps", lambda: caps.set_caps(changes), t, no_writes)
            )
            jobs.append(cap_job)
        shed = self._shed_plan(obs, dec, mode, allowed)
        if shed and self.devices.outlets is not None:
            outlets = self.devices.outlets
            jobs.append(
                guarded(self.faults, "device", "outlets", lambda: outlets.set_outlets(shed), t, {})
            )
        if mode != "maintenance" and shared:
            self._maybe_schedule(obs.now_s, dec)
        await asyncio.gather(*jobs)
        self._commit_caps(
            changes, cap_job.result() if cap_job is not None else no_writes, obs.now_s
        )
        return len(changes), [k for k, on in shed.items() if not on]

    def _allowed(self) -> NDArray[np.bool_]:
        """Per domain: may this instance command it right now (leader election fencing)?"""
        if self.commandable is None:
            return np.ones(self.site.n_domains, dtype=bool)
        try:
            mine = set(self.commandable())
        except Exception as exc:  # an election we cannot check: command nothing
            self.faults.fault("leader", "elector", f"{type(exc).__name__}: {exc}")
            mine = set()
        return np.array([d in mine for d in self.domain_ids], dtype=bool)

    def _may_command_domain(self, domain_id: str) -> bool:
        """The fencing check for one domain, for writes made outside the tick (workers)."""
        if self.commandable is None:
            return True
        try:
            return domain_id in set(self.commandable())
        except Exception:  # counted by the tick's own check
            return False

    def _may_coordinate(self, allowed: NDArray[np.bool_]) -> bool:
        """May this instance send shared commands (reserve, scheduler) right now?"""
        if self.coordinator is None:
            return bool(allowed.all())
        try:
            return bool(self.coordinator())
        except Exception as exc:  # an election we cannot check: command nothing shared
            self.faults.fault("leader", "coordinator", f"{type(exc).__name__}: {exc}")
            return False

    def _reserve_jobs(
        self, obs: Observation, dec: Decision, t: float, allowed: NDArray[np.bool_]
    ) -> list[Any]:
        port: ReservePort = self.devices.reserve or self.modelled_reserve
        jobs = []
        for i, dom in enumerate(self.domain_ids):
            on, kw = bool(dec.reserve_on[i]), float(dec.reserve_kw[i])
            if not allowed[i] or (not on and obs.reserve_mode[i] == RESERVE_OFF):
                continue  # nothing to start or release
            jobs.append(
                guarded(
                    self.faults, "device", "reserve", _bind_reserve(port, dom, on, kw), t, False
                )
            )
        return jobs

    def _cap_changes(
        self, obs: Observation, dec: Decision, allowed: NDArray[np.bool_]
    ) -> dict[str, float | None]:
        pins = self.overrides.rack_caps_kw(obs.now_s)
        demand_w = self.view.server_demand_w()
        plan = actuate.plan_caps(self.inv, demand_w, dec.cap_kw, pins)
        wanted = plan.cap_w
        stale_servers = obs.stale[self.inv.server_domain] if obs.stale is not None else None
        if stale_servers is not None and stale_servers.any():
            wanted = np.where(stale_servers, self._applied_caps, wanted)  # hold last safe caps
        if not allowed.all():
            wanted = np.where(allowed[self.inv.server_domain], wanted, self._applied_caps)
        changes = actuate.cap_changes(self.inv, self._applied_caps, wanted)
        # Caps a predecessor may have written: rewrite them once (a lift as well).
        unknown = np.flatnonzero(self._unknown_caps & allowed[self.inv.server_domain])
        for i in unknown[: self.cfg.rewrite_per_tick]:
            cap = wanted[i]
            changes[self.inv.servers[i].server_id] = None if np.isnan(cap) else float(cap)
        self._wanted_caps, self._cap_demand_w = wanted, demand_w
        self._rack_budgets = plan.rack_budget_w
        return changes

    def _commit_caps(
        self, changes: Mapping[str, float | None], written: Mapping[str, bool], now_s: float
    ) -> None:
        """Caps the BMCs took are in force; a refused or failed write is retried next tick
        (and a cap nobody could write holds nothing back)."""
        applied = self._applied_caps.copy()
        for sid in changes:
            if written.get(sid):
                i = self.inv.server_index[sid]
                applied[i] = self._wanted_caps[i]
                self._unknown_caps[i] = False
        self._applied_caps = applied
        self.view.set_caps(applied, now_s)
        # A server capped before it was ever read uncapped: remember the demand its cap was
        # computed from, or its capped readings would pass for its demand from now on.
        self.view.assume_uncapped(np.isfinite(applied), self._cap_demand_w)

    def _shed_plan(
        self, obs: Observation, dec: Decision, mode: Mode, allowed: NDArray[np.bool_]
    ) -> dict[str, bool]:
        """Outlets to switch, only in the domains this instance may command (``allowed``).
        Maintenance mode sheds too: it holds settings, but protecting a breaker is a safety
        action, never held."""
        if self.devices.outlets is None or not allowed.any():
            return {}
        grid = (
            obs.demand_kw
            - dec.kes_kw
            - dec.cap_kw
            - np.where(obs.reserve_mode != RESERVE_OFF, dec.reserve_kw, 0.0)
        )
        uncovered = np.maximum(grid - self.site.primary_kw, 0.0)
        hot = self.ledger.heat >= self.cfg.shed_heat
        shortfall = np.where(hot & allowed, uncovered, 0.0)
        states: dict[str, bool] = {}
        if shortfall.any():
            power = self.view.server_demand_w()
            for key in actuate.outlets_to_shed(self.inv, shortfall, power, self._shed):
                states[key] = False
                self._shed.add(key)
                self._reassert.discard(key)
            self.event("shed", f"shedding {len(states)} non-critical outlets: {sorted(states)[:5]}")
        # Restore once a domain has headroom for what it shed, and the breaker has cooled.
        outlets = self.inv.outlets() if self._shed or self._reassert else {}
        for key in [*self._shed, *sorted(self._reassert)[: self.cfg.rewrite_per_tick]]:
            d = int(self.inv.server_domain[self.inv.server_index[outlets[key].server_id]])
            if allowed[d] and not hot[d] and uncovered[d] <= 0 and key not in states:
                states[key] = True
                self._shed.discard(key)
                self._reassert.discard(key)
        return states

    def _maybe_schedule(self, now_s: float, dec: Decision) -> None:
        if self.devices.scheduler is None:
            return
        levels = tuple(
            np.round(np.concatenate([dec.shift_out_kw, dec.shift_in_kw, dec.defer_kw]), 1)
        )
        if levels == self._last_sched or (self._last_sched is None and not any(levels)):
            return
        self._last_sched = levels
        sched = self.devices.scheduler
        ids = self.domain_ids

        def per_domain(arr: FloatArray) -> dict[str, float]:
            return {d: float(v) for d, v in zip(ids, arr, strict=True)}

        out, inn, defer = (
            per_domain(dec.shift_out_kw),
            per_domain(dec.shift_in_kw),
            per_domain(dec.defer_kw),
        )
        task = asyncio.ensure_future(
            guarded(
                self.faults,
                "device",
                "scheduler",
                lambda: sched.request_levels(now_s, out, inn, defer),
                self.cfg.device_timeout_s * 4,
                False,
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ one tick
    async def tick(self) -> TickReport:
        """One fast-loop period: read, observe, decide, act, publish."""
        t0 = self.clock.monotonic_s()
        now_s = self.clock.now_s()
        if self.devices.reserve is None:
            self.modelled_reserve.advance(now_s)
        samples, fly, reserve = await self._read_all()
        obs, kes_power_kw, res_kw = self._observe(now_s, samples, fly, reserve)
        mode = self._current_mode(now_s)
        if mode != self._mode:
            self.state.set_mode(mode)
            self.event("mode", f"mode {self._mode} -> {mode}")
            self._mode = mode
        dec = await self._decide(obs, mode)
        cap_writes, shed = await self._act(obs, dec, mode)
        self._book(obs, dec, kes_power_kw, res_kw)
        self._publish(obs, dec, mode, self._valid_samples)
        latency = self.clock.monotonic_s() - t0
        self.state.record_tick(latency)
        self.latencies_s.append(latency)
        self._ticks += 1
        return TickReport(now_s, latency, obs, dec, mode, cap_writes, shed)

    def _book(
        self, obs: Observation, dec: Decision, kes_kw: FloatArray, res_kw: FloatArray
    ) -> None:
        self.ledger.schedule_shifts(obs.now_s, dec.shift_out_kw, dec.shift_in_kw)
        self.ledger.settle(obs.now_s, dec.defer_kw, dec.repay_kw)
        # Measured demand already reflects caps; the bank's own reading is its real exchange.
        grid = obs.demand_kw - kes_kw - res_kw
        self.ledger.observe_grid(grid, obs.dt_s)
        self.history.add(
            obs.now_s,
            np.where(obs.stale if obs.stale is not None else False, np.nan, obs.demand_kw * 1000.0),
        )
        self._last_kes_kw = dec.kes_kw

    def _publish(
        self, obs: Observation, dec: Decision, mode: Mode, samples: list[PowerSample]
    ) -> None:
        bands = forecast_bands(self.latest_forecast, self.domain_ids)
        known = self._rack_view.known
        # A domain never read yet has no demand to show (not 0 kW): publish it once it has.
        snaps = domain_snapshots(self.site, obs, dec, bands)
        self.state.update_domains(s for s, k in zip(snaps, known, strict=True) if k)
        if self._ticks % max(self.cfg.racks_every_ticks, 1) == 0:
            self.state.update_racks(
                rack_snapshots(
                    self.inv, self._rack_view.rack_power_w, self._rack_budgets_or_none(), obs.now_s
                )
            )
        records = decision_records(dec, self.domain_ids, obs.now_s, self.policy.name, mode)
        if self.audit_tag is not None:
            tag = self.audit_tag
            records = [
                replace(r, reason=f"{r.reason} [{tag(r.domain_id)}]".lstrip()) for r in records
            ]
        self.state.record_decisions(records)
        self._out.decisions.extend(records)
        self._out.telemetry.extend(samples)

    def _rack_budgets_or_none(self) -> dict[str, float]:
        return getattr(self, "_rack_budgets", {})

    # ------------------------------------------------------------------ planning
    async def plan_once(self) -> Forecast | None:
        """Forecast each domain's demand at the policy's horizons (in a worker thread)."""
        horizons = tuple(getattr(self.policy, "horizons_s", ()))
        if self.forecaster is None or not horizons or len(self.history) < self.cfg.min_history_rows:
            return None
        history = self.history.history()
        if not np.isfinite(history.values).any(axis=0).all():
            return None  # a domain with no good reading yet: nothing to forecast from
        forecaster = self.forecaster
        fc = await guarded(
            self.faults,
            "forecast",
            forecaster.name,
            lambda: asyncio.to_thread(forecaster.predict, history, horizons),
            self.cfg.forecast_timeout_s,
            None,
        )
        if fc is None:
            return None
        if not np.all(np.isfinite(fc.values)):
            self.faults.fault("forecast", forecaster.name, "forecast holds NaN/inf values")
            return None
        self._fresh_forecast = fc
        self.latest_forecast = fc
        self._forecast_at_s = self.clock.now_s()
        self._out.forecasts.append(fc)
        return fc

    # ------------------------------------------------------------------ store
    async def flush(self) -> None:
        """Hand the batched rows to the store in a worker thread; faults are counted."""
        out, self._out = self._out, _Outbox()
        if self.sink is None:
            return
        sink = self.sink

        def write() -> None:
            if out.telemetry:
                sink.write_telemetry(out.telemetry)
            for fc in out.forecasts:
                sink.write_forecast(fc)
            if out.decisions:
                sink.write_decisions(out.decisions)
            for ev in out.events:
                sink.write_event(ev)

        await guarded(
            self.faults,
            "store",
            "store",
            lambda: asyncio.to_thread(write),
            max(self.cfg.store_flush_s * 10, 5.0),
            None,
        )

    # ------------------------------------------------------------------ loops
    async def run(self, ticks: int | None = None) -> None:
        """Run the fast loop (``ticks`` periods, forever if None), the planning loop and the
        writer until cancelled or done."""
        self.event(
            "start",
            f"runtime started: policy {self.policy.name}, "
            f"{len(self.domain_ids)} domains, {self.inv.n_racks} racks",
        )
        helpers = [
            asyncio.ensure_future(self._plan_loop()),
            asyncio.ensure_future(self._flush_loop()),
        ]
        periods = {
            n: self.cfg.poll_period_s.get(n, self.cfg.control_period_s)
            for n in self.devices.telemetry
        }
        thread = PollerThread() if self.cfg.poll_in_thread and self.devices.telemetry else None
        if thread is not None:
            thread.start()
        for name, source in self.devices.telemetry.items():
            self._polled.setdefault(name, deque(maxlen=1_000_000))
            # Spread sources that share a period over it: 30 PDUs read at the same instant
            # would hold the event loop (and the ticks) for a burst.
            same = [n for n in periods if periods[n] == periods[name]]
            offset = periods[name] * same.index(name) / len(same)
            poll = self._poll(name, source, periods[name], offset)
            if thread is not None:
                self._pollers[name] = thread.submit(poll)
            else:
                self._pollers[name] = asyncio.ensure_future(poll)
                helpers.append(self._pollers[name])
        for dom, port in self.devices.flywheels.items():
            fenced = _FencedFlywheel(port, dom, self._may_command_domain)
            worker = FlywheelWorker(dom, fenced, self.faults, self.clock, self.cfg.control_period_s)
            self._fly_workers[dom] = worker
            helpers.append(asyncio.ensure_future(worker.run()))
        try:
            await self._fast_loop(ticks)
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if thread is not None:
                await asyncio.to_thread(thread.stop)
            self._pollers.clear()
            self._fly_workers.clear()
            await self.flush()

    async def _fast_loop(self, ticks: int | None) -> None:
        period = self.cfg.control_period_s
        next_at = self.clock.monotonic_s()
        n = 0
        while ticks is None or n < ticks:
            try:
                await self.tick()
            except Exception as exc:  # last line of defence: log, count, keep ticking
                self.faults.fault("tick", "runtime", f"{type(exc).__name__}: {exc}")
                log.exception("tick failed")
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a wait_for inside swallowed it (3.11)
                raise asyncio.CancelledError
            n += 1
            next_at += period
            delay = next_at - self.clock.monotonic_s()
            if delay < -period:  # overran by more than a period: skip, do not burst
                next_at = self.clock.monotonic_s()
            await self.clock.sleep(delay)

    async def _plan_loop(self) -> None:
        while True:
            fc = await self.plan_once()
            # Until the first forecast, retry each history step; then every plan period.
            await self.clock.sleep(
                self.plan_period_s if fc is not None else self.cfg.history_step_s
            )

    async def _flush_loop(self) -> None:
        while True:
            await self.clock.sleep(self.cfg.store_flush_s)
            await self.flush()


@dataclass
class _FencedFlywheel:
    """A flywheel port whose setpoint writes happen only while this instance may command the
    domain, checked at the moment of writing: a setpoint queued in a :class:`FlywheelWorker`
    before a demotion is dropped (reported as done: there is nothing to retry)."""

    port: FlywheelPort
    domain_id: str
    may_command: Callable[[str], bool]

    async def read(self) -> FlywheelStatusW | None:
        return await self.port.read()

    async def write_setpoint(self, power_w: float) -> bool:
        if not self.may_command(self.domain_id):
            log.debug("flywheel %s: setpoint dropped, not leader any more", self.domain_id)
            return True
        return await self.port.write_setpoint(power_w)


def _bind_setpoint(port: FlywheelPort, power_w: float) -> Any:
    async def write() -> bool:
        if not await port.write_setpoint(power_w):
            raise ConnectionError(f"setpoint {power_w:.0f} W not accepted")
        return True

    return write


def _bind_reserve(port: ReservePort, dom: str, on: bool, kw: float) -> Any:
    return lambda: port.command(dom, on, kw)
