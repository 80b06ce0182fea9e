"""Realistic AI-training power traces: several concurrent jobs with real job events.

The metronome of :mod:`wattwheel.sim.synthetic` (one job, perfectly synchronised, no events)
understates what a site sees. Production traces (Choukse et al., "Power Stabilization for AI
Training Datacenters", arXiv 2508.14318, Fig. 1 and §2; NVIDIA, "How new GB300 NVL72 features
provide steady power for AI", 2025) show in addition:

* iteration period jitter (``period_jitter_fraction``: Gaussian sd of each iteration's length,
  as a fraction of the period);
* partial desynchronisation across racks: every rack of a job ends an iteration together (the
  all-reduce waits for the slowest), but faster racks finish computing earlier and idle at the
  communication level while they wait (``rack_skew_s``: per iteration and rack, the extra
  waiting time is ``|N(0, rack_skew_s)|``);
* job start (a warm-up at idle while data and weights load, then the first iteration jumps to
  full power) and job stop (back to idle at once);
* checkpoint stalls (every ``checkpoint_every_s`` the job stops computing for
  ``checkpoint_stall_s`` at the stall level while the state is written to storage);
* a failure (at ``failure_at_s`` the whole job drops to idle at once) and a restart after
  ``restart_delay_s`` (a new warm-up, then iterations again);
* several concurrent jobs with their own periods on shared racks.

Node power levels (:class:`NodePower`): an 8-GPU H100 node swings between about 30 % and 100 %
of about 10 kW within an iteration of a few seconds (DGX H100: 10.2 kW maximum, NVIDIA data
sheet; Choukse et al. Fig. 1). Each node's compute level is drawn once, uniform in
``[compute_low_fraction, 1] x peak_w``; the per-step meter noise is Gaussian.

The lever "ramp-up limit at job start" (NVIDIA GB300 power smoothing; commanded by the HPMC
through the scheduler hook, ``docs/scheduler-hook.md``): with ``start_ramp_kw_per_s`` set, each
job (re)start is power-capped on each of its racks by an envelope rising from the nodes' idle
draw at that many kW/s (the job launcher sets GPU power limits and lifts them gradually), until
the envelope no longer binds. A job already running at the trace start is not ramped. The work
the cap holds back is *delayed*, not lost: :func:`synthesize_jobs_ramped` reports it
(``delayed_work_kwh``, and ``delay_s``: that energy over the job's full compute power, summed
over starts). Simplification: the iteration schedule is not shifted by the delay (the job's
later events keep their times), so the trace after a ramp is the unramped one.

The waveform is evaluated on a fine grid (``oversample`` points per step) and averaged over
each step, as a power meter with that step reports. Everything is drawn from
``numpy.random.default_rng(seed)``: same arguments, same trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.trace import FloatArray, Trace

IntArray = NDArray[np.int64]

#: Node modes on the fine grid.
IDLE, STALL, ACTIVE = 0, 1, 2


@dataclass(frozen=True)
class NodePower:
    """Power levels of one 8-GPU node (watts) and its ramp time (s)."""

    peak_w: float = 10_000.0
    compute_low_fraction: float = 0.85
    comm_fraction: float = 0.30
    stall_fraction: float = 0.30
    idle_fraction: float = 0.20
    ramp_s: float = 0.2
    noise_w: float = 150.0

    def __post_init__(self) -> None:
        _check(self.peak_w > 0, "peak_w", self.peak_w, "must be > 0 W")
        for key in ("comm_fraction", "stall_fraction", "idle_fraction"):
            value = getattr(self, key)
            _check(0 <= value <= self.compute_low_fraction, key, value, "must be in [0, low]")
        _check(
            self.compute_low_fraction <= 1,
            "compute_low_fraction",
            self.compute_low_fraction,
            "must be <= 1",
        )
        _check(self.ramp_s >= 0, "ramp_s", self.ramp_s, "must be >= 0 s")
        _check(self.noise_w >= 0, "noise_w", self.noise_w, "must be >= 0 W")


@dataclass(frozen=True)
class JobSpec:
    """One training job: where it runs and what happens to it (seconds from the trace start).

    ``nodes`` maps a rack index (0-based) to how many of that rack's nodes the job uses.
    ``start_s <= 0`` means the job is already running when the trace starts (no warm-up).
    """

    name: str
    nodes: tuple[tuple[int, int], ...]
    period_s: float
    comm_s: float
    start_s: float = 0.0
    stop_s: float = float("inf")
    warmup_s: float = 15.0
    period_jitter_fraction: float = 0.03
    rack_skew_s: float = 0.15
    checkpoint_every_s: float = float("inf")
    checkpoint_stall_s: float = 0.0
    failure_at_s: float | None = None
    restart_delay_s: float = 0.0

    def __post_init__(self) -> None:
        _check(self.period_s > 0, "period_s", self.period_s, "must be > 0 s")
        _check(0 < self.comm_s < self.period_s, "comm_s", self.comm_s, "must be in (0, period)")
        _check(self.stop_s > self.start_s, "stop_s", self.stop_s, "must be after start_s")
        _check(bool(self.nodes), "nodes", self.nodes, "a job runs on at least one node")
        for key in ("warmup_s", "period_jitter_fraction", "rack_skew_s", "checkpoint_stall_s"):
            _check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        _check(self.checkpoint_every_s > 0, "checkpoint_every_s", self.checkpoint_every_s, "> 0")

    def segments(self) -> list[tuple[float, float, float]]:
        """Running segments as (start, first iteration, end): before and after a failure."""
        warm = self.warmup_s if self.start_s > 0 else 0.0
        if self.failure_at_s is None or not self.start_s < self.failure_at_s < self.stop_s:
            return [(self.start_s, self.start_s + warm, self.stop_s)]
        again = self.failure_at_s + self.restart_delay_s
        out = [(self.start_s, self.start_s + warm, self.failure_at_s)]
        if again < self.stop_s:
            out.append((again, again + self.warmup_s, self.stop_s))
        return out


@dataclass(frozen=True)
class JobsLayout:
    """Racks, nodes per rack, trace length and metering step."""

    racks: int
    nodes_per_rack: int
    duration_s: float
    step_s: float = 0.1
    seed: int = 0
    oversample: int = 4
    rack_prefix: str = "gpu"

    def __post_init__(self) -> None:
        _check(self.racks >= 1, "racks", self.racks, "must be >= 1")
        _check(self.nodes_per_rack >= 1, "nodes", self.nodes_per_rack, "must be >= 1")
        _check(self.step_s > 0, "step_s", self.step_s, "must be > 0 s")
        _check(self.duration_s >= 2 * self.step_s, "duration_s", self.duration_s, "too short")
        _check(self.oversample >= 1, "oversample", self.oversample, "must be >= 1")

    @property
    def n_steps(self) -> int:
        return int(round(self.duration_s / self.step_s))


def default_jobs(racks: int, nodes_per_rack: int, duration_s: float) -> tuple[JobSpec, ...]:
    """The documented job mix (scenario ``ai-training-realistic``), scaled to the trace length.

    * job ``A`` (large): every rack but the last, all nodes; period 5 s, 1 s communication;
      starts at 3 % of the trace, checkpoints every 20 % (10 s stall), fails at 55 % and restarts
      45 s later;
    * job ``B``: half the last rack's nodes, already running at the start; period 2.5 s, 0.6 s
      communication; checkpoints every 25 % (8 s stall); stops at 80 %;
    * job ``C``: the other half of the last rack, starts at 40 %; period 8 s, 1.5 s
      communication.
    """
    _check(racks >= 2, "racks", racks, "the job mix needs at least 2 racks")
    _check(nodes_per_rack >= 2, "nodes", nodes_per_rack, "the job mix needs at least 2 nodes")
    d = duration_s
    half = nodes_per_rack // 2
    last = racks - 1
    job_a = JobSpec(
        "A",
        tuple((k, nodes_per_rack) for k in range(last)),
        period_s=5.0,
        comm_s=1.0,
        start_s=0.03 * d,
        checkpoint_every_s=0.2 * d,
        checkpoint_stall_s=10.0,
        failure_at_s=0.55 * d,
        restart_delay_s=45.0,
    )
    job_b = JobSpec(
        "B",
        ((last, half),),
        period_s=2.5,
        comm_s=0.6,
        start_s=0.0,
        stop_s=0.8 * d,
        checkpoint_every_s=0.25 * d,
        checkpoint_stall_s=8.0,
    )
    job_c = JobSpec(
        "C", ((last, nodes_per_rack - half),), period_s=8.0, comm_s=1.5, start_s=0.4 * d
    )
    return (job_a, job_b, job_c)


@dataclass(frozen=True)
class RampedTrace:
    """A trace with job starts ramp-limited, and what the ramp cost.

    Attributes:
        trace: the (T, R) trace as metered.
        delayed_work_kwh: energy the start envelopes held back (work done later).
        delay_s: that energy over each job's full compute power, summed over (re)starts.
        starts: how many (re)starts were ramped.
    """

    trace: Trace
    delayed_work_kwh: float
    delay_s: float
    starts: int


def synthesize_jobs(
    layout: JobsLayout, jobs: Sequence[JobSpec], node: NodePower | None = None
) -> Trace:
    """A (T, R) trace of the given jobs on ``layout``'s racks (see module docstring)."""
    return synthesize_jobs_ramped(layout, jobs, node, None).trace


