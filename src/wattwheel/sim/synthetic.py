"""Synthetic AI-training power traces, from published measurements of an 8-GPU node.

The waveform (defaults of :class:`GpuNodeProfile`) follows the measurements reported by
Elsayed, Al-Obaidi & Farag (preprint, doi:10.21203/rs.3.rs-7943457/v1) for one 8-GPU training
node: about 6-7.5 kW while computing, dropping to about 1.6 kW for about 1 s every about 8 s
(the synchronisation / checkpoint step of each iteration), with ramps of about 1 s on each side.

Model, per iteration of length ``period_s`` (optionally jittered):

    compute plateau (period - 2 ramp - dip) -> linear ramp down (ramp_s) -> dip (dip_s)
    -> linear ramp up (ramp_s)

* Data-parallel training is synchronous: every node of a job reaches the all-reduce at the same
  moment, so all nodes of a rack share one iteration schedule. That is what turns a few kW of
  node-level swing into tens or hundreds of kW at the rack and grid. Racks share the schedule too
  (one job across the racks) unless ``rack_offset_s`` shifts rack k by ``k x rack_offset_s``.
* Each node has its own compute level drawn once, uniform in [compute_low_w, compute_high_w],
  plus per-sample Gaussian fluctuation (``compute_noise_w``), clipped to that range; its dip level
  is ``dip_w`` plus ``dip_noise_w`` Gaussian noise.
* The output is what a 1 s power meter reports: the waveform is evaluated on a fine grid
  (``oversample`` points per step) and averaged over each step. With the defaults (period and
  durations whole seconds, schedule starting at t = 0) one step per iteration sits fully in the
  dip and the steps either side are mid-ramp.
* Timestamps are ``start_s + i x step_s`` (seconds; 0 = start of the job, not wall-clock).
  Rack ids are ``{rack_prefix}{k}``, k = 1..R zero-padded to two digits (``gpu01``...).

Everything is drawn from ``numpy.random.default_rng(seed)``: same arguments, same trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.trace import FloatArray, Trace


@dataclass(frozen=True)
class GpuNodeProfile:
    """Power waveform of one 8-GPU training node (watts, seconds)."""

    compute_low_w: float = 6000.0
    compute_high_w: float = 7500.0
    dip_w: float = 1600.0
    period_s: float = 8.0
    dip_s: float = 1.0
    ramp_s: float = 1.0
    compute_noise_w: float = 150.0
    dip_noise_w: float = 30.0
    #: Standard deviation of each iteration's length; 0 = a metronome.
    period_jitter_s: float = 0.0

    def __post_init__(self) -> None:
        _check(self.dip_w >= 0, "dip_w", self.dip_w, "must be >= 0 W")
        _check(
            self.dip_w <= self.compute_low_w <= self.compute_high_w,
            "compute_low_w",
            self.compute_low_w,
            f"must satisfy dip_w ({self.dip_w}) <= compute_low_w <= compute_high_w "
            f"({self.compute_high_w})",
        )
        _check(self.dip_s > 0, "dip_s", self.dip_s, "must be > 0 s")
        _check(self.ramp_s >= 0, "ramp_s", self.ramp_s, "must be >= 0 s")
        _check(
            self.period_s > self.dip_s + 2 * self.ramp_s,
            "period_s",
            self.period_s,
            f"must exceed dip_s + 2 x ramp_s = {self.dip_s + 2 * self.ramp_s} s",
        )
        for key in ("compute_noise_w", "dip_noise_w", "period_jitter_s"):
            _check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")


@dataclass(frozen=True)
class AiTrainingLayout:
    """How many nodes, racks, and how long (seconds)."""

    nodes_per_rack: int
    racks: int
    duration_s: float
    step_s: float = 1.0
    seed: int = 0
    rack_offset_s: float = 0.0
    start_s: float = 0.0
    rack_prefix: str = "gpu"
    oversample: int = 20

    def __post_init__(self) -> None:
        _check(self.nodes_per_rack >= 1, "nodes", self.nodes_per_rack, "must be >= 1")
        _check(self.racks >= 1, "racks", self.racks, "must be >= 1")
        _check(self.step_s > 0, "step_s", self.step_s, "must be > 0 s")
        _check(
            self.duration_s >= 2 * self.step_s,
            "duration_s",
            self.duration_s,
            f"must cover at least two steps ({2 * self.step_s} s)",
        )
        _check(self.oversample >= 1, "oversample", self.oversample, "must be >= 1")

    @property
    def n_steps(self) -> int:
        return int(self.duration_s // self.step_s)


def synthesize_ai_training(
    layout: AiTrainingLayout, profile: GpuNodeProfile | None = None
) -> Trace:
    """A (T, R) trace of synchronised 8-GPU training nodes (see module docstring)."""
    profile = profile or GpuNodeProfile()
    rng = np.random.default_rng(layout.seed)
    n = layout.n_steps
    starts = _iteration_starts(profile, layout, rng)
    columns = []
    for k in range(layout.racks):
        shape = _binned_shape(profile, layout, starts + k * layout.rack_offset_s)
        nodes_w = _node_power_w(profile, shape, layout.nodes_per_rack, rng)
        columns.append(nodes_w.sum(axis=1))
    width = max(2, len(str(layout.racks)))
    rack_ids = tuple(f"{layout.rack_prefix}{k + 1:0{width}d}" for k in range(layout.racks))
    timestamps_s = layout.start_s + layout.step_s * np.arange(n, dtype=np.float64)
    return Trace(timestamps_s, rack_ids, np.column_stack(columns))


def _iteration_starts(
    profile: GpuNodeProfile, layout: AiTrainingLayout, rng: np.random.Generator
) -> FloatArray:
    """Start times (s, relative to the job start) of enough iterations to cover the trace,
    beginning one period early so a rack offset never leaves the first steps uncovered."""
    span_s = layout.duration_s + (layout.racks - 1) * abs(layout.rack_offset_s)
    count = int(span_s // profile.period_s) + 4
    shortest = profile.dip_s + 2 * profile.ramp_s + 1e-3
    periods = np.maximum(
        profile.period_s + profile.period_jitter_s * rng.standard_normal(count), shortest
    )
    starts: FloatArray = np.concatenate([[0.0], np.cumsum(periods)]) - profile.period_s
    return starts


def _binned_shape(
    profile: GpuNodeProfile, layout: AiTrainingLayout, starts: FloatArray
) -> FloatArray:
    """Per step, the mean of the waveform shape: 1 = computing, 0 = in the dip."""
    dt = layout.step_s / layout.oversample
    t = (np.arange(layout.n_steps * layout.oversample, dtype=np.float64) + 0.5) * dt
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, starts.shape[0] - 2)
    tau = t - starts[idx]
    period = starts[idx + 1] - starts[idx]
    ramp_down_at = period - 2 * profile.ramp_s - profile.dip_s
    dip_at = ramp_down_at + profile.ramp_s
    ramp_up_at = dip_at + profile.dip_s
    ramp = max(profile.ramp_s, 1e-12)
    shape = np.ones_like(t)
    shape = np.where(tau >= ramp_down_at, 1.0 - (tau - ramp_down_at) / ramp, shape)
    shape = np.where(tau >= dip_at, 0.0, shape)
    shape = np.where(tau >= ramp_up_at, (tau - ramp_up_at) / ramp, shape)
    binned: FloatArray = np.clip(shape, 0.0, 1.0).reshape(layout.n_steps, -1).mean(axis=1)
    return binned


def _node_power_w(
    profile: GpuNodeProfile, shape: FloatArray, nodes: int, rng: np.random.Generator
) -> FloatArray:
    """(T, nodes) watts: each node between its dip level and its compute level."""
    n = shape.shape[0]
    base_w = rng.uniform(profile.compute_low_w, profile.compute_high_w, nodes)
    compute_w = np.clip(
        base_w + profile.compute_noise_w * rng.standard_normal((n, nodes)),
        profile.compute_low_w,
        profile.compute_high_w,
    )
    dip_w = np.maximum(profile.dip_w + profile.dip_noise_w * rng.standard_normal((n, nodes)), 0.0)
    power: FloatArray = dip_w + (compute_w - dip_w) * shape[:, np.newaxis]
    return power


def _check(ok: bool, key: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(key, value, why)
