"""Batch-job schedules: derive one from a utilisation trace, read and write it as CSV.

**Derivation** (:func:`detect_batch_jobs`). The public traces shipped here record utilisation,
not job submissions, so a schedule is reconstructed from the utilisation itself: a *job start* is
a rise of the series by at least ``rise_threshold`` (utilisation fraction) from one row to the
next; the job runs from that row until the series first falls back below the level before the
rise plus half the rise (at most ``max_steps`` rows); its *size* is the mean rise over those rows
(at most the first rise). Rises during a job start jobs of their own (jobs stack). Each job is
*submitted* ``lead_s`` before it starts (an assumption: the traces do not record submission).
Sizes and durations are thus measured, not requested: a scheduler that knew its jobs' power this
well is the best case of schedule information.

**File format** (``schedule.csv``, one row per job and series)::

    job_id,submit_s,start_s,end_s,rack_id,power_w

times in the trace's time base (seconds), ``power_w`` what the job adds to that rack while it
runs. :func:`scenario_schedule` sums racks into the scenario's domains.

``python -m wattwheel.sim.batch_schedule UTIL.csv --out schedule.csv ...`` derives a scenario's
schedule with the same server power model and rack split as ``wattwheel import utilization``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wattwheel.domain.errors import TraceError
from wattwheel.forecast.base import FloatArray
from wattwheel.forecast.schedule import JobSchedule
from wattwheel.sim.scenario import Scenario

COLUMNS = ("job_id", "submit_s", "start_s", "end_s", "rack_id", "power_w")


@dataclass(frozen=True)
class DetectedJob:
    """A job found in a utilisation series: first row, rows it runs, utilisation it adds."""

    start_row: int
    n_rows: int
    size: float


def detect_batch_jobs(
    util: FloatArray, rise_threshold: float = 0.08, max_steps: int = 12
) -> list[DetectedJob]:
    """Job starts in a utilisation series (fractions in [0, 1]); see the module docstring."""
    if not 0 < rise_threshold < 1:
        raise ValueError(f"rise_threshold is a utilisation fraction in (0, 1): {rise_threshold}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1: {max_steps}")
    u = np.asarray(util, dtype=np.float64)
    jobs: list[DetectedJob] = []
    for i in range(1, u.shape[0]):
        rise = u[i] - u[i - 1]
        if not rise >= rise_threshold:
            continue
        before = u[i - 1]
        window = u[i : i + max_steps]
        below = np.flatnonzero(window < before + rise / 2.0)
        n = int(below[0]) if below.size else int(window.shape[0])
        n = max(n, 1)
        size = float(min(rise, np.mean(window[:n]) - before))
        if size > 0:
            jobs.append(DetectedJob(i, n, size))
    return jobs


def schedule_from_jobs(
    jobs: Sequence[DetectedJob],
    timestamps_s: FloatArray,
    step_s: float,
    lead_s: float,
    rack_ids: Sequence[str],
    servers_per_rack: Sequence[int],
    idle_w: float,
    max_w: float,
) -> JobSchedule:
    """Detected jobs as rack power: a job of size ``u`` adds ``servers x (max_w - idle_w) x u``
    to every rack (the linear server power model of ``wattwheel import utilization``)."""
    if lead_s < 0:
        raise ValueError(f"lead_s must be >= 0: {lead_s}")
    start = np.array([timestamps_s[j.start_row] for j in jobs], dtype=np.float64)
    end = start + np.array([j.n_rows * step_s for j in jobs], dtype=np.float64)
    per_rack = (max_w - idle_w) * np.asarray(servers_per_rack, dtype=np.float64)
    power = np.array([j.size for j in jobs], dtype=np.float64)[:, None] * per_rack[None, :]
    return JobSchedule(tuple(rack_ids), start - lead_s, start, end, power.reshape(len(jobs), -1))


def write_schedule(path: Path, schedule: JobSchedule) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for j in range(schedule.n_jobs):
            for k, rack in enumerate(schedule.series_ids):
                out.writerow(
                    [
                        j,
                        f"{schedule.submit_s[j]:.1f}",
                        f"{schedule.start_s[j]:.1f}",
                        f"{schedule.end_s[j]:.1f}",
                        rack,
                        f"{schedule.power_w[j, k]:.1f}",
                    ]
                )


def read_schedule(path: Path) -> JobSchedule:
    """Read a ``schedule.csv`` (see the module docstring); errors name the file and line."""
    if not path.is_file():
        raise TraceError(f"{path}: schedule file not found")
    jobs: dict[str, tuple[float, float, float]] = {}
    power: dict[tuple[str, str], float] = {}
    racks: list[str] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise TraceError(f"{path}: schedule columns missing: {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                times = (float(row["submit_s"]), float(row["start_s"]), float(row["end_s"]))
                watts = float(row["power_w"])
            except ValueError as exc:
                raise TraceError(f"{path}:{line}: not a number: {exc}") from None
            job, rack = row["job_id"], row["rack_id"]
            if jobs.setdefault(job, times) != times:
                raise TraceError(f"{path}:{line}: job {job} has other times on another row")
            if rack not in racks:
                racks.append(rack)
            power[(job, rack)] = power.get((job, rack), 0.0) + watts
    ids = list(jobs)
    arr = np.zeros((len(ids), len(racks)))
    for (job, rack), watts in power.items():
        arr[ids.index(job), racks.index(rack)] = watts
    t = np.array([jobs[j] for j in ids], dtype=np.float64).reshape(len(ids), 3)
    try:
        return JobSchedule(tuple(racks), t[:, 0], t[:, 1], t[:, 2], arr)
    except ValueError as exc:
        raise TraceError(f"{path}: {exc}") from None


def scenario_schedule(scenario: Scenario, path: Path) -> JobSchedule:
    """The schedule in ``path`` with racks summed into the scenario's domains."""
    groups = {d.name: list(d.racks) for d in scenario.config.domains}
    return read_schedule(path).grouped(groups)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Derive a batch schedule from a utilisation CSV.")
    p.add_argument("util_csv", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--column", default="cpu_util_percent")
    p.add_argument("--step-s", type=float, required=True)
    p.add_argument("--idle-w", type=float, required=True)
    p.add_argument("--max-w", type=float, required=True)
    p.add_argument("--servers", type=int, required=True)
    p.add_argument("--racks", type=int, default=1)
    p.add_argument("--rack-prefix", default="rack")
    p.add_argument("--rise-threshold", type=float, default=0.08)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--lead-s", type=float, default=900.0)
    a = p.parse_args(argv)
    with a.util_csv.open(newline="") as f:
        util = np.array([float(r[a.column]) for r in csv.DictReader(f)]) / 100.0
    jobs = detect_batch_jobs(util, a.rise_threshold, a.max_steps)
    counts = [a.servers // a.racks + (1 if k < a.servers % a.racks else 0) for k in range(a.racks)]
    width = max(2, len(str(a.racks)))
    racks = [f"{a.rack_prefix}{k + 1:0{width}d}" for k in range(a.racks)]
    ts = a.step_s * np.arange(util.shape[0], dtype=np.float64)
    sched = schedule_from_jobs(jobs, ts, a.step_s, a.lead_s, racks, counts, a.idle_w, a.max_w)
    write_schedule(a.out, sched)
    rows = np.array([j.n_rows for j in jobs])
    sizes = np.array([j.size for j in jobs])
    print(
        f"{len(jobs)} jobs from {util.shape[0]} rows; duration median {np.median(rows):.0f} "
        f"rows, size median {100 * np.median(sizes):.1f} points -> {a.out}"
    )


if __name__ == "__main__":
    main()
