"""The Trace value type: arrays checked on construction with errors that say what and where."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain.errors import TraceError
from wattwheel.domain.trace import Trace

TS = np.array([0.0, 60.0, 120.0, 180.0])
RACKS = ("r1", "r2")


def power() -> np.ndarray:
    return np.array([[1000.0, 2000.0], [1100.0, 2100.0], [1200.0, 2200.0], [1300.0, 2300.0]])


def test_a_good_trace() -> None:
    t = Trace(TS, RACKS, power())
    assert t.n_steps == 4 and t.step_s == 60.0
    assert t.rack_index("r2") == 1
    np.testing.assert_allclose(t.select(["r2"]).power_w[:, 0], [2000, 2100, 2200, 2300])
    w = t.window(1, 3)
    np.testing.assert_allclose(w.timestamps_s, [60.0, 120.0])


def bad(ts: np.ndarray = TS, p: np.ndarray | None = None, crit: np.ndarray | None = None,
        racks: tuple[str, ...] = RACKS) -> None:  # fmt: skip
    Trace(ts, racks, power() if p is None else p, crit)


def with_value(row: int, col: int, value: float) -> np.ndarray:
    p = power()
    p[row, col] = value
    return p


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"p": with_value(2, 1, np.nan)}, r"NaN or infinite for rack 'r2' at t=120"),
        ({"p": with_value(1, 0, np.inf)}, r"NaN or infinite for rack 'r1' at t=60"),
        ({"p": with_value(3, 0, -5.0)}, r"negative for rack 'r1' at t=180"),
        ({"p": with_value(0, 1, 5e8)}, r"absurd"),
        ({"ts": np.array([0.0, 60.0, 60.0, 120.0])}, r"duplicate timestamp 60"),
        ({"ts": np.array([0.0, 120.0, 60.0, 180.0])}, r"out of order"),
        ({"ts": np.array([0.0, 60.0, 120.0, 200.0])}, r"irregular time step"),
        ({"ts": np.array([0.0, np.nan, 120.0, 180.0])}, r"timestamps contain NaN"),
        ({"racks": ("r1", "r1")}, r"not unique"),
        ({"p": power()[:, :1]}, r"shape"),
        ({"crit": power() * 1.5}, r"critical_w exceeds power_w for rack 'r1' at t=0"),
        ({"crit": power()[:2]}, r"same shape"),
    ],
)
def test_bad_arrays_name_what_and_where(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(TraceError, match=needle):
        bad(**kwargs)  # type: ignore[arg-type]


def test_unknown_rack_lists_the_racks_there_are() -> None:
    with pytest.raises(TraceError, match=r"'r9' is not in the trace .*r1, r2"):
        Trace(TS, RACKS, power()).rack_index("r9")


def test_a_single_row_has_no_step() -> None:
    with pytest.raises(TraceError, match="at least two"):
        _ = Trace(TS[:1], RACKS, power()[:1]).step_s
