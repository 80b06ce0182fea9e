"""Importers on the real shared data and on small hand-checked files."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError, TraceError
from wattwheel.sim.importers import (
    RackSplit,
    ServerPowerModel,
    import_google_power,
    import_utilization,
)
from wattwheel.sim.synthetic import AiTrainingLayout, synthesize_ai_training
from wattwheel.sim.trace_io import read_trace

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
GOOGLE = DATA / "google-power-2019"
UTIL = DATA / "dc-utilization"
needs_data = pytest.mark.skipif(not GOOGLE.is_dir(), reason="shared data not present")


def _google_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_google(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _small_google(tmp_path: Path, name: str, utils: list[float], t0_us: int = 600_000_000) -> Path:
    rows = [
        {"index": str(i), "time": str(t0_us + i * 300_000_000), "pdu": "pdu1", "util": str(u)}
        for i, u in enumerate(utils)
    ]
    for row in rows:
        row["measured_power_util"] = row.pop("util")
    return _write_google(tmp_path / name, rows, ["index", "time", "pdu", "measured_power_util"])


# ----------------------------------------------------------------------------- google, real data
@needs_data
def test_google_real_files_counts_scaling_and_ids() -> None:
    paths = [GOOGLE / f"cella_pdu{i}.csv" for i in (6, 7, 8)]
    result = import_google_power(paths, rating_kw=1000)
    trace = result.trace
    assert trace.rack_ids == ("cella_pdu6", "cella_pdu7", "cella_pdu8")
    assert trace.power_w.shape == (8928, 3)
    assert trace.step_s == 300.0
    assert result.trimmed_rows == {"cella_pdu6": 0, "cella_pdu7": 0, "cella_pdu8": 0}
    for k, path in enumerate(paths):
        rows = _google_rows(path)
        assert len(rows) == trace.n_steps
        # spot-check first, middle and last rows against the raw text
        for i in (0, len(rows) // 2, len(rows) - 1):
            assert trace.timestamps_s[i] == int(rows[i]["time"]) / 1e6
            assert trace.power_w[i, k] == pytest.approx(float(rows[i]["measured_power_util"]) * 1e6)
    half = import_google_power(paths, rating_kw=500).trace
    np.testing.assert_allclose(half.power_w, trace.power_w / 2)


@needs_data
def test_google_without_pdu_or_index_and_reordered_imports_identically(tmp_path: Path) -> None:
    original = GOOGLE / "cella_pdu7.csv"
    rows = _google_rows(original)
    no_pdu = _write_google(
        tmp_path / "cella_pdu7.csv", rows, ["index", "time", "measured_power_util"]
    )
    (tmp_path / "other").mkdir()
    bare = _write_google(
        tmp_path / "other" / "cella_pdu7.csv", rows, ["measured_power_util", "time"]
    )
    ref = import_google_power([original], 1000).trace
    for path in (no_pdu, bare):
        got = import_google_power([path], 1000).trace
        assert got.rack_ids == ref.rack_ids == ("cella_pdu7",)
        np.testing.assert_array_equal(got.timestamps_s, ref.timestamps_s)
        np.testing.assert_array_equal(got.power_w, ref.power_w)


# ------------------------------------------------------------------------------ google, small
def test_google_hand_checked(tmp_path: Path) -> None:
    path = _small_google(tmp_path, "hall_pdu1.csv", [0.5, 0.75, 1.0])
    trace = import_google_power([path], rating_kw=200).trace
    assert trace.rack_ids == ("hall_pdu1",)
    np.testing.assert_array_equal(trace.timestamps_s, [600.0, 900.0, 1200.0])
    np.testing.assert_array_equal(trace.power_w[:, 0], [100e3, 150e3, 200e3])


def test_google_files_on_a_common_span_are_trimmed_and_reported(tmp_path: Path) -> None:
    a = _small_google(tmp_path, "a.csv", [0.5] * 6)
    b = _small_google(tmp_path, "b.csv", [0.6] * 4, t0_us=600_000_000 + 2 * 300_000_000)
    result = import_google_power([a, b], 1)
    np.testing.assert_array_equal(result.trace.timestamps_s, [1200, 1500, 1800, 2100])
    assert result.trimmed_rows == {"a": 2, "b": 0}
    assert result.filled_steps == {"a": 0, "b": 0}


def test_google_files_on_offset_grids_do_not_align(tmp_path: Path) -> None:
    a = _small_google(tmp_path, "a.csv", [0.5] * 4)
    b = _small_google(tmp_path, "b.csv", [0.5] * 4, t0_us=750_000_000)
    with pytest.raises(TraceError, match="do not align"):
        import_google_power([a, b], 1)


def test_google_files_with_different_steps_do_not_align(tmp_path: Path) -> None:
    a = _small_google(tmp_path, "a.csv", [0.5] * 4)
    b = tmp_path / "b.csv"
    b.write_text("time,measured_power_util\n600000000,0.5\n660000000,0.5\n720000000,0.5\n")
    with pytest.raises(TraceError, match=r"step 60 s differs from 300 s.*do not align"):
        import_google_power([a, b], 1)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("time,util\n0,0.5\n", r"missing column\(s\) measured_power_util"),
        (
            "time,measured_power_util\n0,0.5\n300000000,1.7\n",
            r"line 3: .*1.7 is outside \[0, 1.5\]",
        ),
        ("time,measured_power_util\n0,0.5\n300000000,-0.1\n", r"line 3: .*outside"),
        ("time,measured_power_util\n0,0.5\n300000000,\n", r"line 3: measured_power_util is empty"),
        ("time,measured_power_util\n0,0.5\nsoon,0.5\n", r"line 3: time is not a finite number"),
        (
            "time,measured_power_util\n0,0.5\n300000000,0.5\n900000000,0.5\n",
            r"line 4: gap of 1 missing step\(s\) of 300 s before time 900 s \(pass --fill-gaps",
        ),
        (
            "time,measured_power_util\n0,0.5\n300000000,0.5\n600000000,0.5\n700000000,0.5\n",
            r"line 5: irregular step: time 700 s is 100 s after 600 s, not a multiple of .* 300 s",
        ),
        (
            "time,measured_power_util\n0,0.5\n300000000,0.5\n300000000,0.5\n",
            r"line 4: duplicate time 300 s",
        ),
        (
            "time,measured_power_util\n300000000,0.5\n0,0.5\n",
            r"line 3: out of order time 0 s after 300 s",
        ),
        (
            "time,pdu,measured_power_util\n0,pdu1,0.5\n300000000,pdu2,0.5\n",
            r"line 3: pdu 'pdu2' differs from 'pdu1'",
        ),
    ],
)
def test_google_bad_input(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "x_pdu1.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=pattern):
        import_google_power([path], 1000)


def test_google_fill_gaps_interpolates_short_runs_only(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    rows = [(0, "0.5"), (1, "0.6"), (3, "0.8"), (4, ""), (5, "1.0"), (6, "nan"), (7, "0.9")]
    path.write_text(
        "time,measured_power_util\n" + "".join(f"{i * 300_000_000},{u}\n" for i, u in rows)
    )
    result = import_google_power([path], rating_kw=1, fill_gaps_max_steps=1)
    assert result.filled_steps == {"p": 3}  # t = 2 (time gap), 4 (empty) and 6 (nan)
    np.testing.assert_array_equal(result.trace.timestamps_s, 300.0 * np.arange(8))
    np.testing.assert_allclose(
        result.trace.power_w[:, 0], [500, 600, 700, 800, 900, 1000, 950, 900]
    )
    with pytest.raises(TraceError, match=r"line 5: measured_power_util is empty \(2 such rows\)"):
        import_google_power([path], rating_kw=1)  # without --fill-gaps: an error, nothing lost


def test_google_fill_gaps_refuses_long_runs_and_ends(tmp_path: Path) -> None:
    long_gap = tmp_path / "a.csv"
    long_gap.write_text("time,measured_power_util\n0,0.5\n300000000,0.5\n1200000000,0.5\n")
    with pytest.raises(TraceError, match=r"gap of 2 missing step\(s\).*too long"):
        import_google_power([long_gap], 1, fill_gaps_max_steps=1)
    at_end = tmp_path / "b.csv"
    at_end.write_text("time,measured_power_util\n0,0.5\n300000000,0.5\n600000000,\n")
    with pytest.raises(TraceError, match=r"at the end of the file .* cannot be interpolated"):
        import_google_power([at_end], 1, fill_gaps_max_steps=3)
    runs = tmp_path / "c.csv"
    runs.write_text("time,measured_power_util\n0,0.5\n300000000,\n600000000,\n900000000,0.5\n")
    with pytest.raises(TraceError, match="2 consecutive missing step"):
        import_google_power([runs], 1, fill_gaps_max_steps=1)


def test_google_same_stem_twice_is_an_error(tmp_path: Path) -> None:
    a = _small_google(tmp_path, "p.csv", [0.5] * 3)
    (tmp_path / "sub").mkdir()
    b = _small_google(tmp_path / "sub", "p.csv", [0.5] * 3)
    with pytest.raises(TraceError, match="same rack id 'p'"):
        import_google_power([a, b], 1)


@pytest.mark.parametrize("rating", [0.0, -5.0, float("nan")])
def test_google_bad_rating(tmp_path: Path, rating: float) -> None:
    path = _small_google(tmp_path, "a.csv", [0.5] * 3)
    with pytest.raises(ConfigError, match="rating_kw"):
        import_google_power([path], rating)


# ------------------------------------------------------------------------------------ utilisation
def _util_file(tmp_path: Path, header: str, values: Sequence[float]) -> Path:
    path = tmp_path / "util.csv"
    path.write_text(header + ",other\n" + "".join(f"{v},1\n" for v in values))
    return path


def test_utilization_power_model_hand_checked(tmp_path: Path) -> None:
    path = _util_file(tmp_path, "cpu_util_percent", [0, 50, 100, 25])
    trace = import_utilization(path, 10, ServerPowerModel(idle_w=100, max_w=300), servers=4)
    assert trace.rack_ids == ("rack01",)
    np.testing.assert_array_equal(trace.timestamps_s, [0, 10, 20, 30])
    # 4 x (100 + 200 u): u = 0, .5, 1, .25
    np.testing.assert_allclose(trace.power_w[:, 0], [400, 800, 1200, 600])


def test_utilization_absolute_column_is_normalised_by_its_max(tmp_path: Path) -> None:
    path = _util_file(tmp_path, "cpu_usage", [2e6, 4e6, 8e6])
    trace = import_utilization(path, 300, ServerPowerModel(0, 1000), servers=1)
    np.testing.assert_allclose(trace.power_w[:, 0], [250, 500, 1000])


def test_utilization_fraction_column_and_window(tmp_path: Path) -> None:
    path = _util_file(tmp_path, "load", [0.1, 0.2, 0.3, 0.4, 0.5])
    trace = import_utilization(
        path, 10, ServerPowerModel(0, 100), servers=2, column="load", start_row=1, rows=3
    )
    np.testing.assert_array_equal(trace.timestamps_s, [10, 20, 30])  # original time base
    np.testing.assert_allclose(trace.power_w[:, 0], [40, 60, 80])


def test_utilization_split_racks_servers_and_lag(tmp_path: Path) -> None:
    values = [10, 20, 30, 40, 50]
    path = _util_file(tmp_path, "cpu_util_percent", values)
    model = ServerPowerModel(100, 200)
    split = RackSplit(racks=3, lag_steps=1, noise=0.0)
    trace = import_utilization(path, 10, model, servers=10, split=split)
    assert trace.rack_ids == ("rack01", "rack02", "rack03")
    u = np.array(values) / 100
    lag1 = np.array([0.1, 0.1, 0.2, 0.3, 0.4])
    lag2 = np.array([0.1, 0.1, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(trace.power_w[:, 0], 4 * (100 + 100 * u))  # 10 = 4 + 3 + 3
    np.testing.assert_allclose(trace.power_w[:, 1], 3 * (100 + 100 * lag1))
    np.testing.assert_allclose(trace.power_w[:, 2], 3 * (100 + 100 * lag2))


def test_utilization_noise_is_seeded_and_racks_differ(tmp_path: Path) -> None:
    path = _util_file(tmp_path, "cpu_util_percent", list(np.linspace(20, 60, 200)))
    model = ServerPowerModel(100, 350)
    a = import_utilization(path, 10, model, 40, split=RackSplit(racks=2, noise=0.05, seed=1))
    b = import_utilization(path, 10, model, 40, split=RackSplit(racks=2, noise=0.05, seed=1))
    c = import_utilization(path, 10, model, 40, split=RackSplit(racks=2, noise=0.05, seed=2))
    np.testing.assert_array_equal(a.power_w, b.power_w)
    assert not np.array_equal(a.power_w, c.power_w)
    assert not np.allclose(a.power_w[:, 0], a.power_w[:, 1])
    # noise is small: each rack stays within ~20 % of the noiseless model
    clean = 20 * (100 + 250 * np.linspace(0.2, 0.6, 200))
    assert np.all(np.abs(a.power_w[:, 0] / clean - 1) < 0.2)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"step_s": 0}, ConfigError, "step_s"),
        ({"servers": 1, "split": RackSplit(racks=2)}, ConfigError, "servers"),
        ({"column": "nope"}, TraceError, "no column 'nope'"),
        ({"rows": 50}, ConfigError, "rows"),
        ({"start_row": 9}, ConfigError, "start_row"),
    ],
)
def test_utilization_bad_options(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], pattern: str
) -> None:
    path = _util_file(tmp_path, "cpu_util_percent", [10, 20, 30])
    args: dict[str, object] = {"step_s": 10, "servers": 4, **kwargs}
    with pytest.raises(error, match=pattern):
        import_utilization(path, model=ServerPowerModel(100, 200), **args)  # type: ignore[arg-type]


def test_utilization_bad_values(tmp_path: Path) -> None:
    model = ServerPowerModel(100, 200)
    path = _util_file(tmp_path, "cpu_util_percent", [10, 120, 30])
    with pytest.raises(TraceError, match=r"line 3: cpu_util_percent = 120 is outside \[0, 100\]"):
        import_utilization(path, 10, model, 4)
    path = tmp_path / "u2.csv"
    path.write_text("cpu_util_percent\n10\nNaN\n")
    with pytest.raises(TraceError, match="line 3: cpu_util_percent is not a finite number"):
        import_utilization(path, 10, model, 4)
    with pytest.raises(TraceError, match="none of the default columns"):
        import_utilization(_util_file(tmp_path, "x", [1, 2]), 10, model, 4)


def test_server_model_validation() -> None:
    with pytest.raises(ConfigError, match="max_w"):
        ServerPowerModel(idle_w=300, max_w=100)
    with pytest.raises(ConfigError, match="idle_w"):
        ServerPowerModel(idle_w=-1, max_w=100)


@needs_data
def test_utilization_real_alibaba_10s() -> None:
    path = UTIL / "alibaba2018_machine_usage_10s.csv"
    trace = import_utilization(path, 10, ServerPowerModel(100, 350), servers=1)
    assert trace.n_steps == 67242 and trace.step_s == 10
    # first row is 16.126976521322472 % (see the file)
    assert trace.power_w[0, 0] == pytest.approx(100 + 250 * 0.16126976521322472)


@needs_data
def test_utilization_real_azure_absolute() -> None:
    path = UTIL / "azure_v2_machine_usage_300s.csv"
    trace = import_utilization(path, 300, ServerPowerModel(100, 350), servers=10)
    assert trace.power_w.max() == pytest.approx(3500)  # the busiest step is u = 1
    assert trace.power_w.min() > 1000


# ------------------------------------------------------------------------------ bundled traces
SCENARIOS = Path(__file__).parents[2] / "src" / "wattwheel" / "scenarios"


@needs_data
def test_bundled_cella_trace_is_the_import_of_the_shared_files() -> None:
    bundled = read_trace(SCENARIOS / "cella-oversub" / "trace.csv")
    fresh = import_google_power([GOOGLE / f"cella_pdu{i}.csv" for i in (6, 7, 8)], 1000).trace
    assert bundled.rack_ids == fresh.rack_ids
    np.testing.assert_array_equal(bundled.timestamps_s, fresh.timestamps_s)
    np.testing.assert_array_equal(bundled.power_w, fresh.power_w)


@needs_data
def test_bundled_alibaba_trace_is_the_documented_import() -> None:
    bundled = read_trace(SCENARIOS / "alibaba-fast" / "trace.csv")
    fresh = import_utilization(
        UTIL / "alibaba2018_machine_usage_10s.csv",
        10,
        ServerPowerModel(100, 350),
        servers=160,
        split=RackSplit(racks=4, seed=0),
        start_row=8640,
        rows=8640,
    )
    assert bundled.rack_ids == fresh.rack_ids == ("rack01", "rack02", "rack03", "rack04")
    assert bundled.n_steps == 8640 and bundled.step_s == 10
    np.testing.assert_array_equal(bundled.timestamps_s, fresh.timestamps_s)
    np.testing.assert_allclose(bundled.power_w, fresh.power_w, rtol=1e-12)


def test_bundled_ai_training_trace_is_the_documented_synthesis() -> None:
    bundled = read_trace(SCENARIOS / "ai-training" / "trace.csv")
    fresh = synthesize_ai_training(AiTrainingLayout(nodes_per_rack=4, racks=2, duration_s=7200))
    assert bundled.rack_ids == fresh.rack_ids == ("gpu01", "gpu02")
    np.testing.assert_allclose(bundled.power_w, fresh.power_w, rtol=1e-12)
    assert (SCENARIOS / "ai-training" / "trace.csv").stat().st_size < 5e6
