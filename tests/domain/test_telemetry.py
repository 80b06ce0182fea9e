"""check_sample names each kind of bad reading."""

from __future__ import annotations

import math

import pytest

from wattwheel.domain.telemetry import FakeTelemetrySource, PowerSample, check_sample

NOW_S = 1_700_000_000.0


def _sample(power_w: float = 400.0, ts: float = NOW_S - 1.0, kind: str = "server") -> PowerSample:
    return PowerSample("test", "r1", "s1", ts, power_w, kind)


def test_good_sample_passes() -> None:
    assert check_sample(_sample(), NOW_S, max_age_s=10, max_power_w=5000) is None


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (_sample(power_w=math.nan), "nan"),
        (_sample(power_w=math.inf), "nan"),
        (_sample(ts=math.nan), "nan"),
        (_sample(power_w=-1.0), "negative"),
        (_sample(power_w=5001.0), "absurd"),
        (_sample(ts=NOW_S - 11.0), "stale"),
        (_sample(ts=NOW_S + 60.0), "future"),
        (_sample(kind="toaster"), "kind"),
    ],
)
def test_bad_samples_are_named(sample: PowerSample, code: str) -> None:
    problem = check_sample(sample, NOW_S, max_age_s=10, max_power_w=5000)
    assert problem is not None
    assert problem.code == code
    assert "r1" in problem.message


async def test_fake_source_returns_batches_in_order() -> None:
    source = FakeTelemetrySource([[_sample(1.0)]])
    source.push([_sample(2.0)])
    assert [s.power_w for s in await source.read()] == [1.0]
    assert [s.power_w for s in await source.read()] == [2.0]
    assert await source.read() == []