def synthesize_jobs_ramped(
    layout: JobsLayout,
    jobs: Sequence[JobSpec],
    node: NodePower | None,
    start_ramp_kw_per_s: float | None,
) -> RampedTrace:
    """The trace of :func:`synthesize_jobs`, with each job (re)start ramp-limited at
    ``start_ramp_kw_per_s`` per rack when given (None: no lever; the same draws either way)."""
    _check(
        start_ramp_kw_per_s is None or start_ramp_kw_per_s > 0,
        "start_ramp_kw_per_s",
        start_ramp_kw_per_s,
        "must be > 0 kW/s",
    )
    node = node or NodePower()
    rng = np.random.default_rng(layout.seed)
    n = layout.n_steps
    used = np.zeros(layout.racks, dtype=np.int64)
    power_w = np.zeros((n, layout.racks))
    n_starts, delayed_wh, delay_s = 0, 0.0, 0.0
    for job in jobs:
        racks = [k for k, _ in job.nodes]
        for k, count in job.nodes:
            _check(0 <= k < layout.racks, "rack", k, f"job {job.name}: no such rack")
            used[k] += count
        modes, shapes = _job_waveform(job, layout, racks, node.ramp_s, rng)
        starts = _ramped_starts(job) if start_ramp_kw_per_s is not None else []
        n_starts += len(starts)
        job_compute_w = 0.0
        job_held_wh = 0.0
        for j, (k, count) in enumerate(job.nodes):
            cap = None
            if starts and start_ramp_kw_per_s is not None:
                cap = _start_envelope_w(
                    starts,
                    count * node.idle_fraction * node.peak_w,
                    1000.0 * start_ramp_kw_per_s,
                    layout,
                )
            rack_w, compute_w, held_wh = _nodes_power_w(
                node, modes[j], shapes[j], count, layout, rng, cap
            )
            power_w[:, k] += rack_w
            job_compute_w += compute_w
            job_held_wh += held_wh
        delayed_wh += job_held_wh
        if job_compute_w > 0:
            delay_s += job_held_wh * 3600.0 / job_compute_w
    for k in range(layout.racks):
        over = used[k] > layout.nodes_per_rack
        _check(not over, "nodes", int(used[k]), f"rack {k} has {layout.nodes_per_rack} nodes")
        # Nodes no job uses idle.
        power_w[:, k] += (layout.nodes_per_rack - used[k]) * node.idle_fraction * node.peak_w
    width = max(2, len(str(layout.racks)))
    rack_ids = tuple(f"{layout.rack_prefix}{k + 1:0{width}d}" for k in range(layout.racks))
    timestamps_s = np.round(layout.step_s * np.arange(n, dtype=np.float64), 6)
    trace = Trace(timestamps_s, rack_ids, np.round(power_w, 1))
    return RampedTrace(trace, delayed_wh / 1000.0, delay_s, n_starts)


