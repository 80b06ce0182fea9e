"""Read and write power traces as long-format CSV (or Parquet when pyarrow is installed).

File format (DESIGN §4), one row per (timestamp, rack):

    timestamp,rack_id,power_w[,critical_w][,<exogenous numeric columns>...]

* ``timestamp``: epoch seconds (any real number; traces imported from relative time bases such as
  Google's power-2019 start near 0) or ISO 8601. ISO strings without an offset are taken as UTC;
  with an offset they are converted to UTC.
* ``rack_id``: any non-empty string.
* ``power_w``: measured power in watts, finite and >= 0.
* ``critical_w`` (optional): the critical part of ``power_w`` in watts.
* every other column is an exogenous feature (must be numeric) and lands in ``Trace.exog``.

Nixtla's long convention ``unique_id, ds, y`` is accepted and mapped to ``rack_id, timestamp,
power_w``.

Reading loses nothing: every row must land in exactly one cell of the regular (T, R) grid, so a
duplicate, a gap, an out-of-order or unparsable row is an error naming the file, the line and the
rack rather than a row silently dropped, sorted or interpolated.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from wattwheel.domain.errors import TraceError
from wattwheel.domain.trace import ABSURD_RACK_POWER_W, FloatArray, Trace

TIMESTAMP, RACK_ID, POWER_W, CRITICAL_W = "timestamp", "rack_id", "power_w", "critical_w"
REQUIRED_COLUMNS = (TIMESTAMP, RACK_ID, POWER_W)
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, CRITICAL_W)
#: Nixtla (statsforecast / neuralforecast) long-format names -> ours.
NIXTLA_COLUMNS = {"unique_id": RACK_ID, "ds": TIMESTAMP, "y": POWER_W}
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Pandas row i is on file line i + 2 (line 1 is the header).
_HEADER_LINES = 1


# --------------------------------------------------------------------------------------- reading
def read_trace(path: str | Path) -> Trace:
    """Read a long-format trace file into a :class:`Trace` (watts, epoch seconds).

    Raises:
        TraceError: naming the file, the line (CSV) or row (Parquet) and the rack of the first
            problem found.
    """
    src = _Source(Path(path))
    frame = _normalise_columns(src, _load_frame(src))
    if frame.empty:
        raise src.error("has a header but no rows")
    rack_ids = _parse_rack_ids(src, frame[RACK_ID])
    timestamps_s = _parse_timestamps(src, frame[TIMESTAMP], rack_ids)
    power_w = _parse_power(src, frame[POWER_W], POWER_W, timestamps_s, rack_ids)
    critical_w = None
    if CRITICAL_W in frame.columns:
        critical_w = _parse_power(src, frame[CRITICAL_W], CRITICAL_W, timestamps_s, rack_ids)
        _check_critical_le_power(src, critical_w, power_w, rack_ids)
    exog = {
        str(name): _parse_numeric(src, frame[name], str(name), rack_ids)
        for name in frame.columns
        if name not in RESERVED_COLUMNS
    }
    grid = _build_grid(src, timestamps_s, rack_ids)
    try:
        return Trace(
            timestamps_s=grid.timestamps_s,
            rack_ids=grid.rack_ids,
            power_w=grid.place(power_w),
            critical_w=None if critical_w is None else grid.place(critical_w),
            exog={name: grid.place(values) for name, values in exog.items()},
        )
    except TraceError as exc:  # a check the row-level parsing above did not anticipate
        raise src.error(str(exc)) from exc


class _Source:
    """Where rows came from, so errors can say ``file: line N: rack 'x': ...``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_parquet = path.suffix.lower() in PARQUET_SUFFIXES

    def where(self, row: int) -> str:
        if self.is_parquet:
            return f"row {row + 1}"
        return f"line {row + 1 + _HEADER_LINES}"

    def error(self, message: str, row: int | None = None, rack: str | None = None) -> TraceError:
        parts = [str(self.path)]
        if row is not None:
            parts.append(self.where(row))
        if rack is not None:
            parts.append(f"rack {rack!r}")
        return TraceError(": ".join([*parts, message]))


def _load_frame(src: _Source) -> pd.DataFrame:
    if not src.path.is_file():
        raise src.error("no such trace file")
    if src.is_parquet:
        return _load_parquet(src)
    return read_csv_as_text(src.path, "timestamp,rack_id,power_w")


