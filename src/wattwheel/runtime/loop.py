"""The live controller: the same policy code as the simulator, fed by devices.

A tick, every control period, is four steps, each in its own module:

- reading (:mod:`.reading`): every telemetry source, flywheel bank and the reserve, each within
  its own timeout, aggregated into the policy's :class:`Observation`;
- deciding (:mod:`.deciding`): the mode, and the policy's decision on the latest forecast (the
  planning loop forecasts every plan period in a worker thread);
- actuating (:mod:`.actuating`): flywheel setpoints, reserve requests, per-server caps
  (priority-aware water-filling, operator pins), non-critical outlet shedding when a breaker is
  heating with nothing else left, shift/defer requests to the scheduler, all through one fenced
  writer;
- recording (:mod:`.recording`): the ledger and demand history, the live state the API serves,
  events, and the store (batched, flushed off the event loop by a writer task).

Nothing a device does can stop a tick; see :mod:`.faults`.

Fallbacks (DESIGN §6): a stale domain holds its last good demand and its caps; a flywheel that
does not answer is assumed floating (0 kW available either way); no fresh forecast means the
policy runs its reactive loop (mode ``reactive-fallback``); a policy that raises is replaced for
that tick by the reactive policy; a store that fails is counted and retried by its buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from wattwheel.control.base import Decision, Observation, Policy
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import TelemetrySource
from wattwheel.forecast.base import Forecast, Forecaster
from wattwheel.runtime.actuating import Acted, Actuator, FencedWriter
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.deciding import Decider
from wattwheel.runtime.faults import FaultBook
from wattwheel.runtime.history import DemandHistory
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.ledger import Ledger, ModelledReserve
from wattwheel.runtime.ports import (
    FlywheelPort,
    OutletActuator,
    RecordSink,
    ReservePort,
    SchedulerPort,
    ServerCapActuator,
)
from wattwheel.runtime.reading import Observed, Reader, Reading, SignalsArrival
from wattwheel.runtime.recording import Recorder
from wattwheel.runtime.state import LiveState, Mode, Overrides
from wattwheel.runtime.supervise import Supervisor
from wattwheel.runtime.telemetry import TelemetryView
from wattwheel.runtime.workers import FlywheelWorker, PollerThread

log = logging.getLogger(__name__)


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
        metered_racks: racks whose own meter is polled (an SNMP PDU): MQTT never stands in for
            it (:class:`~wattwheel.runtime.telemetry.TelemetryView`).
        rewrite_per_tick: after a promotion (:meth:`Runtime.forget_applied`), how many caps
            and outlets of unknown state are rewritten per tick (hundreds of writes at once
            would not fit in a tick's device timeout).
        phase_s: where in the control period this instance ticks, on the wall clock (ticks at
            times ``phase_s`` modulo the period; the pollers start there too). Shard processes
            of one site take different phases (:func:`~wattwheel.runtime.shards.shard_phase_s`)
            so that they do not all wake at once on a few cores. None: tick from start-up.
        wake_on_telemetry: telemetry pushed to the runtime between ticks (a source that
            signals arrivals, e.g. MQTT, or :meth:`Runtime.telemetry_arrived`) wakes the tick
            early, bounded: at most one tick more per
            period (no two ticks start less than a period apart with another between them),
            never sooner than ``wake_min_interval_s`` after the last one; with nothing
            arriving the loop still ticks every period. After an early tick the period counts
            from it.
        wake_min_interval_s: see ``wake_on_telemetry``.
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
    metered_racks: frozenset[str] = frozenset()
    phase_s: float | None = None
    wake_on_telemetry: bool = False
    wake_min_interval_s: float = 0.2


#: The fault book's name for the tick itself.
TICK_DEVICE = "runtime"


@dataclass
class _Done:
    """How far a tick got (its fallback reuses what is there and redoes nothing)."""

    reading: Reading | None = None
    seen: Observed | None = None
    decision: Decision | None = None
    acted: Acted | None = None
    booked: bool = False
    published: bool = False


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


class Runtime:
    """One controller instance for a whole site: a reader, a decider, an actuator and a
    recorder, run tick after tick (see the module docstring)."""

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
        self.devices = devices
        self.inv = inventory
        self.clock = clock
        self.cfg = cfg = config or RuntimeConfig()
        self.domain_ids = site.domain_names
        self.state = state or LiveState(self.domain_ids)
        self.overrides = overrides or Overrides()
        self.ledger = Ledger(site, cfg.control_period_s, cfg.plan_period_s or site.plan_period_s)
        self.modelled_reserve = ModelledReserve(site, self.domain_ids)
        self.history = DemandHistory(self.domain_ids, cfg.history_step_s)
        self.recorder = Recorder(
            site,
            inventory,
            self.state,
            sink,
            clock,
            self.ledger,
            self.history,
            cfg.store_flush_s,
            cfg.racks_every_ticks,
        )
        self.faults: FaultBook = self.recorder.faults
        self.reader = Reader(
            site,
            inventory,
            devices.telemetry,
            devices.flywheels,
            devices.reserve,
            clock,
            self.faults,
            self.state,
            self.overrides,
            self.ledger,
            self.modelled_reserve,
            self.event,
            control_period_s=cfg.control_period_s,
            device_timeout_s=cfg.device_timeout_s,
            telemetry_max_age_s=cfg.telemetry_max_age_s,
            max_server_power_w=cfg.max_server_power_w,
            metered_racks=cfg.metered_racks,
        )
        self.view: TelemetryView = self.reader.view
        self.plan_period_s = cfg.plan_period_s or site.plan_period_s
        self.decider = Decider(
            site,
            policy,
            forecaster,
            self.history,
            clock,
            self.faults,
            self.overrides,
            plan_period_s=self.plan_period_s,
            plan_in_tick_s=cfg.plan_in_tick_s,
            forecast_timeout_s=cfg.forecast_timeout_s,
            min_history_rows=cfg.min_history_rows,
        )
        self.writer = FencedWriter(
            self.domain_ids, self.faults, cfg.device_timeout_s, commandable, coordinator
        )
        self.actuator = Actuator(
            site,
            inventory,
            self.writer,
            self.overrides,
            self.ledger,
            self.view,
            self.event,
            caps=devices.caps,
            outlets=devices.outlets,
            flywheels=devices.flywheels,
            reserve=devices.reserve,
            modelled_reserve=self.modelled_reserve,
            scheduler=devices.scheduler,
            shed_heat=cfg.shed_heat,
            rewrite_per_tick=cfg.rewrite_per_tick,
        )
        self.audit_tag = audit_tag
        #: The reserve capacity (kW) this instance may plan and command, asked each tick (a
        #: shard process's budget, :mod:`.coordination`); None: the site's whole reserve.
        self.reserve_budget: Callable[[], float | None] | None = None
        #: The newest observation a tick acted on (the shard summary is built from it).
        self.last_obs: Observation | None = None
        #: Restarts every background task that crashes (serve adds its own: ingesters...).
        self.supervisor = Supervisor(clock, self._on_task_crash)
        self.state.tasks = self.supervisor.snapshot
        self._mode: Mode = "normal"
        self._ticks = 0
        self._tick_now = asyncio.Event()
        #: telemetry landed since the last tick started (see ``RuntimeConfig.wake_on_telemetry``)
        self._arrived = asyncio.Event()
        #: the runtime's event loop while it runs (arrivals are handed to it from any thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ticks woken early by telemetry, and arrivals that found the bound spent
        self.early_ticks = 0
        #: Recent tick durations (s), for benchmarks and diagnostics.
        self.latencies_s: deque[float] = deque(maxlen=100_000)
        self.started_s = clock.now_s()

    # ------------------------------------------------------------------ wiring hooks
    @property
    def commandable(self) -> Callable[[], Collection[str]] | None:
        """The domains this instance may command now (e.g. ``leader.commandable_domains``
        bound to an elector), checked right before each write; None: all of them."""
        return self.writer.commandable

    @commandable.setter
    def commandable(self, value: Callable[[], Collection[str]] | None) -> None:
        self.writer.commandable = value

    @property
    def coordinator(self) -> Callable[[], bool] | None:
        """May this instance command what the domains share (reserve, scheduler shifts) now?
        (the site coordinator role); None: only when it may command every domain."""
        return self.writer.coordinator

    @coordinator.setter
    def coordinator(self, value: Callable[[], bool] | None) -> None:
        self.writer.coordinator = value

    @property
    def audit_tag(self) -> Callable[[str], str] | None:
        """domain id -> a note appended to that domain's audit row (leader, fencing token)."""
        return self.recorder.audit_tag

    @audit_tag.setter
    def audit_tag(self, value: Callable[[str], str] | None) -> None:
        self.recorder.audit_tag = value

    @property
    def policy(self) -> Policy:
        return self.decider.policy

    @policy.setter
    def policy(self, value: Policy) -> None:
        self.decider.policy = value

    @property
    def sink(self) -> RecordSink | None:
        """Where the recorder flushes rows (None: nowhere)."""
        return self.recorder.sink

    @sink.setter
    def sink(self, value: RecordSink | None) -> None:
        self.recorder.sink = value

    @property
    def forecaster(self) -> Forecaster | None:
        return self.decider.forecaster

    @property
    def latest_forecast(self) -> Forecast | None:
        return self.decider.latest_forecast

    def event(self, kind: str, message: str, domain_id: str | None = None) -> None:
        self.recorder.event(kind, message, domain_id)

    def _on_task_crash(self, name: str, message: str, first: bool) -> None:
        self.state.count_error("task")
        self.event("task.crash", f"{name}: {message}; restarting it")

    def forget_applied(self, domains: Collection[str]) -> None:
        """This instance just became leader of ``domains`` (see :meth:`Actuator.forget_applied`)."""
        self.actuator.forget_applied(domains)

    def forget_schedule(self) -> None:
        """This instance just became site coordinator: resend the scheduler levels (every
        wanted shift pair; each replaces the predecessor's request for its pair)."""
        self.actuator.forget_schedule()

    def tick_now(self) -> None:
        """Run the next tick now instead of at the end of the period (a promotion: command at
        once). Call it on the runtime's event loop."""
        self._tick_now.set()

    def telemetry_arrived(self) -> None:
        """New telemetry is waiting for the tick: with ``wake_on_telemetry`` the loop ticks
        early, within its bounds (see :class:`RuntimeConfig`). Safe from any thread."""
        loop = self._loop
        if loop is None or not self.cfg.wake_on_telemetry:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._arrived.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to wake
                loop.call_soon_threadsafe(self._arrived.set)

    # ------------------------------------------------------------------ one tick
    async def tick(self) -> TickReport:
        """One fast-loop period: read, decide, act, record. A tick that raises falls back to
        the reactive safety loop for that period (mode ``tick-fallback``, counted, an event)."""
        t0 = self.clock.monotonic_s()
        now_s = self.clock.now_s()
        done = _Done()
        try:
            report = await self._tick(now_s, done)
        except Exception as exc:
            report = await self._fallback_tick(now_s, done, exc)
        else:
            self.faults.ok(TICK_DEVICE)
        latency = self.clock.monotonic_s() - t0
        self.state.record_tick(latency)
        self.latencies_s.append(latency)
        self._ticks += 1
        report.latency_s = latency
        return report

    async def _tick(self, now_s: float, done: _Done) -> TickReport:
        if self.devices.reserve is None:
            self.modelled_reserve.advance(now_s)
        done.reading = await self.reader.read()
        done.seen = self.reader.observe(now_s, done.reading)
        obs = self._budgeted(done.seen.obs)
        mode = self.decider.mode(now_s)
        if mode != "maintenance" and self.state.degraded():
            mode = "degraded"  # e.g. the device map changed under us: say so, act as usual
        mode = self._set_mode(mode)
        done.decision = await self.decider.decide(obs, mode)
        done.acted = await self.actuator.act(obs, done.decision, mode)
        self._record(now_s, done, mode)
        return TickReport(
            now_s, 0.0, obs, done.decision, mode, done.acted.cap_writes, done.acted.shed
        )

    async def _fallback_tick(self, now_s: float, done: _Done, exc: Exception) -> TickReport:
        """The tick raised: act on the reactive safety loop with what it got that far (the
        commands it already sent stand; rack pins are left out if capping with them fails)."""
        first = TICK_DEVICE not in self.faults.failing
        self.state.count_tick_failure()
        self.faults.fault("tick", TICK_DEVICE, f"{type(exc).__name__}: {exc}")
        if first:
            log.error("tick failed, acting on the reactive safety loop", exc_info=exc)
        mode = self._set_mode("tick-fallback")
        if done.seen is None:
            done.seen = self.reader.observe(now_s, done.reading or Reading([], {}, None))
        obs = self._budgeted(done.seen.obs)
        if done.acted is None:
            done.decision = self.decider.reactive_decision(obs)
            done.acted = await self.actuator.act(obs, done.decision, mode, safe=True)
        decision = done.decision or self.decider.reactive_decision(obs)
        done.decision = decision
        self._record(now_s, done, mode)
        return TickReport(now_s, 0.0, obs, decision, mode, done.acted.cap_writes, done.acted.shed)

    def _budgeted(self, obs: Observation) -> Observation:
        budget = self.reserve_budget() if self.reserve_budget is not None else None
        if budget is not None:
            obs = dataclasses.replace(obs, reserve_budget_kw=budget)
        self.last_obs = obs
        return obs

    def _record(self, now_s: float, done: _Done, mode: Mode) -> None:
        seen, decision = done.seen, done.decision
        if seen is None or decision is None:
            raise RuntimeError("nothing to record: no observation or decision")
        if not done.booked:
            done.booked = True
            self.recorder.book(seen.obs, decision, seen.kes_power_kw, seen.reserve_kw)
        if not done.published:
            done.published = True
            self.recorder.publish(
                seen.obs,
                decision,
                mode,
                self.policy.name,
                seen.valid_samples,
                seen.view,
                self.actuator.rack_budgets_w,
                self.decider.latest_forecast,
                self._ticks,
                seen.valid_blocks,
            )

    def _set_mode(self, mode: Mode) -> Mode:
        if mode != self._mode:
            self.event("mode", f"mode {self._mode} -> {mode}")
            self._mode = mode
        if self.state.mode != mode:  # also after the API set it (leaving maintenance)
            self.state.set_mode(mode)
        return mode

    # ------------------------------------------------------------------ planning & store
    async def plan_once(self) -> Forecast | None:
        """Forecast each domain's demand at the policy's horizons (in a worker thread)."""
        fc = await self.decider.forecast()
        if fc is not None:
            self.recorder.forecast(fc)
        return fc

    async def flush(self) -> None:
        """Hand the batched rows to the store in a worker thread; faults are counted."""
        await self.recorder.flush()

    # ------------------------------------------------------------------ loops
    async def run(self, ticks: int | None = None) -> None:
        """Run the fast loop (``ticks`` periods, forever if None), the planning loop, the
        telemetry pollers, the flywheel workers and the writer until cancelled or done."""
        self.event(
            "start",
            f"runtime started: policy {self.policy.name}, "
            f"{len(self.domain_ids)} domains, {self.inv.n_racks} racks",
        )
        sup = self.supervisor
        self._loop = asyncio.get_running_loop()
        self.reader.on_arrival = self.telemetry_arrived if self.cfg.wake_on_telemetry else None
        helpers = [sup.spawn("planner", self._plan_loop), sup.spawn("flusher", self._flush_loop)]
        periods = {
            n: self.cfg.poll_period_s.get(n, self.cfg.control_period_s)
            for n in self.devices.telemetry
        }
        thread = PollerThread() if self.cfg.poll_in_thread and self.devices.telemetry else None
        if thread is not None:
            thread.start()
        for name, source in self.devices.telemetry.items():
            self.reader.buffer_for(name)
            self.reader.polling.add(name)
            # Spread sources that share a period over it: 30 PDUs read at the same instant
            # would hold the event loop (and the ticks) for a burst.
            same = [n for n in periods if periods[n] == periods[name]]
            offset = self._until_phase_s() + periods[name] * same.index(name) / len(same)
            pushed = self.cfg.wake_on_telemetry and isinstance(source, SignalsArrival)
            poll = functools.partial(self.reader.poll, name, source, periods[name], offset, pushed)
            if pushed and isinstance(source, SignalsArrival):
                # A source that is pushed to (MQTT) wakes its poller as soon as it has data,
                # and what the poller takes wakes the tick.
                source.on_arrival = self.reader.waker(name)
            supervised = sup.supervise(f"poller:{name}", poll)
            if thread is not None:
                thread.submit(supervised)
            else:
                helpers.append(asyncio.ensure_future(supervised))
        for dom, port in self.devices.flywheels.items():
            fenced = self.writer.flywheel(dom, port)
            worker = FlywheelWorker(dom, fenced, self.faults, self.clock, self.cfg.control_period_s)
            self.reader.fly_workers[dom] = self.actuator.fly_workers[dom] = worker
            helpers.append(sup.spawn(f"flywheel:{dom}", worker.run))
        try:
            await self._fast_loop(ticks)
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if thread is not None:
                await asyncio.to_thread(thread.stop)
            self.reader.polling.clear()
            self.reader.on_arrival = None
            for source in self.devices.telemetry.values():
                if isinstance(source, SignalsArrival):
                    source.on_arrival = None
            self.reader.fly_workers.clear()
            self.actuator.fly_workers.clear()
            await self.flush()

    def _until_phase_s(self) -> float:
        """Seconds from now to this instance's next phase instant (0 without a phase)."""
        phase = self.cfg.phase_s
        if phase is None:
            return 0.0
        return (phase - self.clock.now_s()) % self.cfg.control_period_s

    async def _fast_loop(self, ticks: int | None) -> None:
        period = self.cfg.control_period_s
        next_at = self.clock.monotonic_s() + self._until_phase_s()
        #: when the last two ticks started (the early-wake bound looks at both)
        starts: deque[float] = deque([-math.inf, -math.inf], maxlen=2)
        n = 0
        if next_at > self.clock.monotonic_s():
            await self._wait_for_tick(next_at, starts)
            self._tick_now.clear()
            next_at = min(next_at, self.clock.monotonic_s())
        while ticks is None or n < ticks:
            starts.append(self.clock.monotonic_s())
            self._arrived.clear()  # this tick takes what arrived so far
            try:
                await self.tick()
            except Exception as exc:  # the fallback raised too: log, count, keep ticking
                self.faults.fault("tick", TICK_DEVICE, f"{type(exc).__name__}: {exc}")
                log.debug("tick and its fallback failed", exc_info=exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a wait_for inside swallowed it (3.11)
                raise asyncio.CancelledError
            n += 1
            if ticks is not None and n >= ticks:
                break
            next_at += period
            if next_at - self.clock.monotonic_s() < -period:  # overran a period: skip, no burst
                next_at = self.clock.monotonic_s() + self._until_phase_s()
            await self._wait_for_tick(next_at, starts)
            if self._tick_now.is_set() or self.clock.monotonic_s() < next_at - 1e-9:
                # Woken early (a promotion, or telemetry): this tick starts a new period.
                self._tick_now.clear()
                next_at = self.clock.monotonic_s()

    async def _wait_for_tick(self, next_at: float, starts: deque[float]) -> None:
        """Until the next tick: the end of the period, :meth:`tick_now`, or telemetry that
        arrived, once the early-wake bound allows it (see ``RuntimeConfig.wake_on_telemetry``)."""
        cfg = self.cfg
        while not self._tick_now.is_set():
            now = self.clock.monotonic_s()
            if now >= next_at - 1e-9:
                return
            if not cfg.wake_on_telemetry:
                await self._sleep_or(next_at - now, self._tick_now)
                continue
            if self._arrived.is_set():
                # At most one tick more per period, and never sooner than the minimum interval.
                allowed = max(
                    starts[-1] + cfg.wake_min_interval_s, starts[0] + cfg.control_period_s
                )
                if allowed >= next_at:  # the periodic tick comes first and takes it
                    await self._sleep_or(next_at - now, self._tick_now)
                    continue
                if now >= allowed - 1e-9:
                    self.early_ticks += 1
                    return
                await self._sleep_or(allowed - now, self._tick_now)
                continue
            await self._sleep_or(next_at - now, self._tick_now, self._arrived)

    async def _sleep_or(self, delay_s: float, *events: asyncio.Event) -> None:
        """Sleep ``delay_s`` on the clock, or until one of ``events`` is set."""
        sleep = asyncio.ensure_future(self.clock.sleep(delay_s))
        woken = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait({sleep, *woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            for w in woken:
                w.cancel()

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
