"""Reading: every telemetry source, flywheel bank and the reserve, turned into an Observation.

Sources polled in the background (:meth:`Reader.poll`) leave their samples in a buffer the
tick drains; sources that are not polled are read inline, concurrently, each within its own
timeout. Flywheels with a worker are read by it (the tick takes the cached status). The
readings become the policy's :class:`Observation`: demand per domain (stale domains hold their
last good value), the bank's state (a bank that does not answer floats: 0 kW either way), the
reserve's state, the ledger's shifts and debt, and the operator's pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import RESERVE_OFF, Observation
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import PowerSample, ReportsRejections, TelemetrySource
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.ledger import Ledger, ModelledReserve
from wattwheel.runtime.ports import FlywheelPort, FlywheelStatusW, ReservePort, ReserveStatus
from wattwheel.runtime.state import LiveState, Overrides
from wattwheel.runtime.telemetry import DemandView, SampleBlock, TelemetryView
from wattwheel.runtime.workers import FlywheelWorker

FloatArray = NDArray[np.float64]
#: A flywheel not read yet this long after start is not a fault (connecting, SunSpec discovery).
STARTUP_GRACE_S = 5.0
#: Samples a background poller keeps while nobody drains them (the newest win).
POLL_BUFFER = 1_000_000


@runtime_checkable
class StoresOwnSamples(Protocol):
    """A telemetry source whose samples its own sink already stored durably (MQTT behind a
    durable store): the tick uses them but does not store them a second time."""

    stores_samples: bool


@runtime_checkable
class SignalsArrival(Protocol):
    """A telemetry source that is pushed to (MQTT): it calls ``on_arrival`` (when set, from
    any thread) once it holds new samples, so that its poller reads them at once instead of
    at its next period."""

    on_arrival: Callable[[], None] | None


def _stores_own(source: object) -> bool:
    return isinstance(source, StoresOwnSamples) and bool(source.stores_samples)


@dataclass(frozen=True)
class Reading:
    """What one tick read: telemetry samples, flywheel status per domain, reserve status.
    ``stored``: ids of the samples their source already stored (see StoresOwnSamples)."""

    samples: list[PowerSample]
    flywheels: dict[str, FlywheelStatusW | None]
    reserve: dict[str, ReserveStatus] | None
    stored: frozenset[int] = frozenset()
    #: readings that came as arrays (:class:`SampleBlock`, the fast path)
    blocks: list[SampleBlock] = field(default_factory=list)


@dataclass(frozen=True)
class Observed:
    """The policy's observation plus what the tick needs beside it."""

    obs: Observation
    kes_power_kw: FloatArray
    reserve_kw: FloatArray
    view: DemandView
    #: The samples the view believed and the tick stores (only believed samples are stored as
    #: readings, DESIGN §8; those their source stored already are left out).
    valid_samples: list[PowerSample]
    #: the rows of the blocks the view believed (to store), as blocks
    valid_blocks: list[SampleBlock] = field(default_factory=list)


async def _sleep_or(clock: Clock, delay_s: float, event: asyncio.Event) -> None:
    """Sleep ``delay_s`` on ``clock``, or until ``event`` is set."""
    if event.is_set():
        return
    sleep = asyncio.ensure_future(clock.sleep(delay_s))
    woken = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleep.cancel()
        woken.cancel()


