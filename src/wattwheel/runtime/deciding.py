"""Deciding: the mode, the forecast and the policy's decision for one tick.

The planning loop calls :meth:`Decider.forecast` every plan period (the forecaster runs in a
worker thread) and the next tick carries the fresh forecast to the policy. A tick that carries
one runs the policy (and its planner) in a worker thread; if that takes longer than
``plan_in_tick_s`` the tick acts on the reactive loop and a later tick adopts the plan. A
policy that raises is replaced for that tick by the reactive policy; no fresh forecast for two
plan periods is the ``reactive-fallback`` mode. The worker threads run below the fast loop's OS
priority (:func:`.workers.planning_executor`): a solve never holds a core a tick waits for.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from wattwheel.control.base import Decision, Observation, Policy
from wattwheel.control.simple import ReactivePolicy
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast, Forecaster
from wattwheel.forecast.conformal import predict_and_learn
from wattwheel.runtime.clock import Clock
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.history import DemandHistory
from wattwheel.runtime.state import Mode, Overrides
from wattwheel.runtime.workers import planning_executor


class Decider:
    """The policy, its state, the forecaster and the reactive fallback."""

    def __init__(
        self,
        site: SiteParams,
        policy: Policy,
        forecaster: Forecaster | None,
        history: DemandHistory,
        clock: Clock,
        faults: FaultBook,
        overrides: Overrides,
        *,
        plan_period_s: float,
        plan_in_tick_s: float,
        forecast_timeout_s: float,
        min_history_rows: int,
    ) -> None:
        self.policy = policy
        self.forecaster = forecaster
        self.history = history
        self.clock = clock
        self.faults = faults
        self.overrides = overrides
        self.plan_period_s = plan_period_s
        self.plan_in_tick_s = plan_in_tick_s
        self.forecast_timeout_s = forecast_timeout_s
        self.min_history_rows = min_history_rows
        self.policy_state: Any = policy.initial_state(site)
        self.reactive = ReactivePolicy(site)
        #: A forecast no tick has carried to the policy yet.
        self.fresh_forecast: Forecast | None = None
        self.latest_forecast: Forecast | None = None
        self.forecast_at_s = -math.inf
        self.planning: asyncio.Future[tuple[Decision, Any]] | None = None
        #: the forecaster and the planner run here, below the fast loop's priority
        self.executor = planning_executor()
        self.started_s = clock.now_s()

    # ------------------------------------------------------------------ mode
    def mode(self, now_s: float) -> Mode:
        if self.overrides.maintenance(now_s):
            return "maintenance"
        if self.policy.forecast_period_s > 0:
            grace = 2 * self.plan_period_s
            if now_s - self.forecast_at_s > grace and now_s - self.started_s > grace:
                return "reactive-fallback"
        return "normal"

    # ------------------------------------------------------------------ decision
    async def decide(self, obs: Observation, mode: Mode) -> Decision:
        """The policy's decision (see the module docstring)."""
        forecast, self.fresh_forecast = self.fresh_forecast, None
        if mode == "maintenance":
            return self.reactive_decision(obs)
        if self.planning is not None:
            if not self.planning.done():
                return self.reactive_decision(obs)  # the policy state is busy planning
            self._adopt_plan(self.planning)
        if forecast is None:
            return self._policy_decision(obs, None)
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            loop.run_in_executor(
                self.executor, self.policy.decide, obs, self.policy_state, forecast
            )
        )
        await asyncio.wait({task}, timeout=self.plan_in_tick_s)
        if not task.done():
            self.planning = task
            return self.reactive_decision(obs)
        decision = self._adopt_plan(task)
        return decision if decision is not None else self.reactive_decision(obs)

    def _adopt_plan(self, task: asyncio.Future[tuple[Decision, Any]]) -> Decision | None:
        self.planning = None
        try:
            decision, self.policy_state = task.result()
        except Exception as exc:  # a planner bug must not stop the site's protection
            self.faults.fault("policy", self.policy.name, f"{type(exc).__name__}: {exc}")
            return None
        return decision

    def _policy_decision(self, obs: Observation, forecast: Forecast | None) -> Decision:
        try:
            decision, self.policy_state = self.policy.decide(obs, self.policy_state, forecast)
        except Exception as exc:  # a policy bug must not stop the site's protection
            self.faults.fault("policy", self.policy.name, f"{type(exc).__name__}: {exc}")
            return self.reactive_decision(obs)
        return decision

    def reactive_decision(self, obs: Observation) -> Decision:
        decision, _ = self.reactive.decide(obs, None, None)
        return decision

    # ------------------------------------------------------------------ forecast
    async def forecast(self) -> Forecast | None:
        """Forecast each domain's demand at the policy's horizons (in a worker thread)."""
        horizons = tuple(getattr(self.policy, "horizons_s", ()))
        if self.forecaster is None or not horizons or len(self.history) < self.min_history_rows:
            return None
        history = self.history.history()
        if not np.isfinite(history.values).any(axis=0).all():
            return None  # a domain with no good reading yet: nothing to forecast from
        forecaster = self.forecaster

        def forecast_and_learn() -> Forecast:
            # predict is pure; calibration learns here, explicitly, from measured data only.
            return predict_and_learn(forecaster, history, horizons)

        fc = await guarded(
            self.faults,
            "forecast",
            forecaster.name,
            lambda: asyncio.get_running_loop().run_in_executor(self.executor, forecast_and_learn),
            self.forecast_timeout_s,
            None,
        )
        if fc is None:
            return None
        if not np.all(np.isfinite(fc.values)):
            self.faults.fault("forecast", forecaster.name, "forecast holds NaN/inf values")
            return None
        self.fresh_forecast = fc
        self.latest_forecast = fc
        self.forecast_at_s = self.clock.now_s()
        return fc