def _ramped_starts(job: JobSpec) -> list[float]:
    """The (re)starts a ramp-up limit applies to: not a job running when the trace starts."""
    return [seg_start for seg_start, _, _ in job.segments() if seg_start > 0]


def _start_envelope_w(
    starts: list[float], base_w: float, rate_w_per_s: float, layout: JobsLayout
) -> FloatArray:
    """(fine grid,) the most the job's nodes on one rack may draw: from each start, their
    idle draw plus ``rate`` x time since (no limit before the first start)."""
    dt = layout.step_s / layout.oversample
    t = (np.arange(layout.n_steps * layout.oversample, dtype=np.float64) + 0.5) * dt
    cap = np.full(t.shape, np.inf)
    for s in starts:
        cap = np.where(t >= s, base_w + rate_w_per_s * (t - s), cap)
    return cap


def _job_waveform(
    job: JobSpec, layout: JobsLayout, racks: list[int], ramp_s: float, rng: np.random.Generator
) -> tuple[list[IntArray], list[FloatArray]]:
    """Per rack of the job, the fine-grid mode and compute shape (1 = computing)."""
    dt = layout.step_s / layout.oversample
    t = (np.arange(layout.n_steps * layout.oversample, dtype=np.float64) + 0.5) * dt
    modes = [np.full(t.shape, IDLE, dtype=np.int64) for _ in racks]
    shapes = [np.zeros_like(t) for _ in racks]
    for seg_start, first_s, seg_end in job.segments():
        starts, ends = _iterations(job, first_s, min(seg_end, layout.duration_s), rng)
        running = (t >= seg_start) & (t < seg_end)
        for j in range(len(racks)):
            modes[j][running] = STALL  # warm-up and checkpoint gaps
        if starts.size == 0:
            continue
        skew = np.abs(rng.normal(0.0, job.rack_skew_s, (starts.size, len(racks))))
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = running & (idx >= 0)
        idx_c = np.clip(idx, 0, starts.size - 1)
        in_iter = ok & (t < ends[idx_c])
        tau = t - starts[idx_c]
        length = ends[idx_c] - starts[idx_c]
        ramp = max(ramp_s, 1e-9)
        for j in range(len(racks)):
            down_at = length - job.comm_s - skew[idx_c, j]
            up = np.minimum(tau / ramp, 1.0)
            down = np.clip(1.0 - (tau - down_at) / ramp, 0.0, 1.0)
            shape = np.where(tau < down_at, up, np.minimum(up, down))
            modes[j][in_iter] = ACTIVE
            shapes[j][in_iter] = shape[in_iter]
    return modes, shapes


