"""The synthetic AI-training trace shows the published waveform, measured from the output."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.sim.synthetic import AiTrainingLayout, GpuNodeProfile, synthesize_ai_training

NODES = 4


def _low_runs(per_node_w: np.ndarray, threshold_w: float = 3000.0) -> list[tuple[int, int]]:
    """(first step, length) of each run of consecutive steps below ``threshold_w`` per node."""
    low = np.concatenate([[False], per_node_w < threshold_w, [False]])
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def test_dip_period_depth_and_ramps_measured() -> None:
    trace = synthesize_ai_training(AiTrainingLayout(NODES, racks=2, duration_s=3600, seed=3))
    assert trace.step_s == 1.0 and trace.n_steps == 3600
    per_node = trace.power_w[:, 0] / NODES
    runs = _low_runs(per_node)
    starts = np.array([a for a, _ in runs])
    # a dip every 8 s, lasting 1 s, all through the hour
    assert len(runs) == 3600 // 8
    assert set(np.diff(starts).tolist()) == {8}
    assert {n for _, n in runs} == {1}
    # depth: ~1.6 kW per node in the dip
    dips = per_node[starts]
    assert dips.mean() == pytest.approx(1600, rel=0.03)
    assert dips.max() < 1800
    # compute plateau: 6-7.5 kW per node
    computing = per_node > 5500
    assert computing.mean() == pytest.approx(5 / 8, abs=0.01)
    assert per_node[computing].min() >= 6000 - 1e-6
    assert per_node[computing].max() <= 7500 + 1e-6
    # ~1 s ramps: the step on each side of a dip is part-way, the next one out is computing
    inner = starts[(starts >= 2) & (starts < 3600 - 2)]
    for side in (-1, 1):
        ramp = per_node[inner + side]
        assert np.all((ramp > 2500) & (ramp < 5500))
        assert np.all(per_node[inner + 2 * side] > 5500)


def test_racks_are_synchronised_so_the_site_swings() -> None:
    trace = synthesize_ai_training(AiTrainingLayout(NODES, racks=3, duration_s=600, seed=1))
    dips = [tuple(a for a, _ in _low_runs(trace.power_w[:, k] / NODES)) for k in range(3)]
    assert dips[0] == dips[1] == dips[2]
    site_kw = trace.power_w.sum(axis=1) / 1e3
    # 12 nodes each swinging >= 6 - 1.7 kW in one step-pair
    assert site_kw.max() - site_kw.min() > 12 * 4.3
    assert np.max(np.abs(np.diff(site_kw))) > 12 * 2.0  # kW per second at the grid


def test_rack_offset_shifts_the_schedule() -> None:
    layout = AiTrainingLayout(NODES, racks=2, duration_s=200, seed=1, rack_offset_s=3)
    trace = synthesize_ai_training(layout)
    a = np.array([s for s, _ in _low_runs(trace.power_w[:, 0] / NODES)])
    b = np.array([s for s, _ in _low_runs(trace.power_w[:, 1] / NODES)])
    assert set(((b - a[: b.size]) % 8).tolist()) == {3}


def test_jitter_keeps_the_mean_period() -> None:
    profile = GpuNodeProfile(period_jitter_s=0.4)
    trace = synthesize_ai_training(AiTrainingLayout(NODES, 1, duration_s=4000, seed=5), profile)
    starts = np.array([a for a, _ in _low_runs(trace.power_w[:, 0] / NODES, 4000)])
    gaps = np.diff(starts)
    assert gaps.mean() == pytest.approx(8.0, abs=0.1)
    assert gaps.std() > 0.1  # not a metronome any more


def test_seeded_and_deterministic() -> None:
    layout = AiTrainingLayout(NODES, racks=2, duration_s=120, seed=9)
    a, b = synthesize_ai_training(layout), synthesize_ai_training(layout)
    np.testing.assert_array_equal(a.power_w, b.power_w)
    other = synthesize_ai_training(AiTrainingLayout(NODES, racks=2, duration_s=120, seed=10))
    assert not np.array_equal(a.power_w, other.power_w)
    assert a.rack_ids == ("gpu01", "gpu02")
    np.testing.assert_array_equal(a.timestamps_s, np.arange(120.0))


def test_finer_step_resolves_the_dip() -> None:
    trace = synthesize_ai_training(AiTrainingLayout(NODES, 1, duration_s=80, step_s=0.25))
    runs = _low_runs(trace.power_w[:, 0] / NODES)
    # 1 s dip + the lower halves of two 1 s ramps ~ 1.6 s below 3 kW at 4 steps per second
    assert {n for _, n in runs} <= {6, 7}


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: GpuNodeProfile(period_s=2.5), "period_s"),
        (lambda: GpuNodeProfile(dip_w=7000), "compute_low_w"),
        (lambda: GpuNodeProfile(dip_s=0), "dip_s"),
        (lambda: AiTrainingLayout(0, 1, 100), "nodes"),
        (lambda: AiTrainingLayout(1, 0, 100), "racks"),
        (lambda: AiTrainingLayout(1, 1, 1), "duration_s"),
    ],
)
def test_bad_parameters(build: Callable[[], object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build()