def read_csv_as_text(path: Path, expected_header: str) -> pd.DataFrame:
    """A CSV file as a table of stripped strings, so that type errors can be reported per line.

    Row i of the result is line i + 2 of the file: blank lines are not skipped silently (that
    would shift every line number after them); trailing blank lines are dropped, a blank line
    between data lines is an error. A UTF-8 byte-order mark (spreadsheet exports) is ignored.
    """
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: is empty (expected a header line {expected_header})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: is not a readable CSV file: {exc}") from None
    frame = frame.rename(columns=lambda c: str(c).strip())
    blank = np.ones(len(frame), dtype=bool)
    for name in frame.columns:  # column by column: much faster than a row-wise apply
        blank &= frame[name].to_numpy(dtype=object) == ""
    if blank.any():
        n_data = len(blank) - int(np.argmax(~blank[::-1])) if (~blank).any() else 0
        inner = np.flatnonzero(blank[:n_data])
        if inner.size:
            raise TraceError(f"{path}: line {int(inner[0]) + 2}: blank line between data lines")
        frame = frame.iloc[:n_data]
    return frame


def _load_parquet(src: _Source) -> pd.DataFrame:
    if not _have_pyarrow():
        raise src.error("reading Parquet needs pyarrow (pip install pyarrow), or use CSV")
    return pd.read_parquet(src.path)


def _have_pyarrow() -> bool:
    # pyarrow is optional: Parquet support only, never a dependency.
    return importlib.util.find_spec("pyarrow") is not None