def _iterations(
    job: JobSpec, first_s: float, end_s: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Start and end times of a segment's iterations, with a gap after each checkpoint."""
    starts: list[float] = []
    ends: list[float] = []
    now, since_checkpoint = first_s, 0.0
    shortest = job.comm_s + 1e-3
    while now < end_s:
        length = max(job.period_s * (1 + job.period_jitter_fraction * rng.standard_normal()), 0)
        length = max(length, shortest)
        starts.append(now)
        ends.append(now + length)
        now += length
        since_checkpoint += length
        if since_checkpoint >= job.checkpoint_every_s:
            now += job.checkpoint_stall_s
            since_checkpoint = 0.0
    return np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)


def _nodes_power_w(
    node: NodePower,
    mode: IntArray,
    shape: FloatArray,
    count: int,
    layout: JobsLayout,
    rng: np.random.Generator,
    cap_w: FloatArray | None = None,
) -> tuple[FloatArray, float, float]:
    """(T,) watts of ``count`` nodes sharing one schedule, averaged over each meter step;
    their full compute power (W); and the energy (Wh) a start envelope ``cap_w`` held back."""
    compute_w = node.peak_w * rng.uniform(node.compute_low_fraction, 1.0, count).sum()
    comm_w = count * node.comm_fraction * node.peak_w
    fine = np.where(
        mode == ACTIVE,
        comm_w + (compute_w - comm_w) * shape,
        np.where(mode == STALL, count * node.stall_fraction * node.peak_w, 0.0),
    )
    idle = (mode == IDLE) * count * node.idle_fraction * node.peak_w
    drawn = fine + idle
    held_wh = 0.0
    if cap_w is not None:
        capped = np.minimum(drawn, cap_w)
        held_wh = float(np.sum(drawn - capped)) * layout.step_s / layout.oversample / 3600.0
        drawn = capped
    binned: FloatArray = drawn.reshape(layout.n_steps, -1).mean(axis=1)
    noise = node.noise_w * np.sqrt(count) * rng.standard_normal(layout.n_steps)
    out: FloatArray = np.maximum(binned + noise, 0.0)
    return out, float(compute_w), held_wh


def _check(ok: bool, key: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(key, value, why)
