"""Long-format trace files: exact round trips, and every bad input named by file, line and rack."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.domain.errors import TraceError
from wattwheel.domain.trace import Trace
from wattwheel.sim.trace_io import read_trace, write_trace

GOOD = """timestamp,rack_id,power_w
0,r1,100.0
0,r2,200.0
10,r1,110.0
10,r2,210.0
20,r1,120.0
20,r2,220.0
"""


def _write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _trace(n_t: int = 50, racks: tuple[str, ...] = ("a", "b", "c")) -> Trace:
    rng = np.random.default_rng(7)
    power = rng.uniform(1e3, 5e5, (n_t, len(racks)))
    return Trace(
        timestamps_s=1.7e9 + 10.0 * np.arange(n_t, dtype=np.float64),
        rack_ids=racks,
        power_w=power,
        critical_w=power * rng.uniform(0, 1, power.shape),
        exog={"inlet_temp_c": rng.normal(25, 3, power.shape)},
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    trace = _trace()
    back = read_trace(write_trace(trace, tmp_path / "t.csv"))
    assert back.rack_ids == trace.rack_ids
    np.testing.assert_array_equal(back.timestamps_s, trace.timestamps_s)
    np.testing.assert_array_equal(back.power_w, trace.power_w)
    assert back.critical_w is not None and trace.critical_w is not None
    np.testing.assert_array_equal(back.critical_w, trace.critical_w)
    np.testing.assert_array_equal(back.exog["inlet_temp_c"], trace.exog["inlet_temp_c"])


def test_round_trip_iso_timestamps(tmp_path: Path) -> None:
    trace = _trace(racks=("z", "a"))  # rack order is file order, not sorted
    path = write_trace(trace, tmp_path / "t.csv", timestamp_format="iso")
    assert "T" in path.read_text().splitlines()[1].split(",")[0]
    back = read_trace(path)
    assert back.rack_ids == ("z", "a")
    np.testing.assert_array_equal(back.timestamps_s, trace.timestamps_s)


def test_reads_hand_written_file(tmp_path: Path) -> None:
    trace = read_trace(_write(tmp_path, GOOD))
    assert trace.rack_ids == ("r1", "r2")
    np.testing.assert_array_equal(trace.timestamps_s, [0, 10, 20])
    np.testing.assert_array_equal(trace.power_w, [[100, 200], [110, 210], [120, 220]])
    assert trace.critical_w is None and dict(trace.exog) == {}


def test_rack_major_row_order_is_fine(tmp_path: Path) -> None:
    text = "timestamp,rack_id,power_w\n0,r1,1\n10,r1,2\n0,r2,3\n10,r2,4\n"
    trace = read_trace(_write(tmp_path, text))
    np.testing.assert_array_equal(trace.power_w, [[1, 3], [2, 4]])


def test_iso_with_offset_is_converted_to_utc(tmp_path: Path) -> None:
    text = (
        "timestamp,rack_id,power_w\n"
        "2024-01-01T01:00:00+01:00,r,1\n2024-01-01T00:00:10Z,r,2\n2024-01-01 00:00:20,r,3\n"
    )
    trace = read_trace(_write(tmp_path, text))
    t0 = 1704067200.0  # 2024-01-01T00:00:00Z
    np.testing.assert_array_equal(trace.timestamps_s, [t0, t0 + 10, t0 + 20])


def test_nixtla_columns(tmp_path: Path) -> None:
    text = "unique_id,ds,y\nr1,2024-01-01 00:00:00,5\nr1,2024-01-01 00:05:00,6\n"
    trace = read_trace(_write(tmp_path, text))
    assert trace.rack_ids == ("r1",)
    assert trace.step_s == 300.0
    np.testing.assert_array_equal(trace.power_w[:, 0], [5, 6])


def test_extra_columns_become_exog(tmp_path: Path) -> None:
    text = "timestamp,rack_id,power_w,critical_w,temp_c\n0,r,10,4,20.5\n1,r,11,4,21\n"
    trace = read_trace(_write(tmp_path, text))
    assert trace.critical_w is not None
    np.testing.assert_array_equal(trace.critical_w[:, 0], [4, 4])
    np.testing.assert_array_equal(trace.exog["temp_c"][:, 0], [20.5, 21])


BAD_CASES = {
    "missing column": ("timestamp,rack_id,watts\n0,r,1\n", r"missing column\(s\) power_w"),
    "header only": ("timestamp,rack_id,power_w\n", "no rows"),
    "unparsable timestamp": (
        "timestamp,rack_id,power_w\n0,r,1\nyesterday,r,2\n",
        r"line 3: rack 'r': unparsable timestamp 'yesterday'",
    ),
    "empty power": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,\n",
        r"line 3: rack 'r': power_w is empty",
    ),
    "NaN power": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,NaN\n",
        r"line 3: rack 'r': power_w is not a finite number \('NaN'\)",
    ),
    "text power": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,1.2kW\n",
        r"line 3: rack 'r': power_w is not a finite number \('1.2kW'\)",
    ),
    "negative power": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,-5\n",
        r"line 3: rack 'r': power_w is negative: -5 W",
    ),
    "absurd power": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,1e12\n",
        r"line 3: rack 'r': power_w is absurd",
    ),
    "duplicate row": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,2\n10,r,2\n20,r,3\n",
        r"line 3: rack 'r': duplicate row for timestamp 10 s: also on line 4",
    ),
    "out of order": (
        "timestamp,rack_id,power_w\n0,a,1\n0,b,1\n20,a,3\n10,a,2\n10,b,2\n20,b,3\n",
        r"line 5: rack 'a': timestamp 10 s is out of order: after 20 s on line 4",
    ),
    "gap in one rack": (
        "timestamp,rack_id,power_w\n0,a,1\n0,b,1\n10,a,2\n20,a,3\n20,b,3\n",
        r"rack 'b': missing 1 timestamp\(s\) that other racks have, first at 10 s",
    ),
    "irregular step": (
        "timestamp,rack_id,power_w\n0,r,1\n10,r,2\n25,r,3\n35,r,4\n",
        r"line 4: irregular time step: 15 s from 10 to 25 s, expected 10 s",
    ),
    "empty rack id": ("timestamp,rack_id,power_w\n0,r,1\n10,,2\n", r"line 3: empty rack_id"),
    "critical above power": (
        "timestamp,rack_id,power_w,critical_w\n0,r,1,1\n10,r,2,3\n",
        r"line 3: rack 'r': critical_w 3 W exceeds power_w 2 W",
    ),
    "non-numeric exog": (
        "timestamp,rack_id,power_w,site\n0,r,1,x\n10,r,2,y\n",
        r"line 2: rack 'r': site is not a finite number \('x'\)",
    ),
    "single timestamp": ("timestamp,rack_id,power_w\n0,r,1\n", "at least two"),
    "nixtla and ours": ("unique_id,ds,y,power_w\nr,0,1,1\n", "ambiguous"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_named(tmp_path: Path, case: str) -> None:
    text, pattern = BAD_CASES[case]
    path = _write(tmp_path, text)
    with pytest.raises(TraceError, match=pattern) as info:
        read_trace(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        read_trace(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="is empty"):
        read_trace(_write(tmp_path, ""))


def test_loses_nothing_row_count(tmp_path: Path) -> None:
    # Every row of a valid file is one cell of the grid: T x R == number of data lines.
    trace = _trace(n_t=300, racks=("a", "b", "c", "d"))
    path = write_trace(trace, tmp_path / "t.csv")
    n_lines = len(path.read_text().splitlines()) - 1
    back = read_trace(path)
    assert back.power_w.size == n_lines == 1200


def test_parquet_round_trip_or_clear_error_without_pyarrow(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(TraceError, match="pyarrow"):
            write_trace(_trace(), tmp_path / "t.parquet")
    else:
        back = read_trace(write_trace(_trace(), tmp_path / "t.parquet"))
        np.testing.assert_array_equal(back.power_w, _trace().power_w)


def test_unparsable_iso_timestamp_named(tmp_path: Path) -> None:
    text = "timestamp,rack_id,power_w\n2024-01-01T00:00:00Z,r,1\n2024-13-45T00:00:00Z,r,2\n"
    with pytest.raises(TraceError, match=r"line 3: rack 'r': unparsable timestamp '2024-13-45"):
        read_trace(_write(tmp_path, text))


def test_trailing_blank_lines_and_bom_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n\n")
    trace = read_trace(path)
    assert trace.rack_ids == ("r1", "r2") and trace.n_steps == 3


def test_blank_line_inside_keeps_line_numbers_honest(tmp_path: Path) -> None:
    text = "timestamp,rack_id,power_w\n0,r,1\n\n10,r,2\n"
    with pytest.raises(TraceError, match="line 3: blank line between data lines"):
        read_trace(_write(tmp_path, text))


_rack_names = (
    st.text(alphabet=st.sampled_from("abcXYZ019_-.:, \"'é"), min_size=1, max_size=8)
    .map(str.strip)
    .filter(lambda s: s not in ("", "nan", "NaN"))
)


@settings(max_examples=40, deadline=None)
@given(
    racks=st.lists(_rack_names, min_size=1, max_size=4, unique=True),
    n_t=st.integers(2, 6),
    step_s=st.sampled_from([0.5, 1.0, 10.0, 300.0]),
    t0=st.floats(-1e9, 2e9, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    racks: list[str],
    n_t: int,
    step_s: float,
    t0: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    power = rng.uniform(0, 1e6, (n_t, len(racks))) * rng.integers(0, 2, (n_t, len(racks)))
    trace = Trace(t0 + step_s * np.arange(n_t, dtype=np.float64), tuple(racks), power)
    path = write_trace(trace, tmp_path_factory.mktemp("rt") / "t.csv")
    back = read_trace(path)
    assert back.rack_ids == trace.rack_ids
    np.testing.assert_array_equal(back.timestamps_s, trace.timestamps_s)
    np.testing.assert_array_equal(back.power_w, trace.power_w)