def _normalise_columns(src: _Source, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: str(c).strip())
    if len(set(frame.columns)) != len(frame.columns):
        dup = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
        raise src.error(f"repeated column name(s) in the header: {', '.join(dup)}")
    if not set(REQUIRED_COLUMNS) <= set(frame.columns) and set(NIXTLA_COLUMNS) <= set(
        frame.columns
    ):
        clash = [ours for ours in NIXTLA_COLUMNS.values() if ours in frame.columns]
        if clash:
            raise src.error(
                f"has both Nixtla columns (unique_id, ds, y) and {', '.join(clash)}: ambiguous"
            )
        frame = frame.rename(columns=NIXTLA_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise src.error(
            f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
            "(expected timestamp,rack_id,power_w[,critical_w,...] or unique_id,ds,y)"
        )
    return frame


def _parse_rack_ids(src: _Source, column: pd.Series) -> np.ndarray:
    text = column.astype(str).str.strip()
    empty = (column.isna() | (text == "") | (text.str.lower() == "nan")).to_numpy()
    if empty.any():
        raise src.error("empty rack_id", row=int(np.argmax(empty)))
    return text.to_numpy(dtype=object)


def _parse_timestamps(src: _Source, column: pd.Series, rack_ids: np.ndarray) -> FloatArray:
    """Epoch seconds: numbers are taken as such, anything else must be ISO 8601."""
    if pd.api.types.is_datetime64_any_dtype(column):  # Parquet timestamp columns
        return _datetimes_to_epoch_s(src, pd.to_datetime(column, utc=True), column, rack_ids)
    text = column.astype(str).str.strip()
    values = _floats(text)
    if not np.isnan(values[0]):  # the first row decides: epoch seconds, else ISO 8601
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise src.error(
                f"unparsable timestamp {text.iloc[i]!r} (the file starts with epoch seconds)",
                i,
                rack_ids[i],
            )
        return values
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    return _datetimes_to_epoch_s(src, parsed, text, rack_ids)


def _floats(text: pd.Series) -> FloatArray:
    """Decimal text as float64, correctly rounded (a written trace reads back bit for bit);
    NaN where a cell is not a number. ``pd.to_numeric``'s fast parser can be one ulp off."""
    cells = text.to_numpy(dtype=str)
    try:
        return cells.astype(np.float64)
    except ValueError:  # some cell is not a number: find them one by one
        return np.array([_float_or_nan(c) for c in cells], dtype=np.float64)


def _float_or_nan(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _datetimes_to_epoch_s(
    src: _Source, parsed: pd.Series, original: pd.Series, rack_ids: np.ndarray
) -> FloatArray:
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise src.error(
            f"unparsable timestamp {original.iloc[i]!r} (expected epoch seconds or ISO 8601)",
            i,
            rack_ids[i],
        )
    nanos = parsed.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy()
    seconds: FloatArray = nanos.astype(np.float64) / 1e9
    return seconds


def _parse_numeric(src: _Source, column: pd.Series, name: str, rack_ids: np.ndarray) -> FloatArray:
    """Finite floats, or an error naming the first empty, NaN or non-numeric cell."""
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        text = column.astype(str)
    else:
        text = column.astype(str).str.strip()
        values = _floats(text)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raw = text.iloc[i]
        what = "empty" if raw == "" else f"not a finite number ({raw!r})"
        raise src.error(f"{name} is {what} ({int(bad.sum())} such rows)", i, rack_ids[i])
    return values


def _parse_power(
    src: _Source,
    column: pd.Series,
    name: str,
    timestamps_s: FloatArray,
    rack_ids: np.ndarray,
) -> FloatArray:
    values = _parse_numeric(src, column, name, rack_ids)
    for what, mask in (
        ("negative", values < 0),
        (f"absurd (> {ABSURD_RACK_POWER_W:.0e} W, wrong unit?)", values > ABSURD_RACK_POWER_W),
    ):
        if mask.any():
            i = int(np.argmax(mask))
            raise src.error(f"{name} is {what}: {values[i]:g} W", i, rack_ids[i])
    return values


def _check_critical_le_power(
    src: _Source, critical_w: FloatArray, power_w: FloatArray, rack_ids: np.ndarray
) -> None:
    over = critical_w > power_w + 1e-9
    if over.any():
        i = int(np.argmax(over))
        raise src.error(
            f"critical_w {critical_w[i]:g} W exceeds power_w {power_w[i]:g} W", i, rack_ids[i]
        )


class _Grid:
    """The regular (T, R) grid the rows map onto, one row per cell."""

    def __init__(
        self,
        timestamps_s: FloatArray,
        rack_ids: tuple[str, ...],
        t_idx: np.ndarray,
        r_idx: np.ndarray,
    ) -> None:
        self.timestamps_s = timestamps_s
        self.rack_ids = rack_ids
        self._t_idx = t_idx
        self._r_idx = r_idx

    def place(self, values: FloatArray) -> FloatArray:
        out = np.empty((self.timestamps_s.shape[0], len(self.rack_ids)), dtype=np.float64)
        out[self._t_idx, self._r_idx] = values
        return out


def _build_grid(src: _Source, timestamps_s: FloatArray, rack_ids: np.ndarray) -> _Grid:
    """Check that rows tile a regular grid exactly, then index them into it.

    Checked in this order so each message names the most specific cause: duplicate
    (timestamp, rack) rows, timestamps going backwards within a rack, a rack missing timestamps
    that other racks have, then an irregular step in the shared time axis.
    """
    racks, r_idx = _first_appearance_codes(rack_ids)
    _check_duplicates(src, timestamps_s, rack_ids)
    _check_order_within_racks(src, timestamps_s, r_idx, racks)
    grid_ts = np.unique(timestamps_s)
    t_idx = np.searchsorted(grid_ts, timestamps_s)
    _check_no_gaps(src, grid_ts, t_idx, r_idx, racks)
    _check_regular_step(src, grid_ts, timestamps_s)
    return _Grid(grid_ts, racks, t_idx, r_idx)


def _first_appearance_codes(rack_ids: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Racks in the order they first appear in the file (so write -> read keeps the order)."""
    codes, uniques = pd.factorize(pd.Series(rack_ids, dtype=object), sort=False)
    return tuple(str(u) for u in uniques), np.asarray(codes, dtype=np.intp)


def _check_duplicates(src: _Source, timestamps_s: FloatArray, rack_ids: np.ndarray) -> None:
    keys = pd.DataFrame({"t": timestamps_s, "r": rack_ids})
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = int(rows[0])
        same = rows[
            (timestamps_s[rows] == timestamps_s[first]) & (rack_ids[rows] == rack_ids[first])
        ]
        raise src.error(
            f"duplicate row for timestamp {timestamps_s[first]:g} s: also on "
            f"{', '.join(src.where(int(r)) for r in same[1:])} ({int(dup.sum())} rows involved)",
            first,
            rack_ids[first],
        )


def _check_order_within_racks(
    src: _Source, timestamps_s: FloatArray, r_idx: np.ndarray, racks: tuple[str, ...]
) -> None:
    # A stable sort by rack keeps file order inside each rack; any step back is out of order.
    order = np.argsort(r_idx, kind="stable")
    ts, rk = timestamps_s[order], r_idx[order]
    back = (np.diff(ts) < 0) & (rk[1:] == rk[:-1])
    if back.any():
        j = int(np.argmax(back))
        row = int(order[j + 1])
        raise src.error(
            f"timestamp {ts[j + 1]:g} s is out of order: after {ts[j]:g} s on "
            f"{src.where(int(order[j]))} (rows of a rack must go forward in time)",
            row,
            racks[rk[j + 1]],
        )


def _check_no_gaps(
    src: _Source,
    grid_ts: FloatArray,
    t_idx: np.ndarray,
    r_idx: np.ndarray,
    racks: tuple[str, ...],
) -> None:
    present = np.zeros((grid_ts.shape[0], len(racks)), dtype=bool)
    present[t_idx, r_idx] = True
    if present.all():
        return
    counts = (~present).sum(axis=0)
    r = int(np.argmax(counts > 0))
    t = int(np.argmax(~present[:, r]))
    others = "; ".join(f"{racks[k]!r} misses {int(counts[k])}" for k in np.flatnonzero(counts)[1:4])
    raise src.error(
        f"missing {int(counts[r])} timestamp(s) that other racks have, first at "
        f"{grid_ts[t]:g} s (fill or resample the gaps before import)"
        + (f"; also {others}" if others else ""),
        rack=racks[r],
    )


def _check_regular_step(src: _Source, grid_ts: FloatArray, timestamps_s: FloatArray) -> None:
    if grid_ts.shape[0] < 2:
        raise src.error("needs at least two distinct timestamps")
    diffs = np.diff(grid_ts)
    step = float(diffs[0])
    irregular = np.abs(diffs - step) > 1e-6 * max(step, 1.0)
    if irregular.any():
        j = int(np.argmax(irregular))
        row = int(np.argmax(timestamps_s == grid_ts[j + 1]))
        raise src.error(
            f"irregular time step: {diffs[j]:g} s from {grid_ts[j]:g} to {grid_ts[j + 1]:g} s, "
            f"expected {step:g} s like the first step (every rack lacks these timestamps, "
            "or the file mixes resolutions)",
            row,
        )


# --------------------------------------------------------------------------------------- writing
def trace_to_frame(
    trace: Trace, timestamp_format: Literal["epoch", "iso"] = "epoch"
) -> pd.DataFrame:
    """The long-format table of ``trace``, time-major (all racks of t0, then t1, ...)."""
    clash = [name for name in trace.exog if name in RESERVED_COLUMNS]
    if clash:
        raise TraceError(f"exogenous column name(s) {', '.join(clash)} clash with trace columns")
    n_t, n_r = trace.power_w.shape
    ts = np.repeat(trace.timestamps_s, n_r)
    columns: dict[str, object] = {
        TIMESTAMP: ts if timestamp_format == "epoch" else _epoch_to_iso(ts),
        RACK_ID: np.tile(np.asarray(trace.rack_ids, dtype=object), n_t),
        POWER_W: trace.power_w.reshape(-1),
    }
    if trace.critical_w is not None:
        columns[CRITICAL_W] = trace.critical_w.reshape(-1)
    for name, values in trace.exog.items():
        columns[name] = np.asarray(values, dtype=np.float64).reshape(-1)
    return pd.DataFrame(columns)


def _epoch_to_iso(ts: FloatArray) -> list[str]:
    stamps = pd.to_datetime(np.round(ts * 1e9).astype(np.int64), unit="ns", utc=True)
    return [s.isoformat().replace("+00:00", "Z") for s in stamps]


def write_trace(
    trace: Trace,
    path: str | Path,
    timestamp_format: Literal["epoch", "iso"] = "epoch",
) -> Path:
    """Write ``trace`` as long-format CSV, or Parquet when ``path`` ends in .parquet/.pq.

    Floats are written at full precision so that :func:`read_trace` gives back the same arrays.
    ``timestamp_format="iso"`` writes ISO 8601 UTC instead of epoch seconds (pointless for traces
    on a relative time base, e.g. Google's power-2019, which start near 0). Returns the path.
    """
    out = Path(path)
    frame = trace_to_frame(trace, timestamp_format)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in PARQUET_SUFFIXES:
        if not _have_pyarrow():
            raise TraceError(f"{out}: writing Parquet needs pyarrow (pip install pyarrow)")
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    return out
