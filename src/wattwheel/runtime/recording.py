"""Recording: what the loop tells the world after a tick.

Events and faults (logged once, counted in the live state), the bookkeeping of what the site
did (ledger: shifts, deferral debt, breaker heat; the demand history the forecaster reads), the
live state the API serves (domain and rack snapshots, the audit rows) and the store: rows are
batched in an outbox and handed to the store by :meth:`Recorder.flush` in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import Decision, Observation
from wattwheel.domain.site import SiteParams
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.history import DemandHistory
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.ledger import Ledger
from wattwheel.runtime.ports import RecordSink
from wattwheel.runtime.snapshots import domain_snapshots, forecast_bands, rack_snapshots
from wattwheel.runtime.state import EventRecord, LiveState, Mode, decision_records
from wattwheel.runtime.telemetry import DemandView, SampleBlock

FloatArray = NDArray[np.float64]


@dataclass
class Outbox:
    """Rows waiting for the next store flush."""

    telemetry: list[PowerSample] = field(default_factory=list)
    #: readings that came as arrays: made rows in the flush's worker thread, off the tick
    blocks: list[SampleBlock] = field(default_factory=list)
    decisions: list[Any] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)


class Recorder:
    """Events, faults, bookkeeping, the live state and the store outbox of one runtime."""

    def __init__(
        self,
        site: SiteParams,
        inv: Inventory,
        state: LiveState,
        sink: RecordSink | None,
        clock: Clock,
        ledger: Ledger,
        history: DemandHistory,
        store_flush_s: float,
        racks_every_ticks: int,
    ) -> None:
        self.site = site
        self.inv = inv
        self.domain_ids = site.domain_names
        self.state = state
        self.sink = sink
        self.clock = clock
        self.ledger = ledger
        self.history = history
        self.store_flush_s = store_flush_s
        self.racks_every_ticks = max(racks_every_ticks, 1)
        #: domain id -> a note appended to that domain's audit row (e.g. leader, fencing token).
        self.audit_tag: Callable[[str], str] | None = None
        self.faults = FaultBook(self._on_fault)
        self.out = Outbox()

    # ------------------------------------------------------------------ events & faults
    def _on_fault(self, kind: str, device: str, message: str, first: bool) -> None:
        self.state.count_error(kind)
        if first:
            self.event(f"{kind}.fault", f"{device}: {message}")

    def event(self, kind: str, message: str, domain_id: str | None = None) -> None:
        ev = EventRecord(self.clock.now_s(), kind, message, domain_id, "runtime")
        self.state.record_event(ev)
        self.out.events.append(ev)

    def forecast(self, fc: Forecast) -> None:
        self.out.forecasts.append(fc)

    # ------------------------------------------------------------------ bookkeeping
    def book(self, obs: Observation, dec: Decision, kes_kw: FloatArray, res_kw: FloatArray) -> None:
        """The ledger (deferral debt, breaker heat) and the demand history. Shift orders are
        booked by the actuator once the scheduler has them."""
        self.ledger.settle(obs.now_s, dec.defer_kw, dec.repay_kw)
        # Measured demand already reflects caps; the bank's own reading is its real exchange.
        grid = obs.demand_kw - kes_kw - res_kw
        self.ledger.observe_grid(grid, obs.dt_s)
        self.history.add(
            obs.now_s,
            np.where(obs.stale if obs.stale is not None else False, np.nan, obs.demand_kw * 1000.0),
        )

    # ------------------------------------------------------------------ live state
    def publish(
        self,
        obs: Observation,
        dec: Decision,
        mode: Mode,
        policy_name: str,
        samples: list[PowerSample],
        rack_view: DemandView,
        rack_budgets_w: Mapping[str, float],
        forecast: Forecast | None,
        tick_no: int,
        blocks: list[SampleBlock] | None = None,
    ) -> None:
        """Snapshots for the API and the audit rows of this tick."""
        bands = forecast_bands(forecast, self.domain_ids)
        known = rack_view.known
        # A domain never read yet has no demand to show (not 0 kW): publish it once it has.
        snaps = domain_snapshots(self.site, obs, dec, bands)
        self.state.update_domains(s for s, k in zip(snaps, known, strict=True) if k)
        if tick_no % self.racks_every_ticks == 0:
            self.state.update_racks(
                rack_snapshots(self.inv, rack_view.rack_power_w, dict(rack_budgets_w), obs.now_s)
            )
        records = decision_records(dec, self.domain_ids, obs.now_s, policy_name, mode)
        if self.audit_tag is not None:
            tag = self.audit_tag
            records = [
                replace(r, reason=f"{r.reason} [{tag(r.domain_id)}]".lstrip()) for r in records
            ]
        self.state.record_decisions(records)
        self.out.decisions.extend(records)
        self.out.telemetry.extend(samples)
        if blocks:
            self.out.blocks.extend(blocks)

    # ------------------------------------------------------------------ store
    async def flush(self) -> None:
        """Hand the batched rows to the store in a worker thread; faults are counted."""
        out, self.out = self.out, Outbox()
        if self.sink is None:
            return
        sink = self.sink

        def write() -> None:
            rows = out.telemetry + [s for b in out.blocks for s in b.samples()]
            if rows:
                sink.write_telemetry(rows)
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
            max(self.store_flush_s * 10, 5.0),
            None,
        )