class Reader:
    """Reads the devices and builds the observation (see the module docstring)."""

    def __init__(
        self,
        site: SiteParams,
        inv: Inventory,
        telemetry: Mapping[str, TelemetrySource],
        flywheels: Mapping[str, FlywheelPort],
        reserve: ReservePort | None,
        clock: Clock,
        faults: FaultBook,
        state: LiveState,
        overrides: Overrides,
        ledger: Ledger,
        modelled_reserve: ModelledReserve,
        event: Callable[[str, str], None],
        *,
        control_period_s: float,
        device_timeout_s: float,
        telemetry_max_age_s: float,
        max_server_power_w: float,
        metered_racks: frozenset[str] = frozenset(),
    ) -> None:
        self.site = site
        self.domain_ids = site.domain_names
        self.telemetry = telemetry
        self.flywheels = flywheels
        self.reserve = reserve
        self.clock = clock
        self.faults = faults
        self.state = state
        self.overrides = overrides
        self.ledger = ledger
        self.modelled_reserve = modelled_reserve
        self.event = event
        self.control_period_s = control_period_s
        self.device_timeout_s = device_timeout_s
        self.view = TelemetryView(
            inv,
            1.0 - site.flex.noncritical_fraction,
            telemetry_max_age_s,
            max_server_power_w,
            rack_rating_w=None if site.rack_rating_kw is None else site.rack_rating_kw * 1000.0,
            metered_racks=metered_racks,
        )
        #: Buffers of the sources polled in the background (the tick drains them).
        self.polled: dict[str, deque[PowerSample | SampleBlock]] = {}
        #: Sources a background poller reads now (the tick does not read them inline).
        self.polling: set[str] = set()
        #: Flywheels read (and commanded) by their own worker.
        self.fly_workers: dict[str, FlywheelWorker] = {}
        #: called (from the poller's thread) when a poller put new readings in its buffer
        self.on_arrival: Callable[[], None] | None = None
        #: per polled source, what wakes its poller early (see :meth:`waker`)
        self._wake_poll: dict[str, Callable[[], None]] = {}
        self.kes_soc = site.kes_initial_soc.astype(float).copy()
        self.started_s = clock.now_s()
        self._rejections_seen: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ devices
    async def read(self) -> Reading:
        t = self.device_timeout_s
        empty: list[PowerSample] = []
        stored: list[PowerSample] = []
        blocks: list[SampleBlock] = []
        polled = self._drain_polled(stored, blocks)
        inline = [(n, src) for n, src in self.telemetry.items() if n not in self.polling]
        tele = asyncio.gather(
            *(
                guarded(self.faults, "device", f"telemetry:{name}", src.read, t, empty)
                for name, src in inline
            )
        )
        none_status: FlywheelStatusW | None = None
        max_age = 3 * self.control_period_s
        cached = {d: w.status(max_age) for d, w in self.fly_workers.items()}
        inline_fly = [d for d in self.flywheels if d not in self.fly_workers]
        fly = asyncio.gather(
            *(
                guarded(self.faults, "device", f"flywheel:{d}", port.read, t, none_status)
                for d, port in self.flywheels.items()
                if d in inline_fly
            )
        )
        no_reserve: dict[str, ReserveStatus] | None = None
        res = (
            guarded(self.faults, "device", "reserve", self.reserve.read, t, no_reserve)
            if self.reserve is not None
            else self.modelled_reserve.read()
        )
        batches, statuses, reserve = await asyncio.gather(tele, fly, res)
        for (_, src), batch in zip(inline, batches, strict=True):
            if _stores_own(src):
                stored.extend(batch)
        samples = polled
        for batch in batches:
            for s in batch:
                if isinstance(s, SampleBlock):
                    blocks.append(s)
                else:
                    samples.append(s)
        return Reading(
            samples,
            {**cached, **dict(zip(inline_fly, statuses, strict=True))},
            reserve,
            frozenset(id(s) for s in stored),
            blocks,
        )

    def _count_rejected_messages(self) -> None:
        """What a transport rejected on arrival (quarantined MQTT messages, samples its
        plausibility gate dropped): counted as ``input`` errors; the first of each reason is a
        ``telemetry.quarantine`` event."""
        for name, source in self.telemetry.items():
            if not isinstance(source, ReportsRejections):
                continue
            for rejection in source.take_rejections():
                self.state.count_error("input", rejection.count)
                key = (name, rejection.reason)
                if key not in self._rejections_seen:
                    self._rejections_seen.add(key)
                    self.event(
                        "telemetry.quarantine",
                        f"{name}: rejected on arrival ({rejection.reason}; further ones "
                        f"counted in errors 'input'): {rejection.detail}",
                    )

    def _drain_polled(
        self, stored: list[PowerSample], blocks: list[SampleBlock]
    ) -> list[PowerSample]:
        """Everything the background pollers read (readings as arrays go to ``blocks``); the
        samples of self-storing sources also go to ``stored``."""
        # popleft is atomic: a poller thread may append while we drain.
        out: list[PowerSample] = []
        for name, buffer in self.polled.items():
            start = len(out)
            for _ in range(len(buffer)):
                item = buffer.popleft()
                if isinstance(item, SampleBlock):
                    blocks.append(item)
                else:
                    out.append(item)
            if _stores_own(self.telemetry.get(name)):
                stored.extend(out[start:])
        return out

    def buffer_for(self, name: str) -> deque[PowerSample | SampleBlock]:
        """The buffer of a source polled in the background (the tick stops reading it inline);
        a source that pushes its readings may append to it (samples or blocks) from any
        thread."""
        return self.polled.setdefault(name, deque(maxlen=POLL_BUFFER))

    def waker(self, name: str) -> Callable[[], None]:
        """What makes source ``name``'s poller read now (safe from any thread; nothing while
        it is not polling)."""

        def wake() -> None:
            hook = self._wake_poll.get(name)
            if hook is not None:
                hook()

        return wake

    async def poll(
        self,
        name: str,
        source: TelemetrySource,
        period_s: float,
        offset_s: float = 0.0,
        signal: bool = False,
    ) -> None:
        """Read one telemetry source on its own schedule (a slow one never holds a tick); a
        source that signals arrivals (:meth:`waker`) is read as soon as it has something, and
        with ``signal`` what it read is announced (``on_arrival``: the tick may come early).
        Polled devices are not announced: their readings come on the process's own schedule,
        at its phase, and waking the tick for each would double the ticks and their writes."""
        buffer = self.buffer_for(name)
        empty: list[PowerSample] = []
        timeout = max(self.device_timeout_s, period_s)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the poller's loop closed
                loop.call_soon_threadsafe(woken.set)

        self._wake_poll[name] = wake
        try:
            await self.clock.sleep(offset_s)
            while True:
                started = self.clock.monotonic_s()
                woken.clear()
                batch = await guarded(
                    self.faults, "device", f"telemetry:{name}", source.read, timeout, empty
                )
                buffer.extend(batch)  # bounded: nobody draining keeps the newest readings only
                if signal and batch and self.on_arrival is not None:
                    self.on_arrival()
                await _sleep_or(self.clock, period_s - (self.clock.monotonic_s() - started), woken)
        finally:
            if self._wake_poll.get(name) is wake:
                del self._wake_poll[name]

    # ------------------------------------------------------------------ observation
    def observe(self, now_s: float, reading: Reading) -> Observed:
        samples = reading.samples
        ok = self.view.ingest(samples, now_s)
        valid = [s for s, good in zip(samples, ok, strict=True) if good]
        valid_blocks: list[SampleBlock] = []
        rows = rows_ok = 0
        for block in reading.blocks:
            kept = self.view.ingest_block(block, now_s)
            rows, rows_ok = rows + len(block), rows_ok + int(kept.sum())
            if kept.any() and id(block) not in reading.stored:
                valid_blocks.append(block.select(kept))
        self.state.count_telemetry(len(valid) + rows_ok)
        rejected = len(samples) - len(valid) + rows - rows_ok
        if rejected:
            self.state.count_error("input", rejected)
        view = self.view.demand(now_s)
        for notice in self.view.take_notices():
            self.event("telemetry.trust", notice)
        self._count_rejected_messages()
        soc, dis, chg, kes_power = self._kes(reading.flywheels)
        mode, ready, left, res_kw = self._reserve(reading.reserve)
        out_kw, in_kw = self.ledger.shifts_now(now_s)
        obs = Observation(
            now_s=now_s,
            dt_s=self.control_period_s,
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
            pinned_cap_kw=self.overrides.pinned_cap_kw(self.domain_ids, now_s),
            reserve_override=self.overrides.reserve_override(self.domain_ids, now_s),
            stale=view.stale,
        )
        to_store = [s for s in valid if id(s) not in reading.stored] if reading.stored else valid
        return Observed(obs, kes_power, res_kw, view, to_store, valid_blocks)

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
                if dom in self.flywheels and not starting:
                    self.faults.fault("device", key, "no fresh status, KES assumed floating")
                continue
            self.faults.ok(key)
            self.kes_soc[i] = min(max(st.soc, 0.0), 1.0)
            dis[i] = max(st.max_discharge_w, 0.0) / 1000.0
            chg[i] = max(st.max_charge_w, 0.0) / 1000.0
            power[i] = st.power_w / 1000.0
        return self.kes_soc.copy(), dis, chg, power

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
