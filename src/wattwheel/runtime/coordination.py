"""The site coordinator among shard processes: summaries up, reserve budgets down.

Each shard process (``serve --only-shard``) runs one :class:`ShardCoordination` task beside its
runtime. Every ``period_s`` it

1. **publishes its shard's summary** (:class:`~wattwheel.control.reserve_budget.ShardSummary`:
   forecast excess and headroom per block, critical load over the feeds, rated load) when it
   leads the shard and the summary is new: once per plan period (a new forecast), or per tick
   on the measured demand when the policy does not forecast;
2. **if it holds the site coordinator role**, reads every shard's summary, computes the budgets
   (:func:`~wattwheel.control.reserve_budget.compute_budgets`) and publishes them as a grant
   with a version (its fencing token and a sequence number) and a timestamp, every period
   (a heartbeat: the shards judge staleness by new versions);
3. **reads the published grant**; the runtime asks :meth:`ShardCoordination.budget_kw` each
   tick and plans and commands with it, or with the static share once the grant is older than
   ``ttl_s`` (:func:`~wattwheel.control.reserve_budget.effective_budget`). Each change between
   the two is a ``coordination.fallback`` / ``coordination.budget`` event; ``status()`` is
   ``/api/v1/status``'s ``reserve_budget``.

The store is etcd (:class:`~wattwheel.adapters.etcd.coordination.EtcdCoordinationStore`,
keys bound to a lease of this process so a dead shard's summary goes with it) or, in tests,
:class:`MemoryCoordinationStore`. Without a store (no ``--etcd``) the shard has no coordinator
and runs on its static share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wattwheel.control.base import Observation
from wattwheel.control.predictive import PLAN_QUANTILE
from wattwheel.control.reserve_budget import (
    BudgetGrant,
    BudgetSeen,
    EffectiveBudget,
    ShardSummary,
    compute_budgets,
    effective_budget,
    observe,
    summarize,
)
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.clock import Clock

log = logging.getLogger(__name__)


class CoordinationStore(Protocol):
    """Where summaries and grants are published. Failures return None / False (logged by the
    store), never raise: a store outage must look like a silent coordinator, not a crash."""

    async def publish_summary(self, shard: str, text: str) -> bool: ...

    async def summaries(self) -> dict[str, tuple[str, int]] | None:
        """shard -> (summary JSON, revision); None: the store did not answer."""
        ...

    async def publish_grant(self, text: str) -> bool: ...

    async def grant(self) -> tuple[str, int] | None:
        """(grant JSON, revision), or None when there is none or the store did not answer."""
        ...


class MemoryCoordinationStore:
    """An in-memory store shared by the coordinations of one test (revisions like etcd's)."""

    def __init__(self) -> None:
        self.revision = 0
        self.summary_keys: dict[str, tuple[str, int]] = {}
        self.grant_key: tuple[str, int] | None = None
        self.down = False

    async def publish_summary(self, shard: str, text: str) -> bool:
        if self.down:
            return False
        self.revision += 1
        self.summary_keys[shard] = (text, self.revision)
        return True

    async def summaries(self) -> dict[str, tuple[str, int]] | None:
        return None if self.down else dict(self.summary_keys)

    async def publish_grant(self, text: str) -> bool:
        if self.down:
            return False
        self.revision += 1
        self.grant_key = (text, self.revision)
        return True

    async def grant(self) -> tuple[str, int] | None:
        return None if self.down else self.grant_key


@dataclass
class _Sighting:
    """When (coordinator's monotonic clock) a shard's summary revision was first seen."""

    revision: int
    seen_s: float
    summary: ShardSummary


class ShardCoordination:
    """One shard process's part in the site coordination (see the module docstring).

    Args:
        store: where summaries and grants live (None: no coordinator, static share only).
        clock: monotonic time for staleness; wall time for the summaries' and grants' stamps.
        site: the shard's site (its domains only; the reserve's whole capacity).
        shard: this process's shard.
        static_kw: every shard's static share of the reserve (kW).
        leads_shard / coordinates: whether this process leads its shard / holds the site
            coordinator role now (asked each period).
        token: the coordinator role's fencing token (the grants' version).
        instance_id: this process's name (in the grants).
        ttl_s: a shard falls back to its static share when no new grant came for this long.
        period_s: how often it publishes and reads.
        summary_stale_s: the coordinator treats a summary whose revision has not changed for
            this long as absent (its shard is held at its static share).
    """

    def __init__(
        self,
        store: CoordinationStore | None,
        clock: Clock,
        site: SiteParams,
        shard: str,
        static_kw: Mapping[str, float],
        *,
        leads_shard: Callable[[], bool],
        coordinates: Callable[[], bool],
        token: Callable[[], int | None],
        instance_id: str,
        ttl_s: float = 10.0,
        period_s: float = 1.0,
        summary_stale_s: float | None = None,
        event: Callable[[str, str], None] | None = None,
        latest_forecast: Callable[[], Forecast | None] | None = None,
        last_obs: Callable[[], Observation | None] | None = None,
    ) -> None:
        if ttl_s <= period_s:
            raise ValueError(f"the budget TTL ({ttl_s} s) must exceed the period ({period_s} s)")
        self.store, self.clock, self.site, self.shard = store, clock, site, shard
        self.static_kw = dict(static_kw)
        self.capacity_kw = float(site.reserve.capacity_kw)
        self.leads_shard, self.coordinates, self.token = leads_shard, coordinates, token
        self.instance_id = instance_id
        self.ttl_s, self.period_s = ttl_s, period_s
        self.summary_stale_s = (
            max(3 * site.plan_period_s, 10.0) if summary_stale_s is None else summary_stale_s
        )
        self.event = event or (lambda kind, message: None)
        self.latest_forecast = latest_forecast or (lambda: None)
        self.last_obs = last_obs or (lambda: None)
        self.seen = BudgetSeen()
        self.published_grants = 0
        self.last_grant: BudgetGrant | None = None
        self._seq = 0
        self._grant_token: int | None = None
        self._sightings: dict[str, _Sighting] = {}
        self._published_from: tuple[float, int] | None = None
        self._source: str | None = None
        self.effective = self._effective()

    # ------------------------------------------------------------------ runtime hooks
    def budget_kw(self) -> float:
        """The reserve capacity (kW) this shard may plan and command now."""
        self.effective = self._effective()
        return self.effective.budget_kw

    def status(self) -> dict[str, Any]:
        eff = self._effective()
        return {
            "shard": self.shard,
            "source": eff.source,
            "budget_kw": round(eff.budget_kw, 3),
            "static_kw": round(self.static_kw.get(self.shard, 0.0), 3),
            "capacity_kw": self.capacity_kw,
            "reason": eff.reason,
            "version": eff.version,
            "coordinator": eff.coordinator,
            "age_s": None if eff.age_s is None else round(eff.age_s, 3),
            "ttl_s": self.ttl_s,
            "coordinating": self.store is not None and self.coordinates(),
            "grants_published": self.published_grants,
            "budgets_kw": None if self.last_grant is None else self.last_grant.budgets_kw,
            "basis": None if self.last_grant is None else self.last_grant.basis,
        }

    def _effective(self) -> EffectiveBudget:
        eff = effective_budget(
            self.seen,
            self.shard,
            self.static_kw.get(self.shard, 0.0),
            self.capacity_kw,
            self.ttl_s,
            self.clock.monotonic_s(),
        )
        if self.store is None:
            return EffectiveBudget(
                eff.budget_kw, "fallback", "no --etcd: no site coordinator", None, None, None
            )
        return eff

    # ------------------------------------------------------------------ the task
    async def run(self) -> None:
        self._note()
        while True:
            try:
                await self.step()
            except Exception:  # one bad period must not end the coordination
                log.exception("coordination step failed")
            await self.clock.sleep(self.period_s)

    async def step(self) -> None:
        """One period: publish the summary, coordinate if this process is the coordinator,
        read the grant, and report a change of source."""
        store = self.store
        if store is not None:
            if self.leads_shard():
                summary = self.summary()
                if summary is not None:
                    key = (summary.issued_at_s, len(summary.excess_kw))
                    if key != self._published_from and await store.publish_summary(
                        self.shard, summary.to_json()
                    ):
                        self._published_from = key
            if self.coordinates():
                await self._coordinate(store)
            else:
                self._sightings.clear()
                self._grant_token = None
            read = await store.grant()
            if read is not None:
                text, revision = read
                try:
                    grant: BudgetGrant | None = BudgetGrant.from_json(text)
                except ValueError as exc:
                    log.warning("unreadable budget grant (revision %d): %s", revision, exc)
                    grant = None
                self.seen = observe(self.seen, grant, revision, self.clock.monotonic_s())
        self._note()

    def summary(self) -> ShardSummary | None:
        """This shard's summary from the newest forecast (median, every block), or from the
        last tick's measured demand when there is no usable forecast."""
        obs = self.last_obs()
        if obs is None:
            return None
        site = self.site
        demand: np.ndarray[Any, Any] = np.asarray(obs.demand_kw, dtype=np.float64)[:, None]
        issued_s, block_s = obs.now_s, site.plan_period_s
        fc = self.latest_forecast()
        rows = fc.rows_for(site.domain_names) if fc is not None else None
        if fc is not None and rows is not None:
            median = rows.quantile(PLAN_QUANTILE) / 1000.0
            if np.all(np.isfinite(median)):
                demand, issued_s = median, fc.issued_at_s
        if not np.all(np.isfinite(demand)):
            return None
        blocks = max(int(round(site.horizon_s / site.plan_period_s)), 1)
        return summarize(
            self.shard, site.primary_kw, demand, obs.critical_kw, blocks, block_s, issued_s
        )

    async def _coordinate(self, store: CoordinationStore) -> None:
        token = self.token()
        if token is None:
            return
        if token != self._grant_token:
            self._grant_token, self._seq = token, 0
        raw = await store.summaries()
        if raw is None:
            return  # no answer: publish nothing rather than budgets on missing summaries
        now_s = self.clock.monotonic_s()
        live: dict[str, ShardSummary] = {}
        for shard, (text, revision) in raw.items():
            if shard not in self.static_kw:
                continue
            seen = self._sightings.get(shard)
            if seen is None or seen.revision != revision:
                try:
                    parsed = ShardSummary.from_json(text)
                except ValueError as exc:
                    log.warning("unreadable summary of shard %s: %s", shard, exc)
                    continue
                seen = _Sighting(revision, now_s, parsed)
                self._sightings[shard] = seen
            if now_s - seen.seen_s <= self.summary_stale_s:
                live[shard] = seen.summary
        for gone in set(self._sightings) - set(raw):
            del self._sightings[gone]
        budgets = compute_budgets(self.capacity_kw, self.static_kw, live)
        self._seq += 1
        grant = BudgetGrant(
            token=token,
            seq=self._seq,
            coordinator=self.instance_id,
            issued_at_s=self.clock.now_s(),
            capacity_kw=self.capacity_kw,
            budgets_kw=budgets.budgets_kw,
            basis=dict(budgets.basis),
        )
        if await store.publish_grant(grant.to_json()):
            self.published_grants += 1
            self.last_grant = grant

    def _note(self) -> None:
        """An event when the budget's source changes (coordinator <-> fallback)."""
        eff = self._effective()
        self.effective = eff
        if eff.source == self._source:
            return
        first = self._source is None
        self._source = eff.source
        if eff.source == "fallback":
            self.event(
                "coordination.fallback",
                f"shard {self.shard} plans and commands with its static reserve share "
                f"{eff.budget_kw:.1f} kW of {self.capacity_kw:.1f} kW: {eff.reason}",
            )
        elif not first or eff.source == "coordinator":
            self.event(
                "coordination.budget",
                f"shard {self.shard} plans and commands with a reserve budget of "
                f"{eff.budget_kw:.1f} kW of {self.capacity_kw:.1f} kW ({eff.reason})",
            )
