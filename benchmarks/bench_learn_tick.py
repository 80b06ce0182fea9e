"""The fast loop's tick while continuous learning fine-tunes a model (issue 13: "the control
loop's tick p99 unchanged while a fine-tune runs").

One run, phases interleaved ``--runs`` times: the 1,000-rack in-process tick of
``bench_tick.py`` (real :class:`~wattwheel.runtime.loop.Runtime`, fake devices) measured

- ``idle``: with no fine-tune;
- ``finetune_process``: while ``serve --learn``'s worker process
  (:class:`~wattwheel.adapters.model_jobs.ProcessModelJobs`, niced) fine-tunes the shipped
  5-minute model on 14 days of Google PDU power, back to back for the whole phase;
- ``finetune_thread`` (contrast, not what serve does): the same fine-tune in a thread of the
  controller's process.

Prints the median over runs of each phase's p50/p99/max (ms), the fine-tunes that ran, and the
load average. ``python benchmarks/bench_learn_tick.py [--racks 1000] [--ticks 300] [--runs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tick import bench_fakes

from wattwheel.adapters.model_artifact import shipped_model_for_step
from wattwheel.adapters.model_jobs import ProcessModelJobs, _plain, fine_tune_job
from wattwheel.forecast.base import History
from wattwheel.sim.trace_io import read_trace

TRACE = Path(__file__).resolve().parents[1] / "src/wattwheel/scenarios/cella-oversub/trace.csv"
PHASES = ("idle", "finetune_process", "finetune_thread")


async def phase(
    kind: str, args: argparse.Namespace, jobs: ProcessModelJobs, history: History, tmp: Path
) -> dict[str, Any]:
    model = str(shipped_model_for_step(300.0))
    stop = asyncio.Event()
    done: list[float] = []

    async def keep_training() -> None:
        n = 0
        while not stop.is_set():
            out = str(tmp / f"{kind}-{n}")
            t0 = time.perf_counter()
            if kind == "finetune_process":
                await jobs.fine_tune(model, history, out, args.epochs)
            else:
                await asyncio.to_thread(fine_tune_job, model, *_plain(history), out, args.epochs)
            done.append(time.perf_counter() - t0)
            n += 1

    task = asyncio.ensure_future(keep_training()) if kind != "idle" else None
    if task is not None:
        await asyncio.sleep(1.0)  # the job is loaded and training when the ticks start
    t0 = time.perf_counter()
    result = await bench_fakes(args.racks, args.ticks, "predictive", seed=0)
    ticks_s = time.perf_counter() - t0
    stop.set()
    if task is not None:
        await task
    return {**result, "ticks_wall_s": ticks_s, "finetunes": len(done)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    trace = read_trace(TRACE)
    full = History.from_trace(trace)
    rows = 14 * 288
    history = History(full.timestamps_s[:rows], full.series_ids, full.values[:rows])
    jobs = ProcessModelJobs()
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    load: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # spawn the worker and import torch there before measuring anything
        await jobs.fine_tune(str(shipped_model_for_step(300.0)), history, str(tmp / "warm"), 1)
        for r in range(args.runs):
            for kind in PHASES:
                runs[kind].append(await phase(kind, args, jobs, history, tmp))
                load.append(os.getloadavg()[0])
                print(f"run {r + 1} {kind}: {runs[kind][-1]}", file=sys.stderr)
    jobs.close()

    def med(kind: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs[kind]), 2)

    return {
        "racks": args.racks,
        "ticks_per_phase": args.ticks,
        "runs": args.runs,
        **{
            kind: {
                "p50_ms": med(kind, "p50_ms"),
                "p99_ms": med(kind, "p99_ms"),
                "max_ms": med(kind, "max_ms"),
                "finetunes_during": sum(x["finetunes"] for x in runs[kind]),
            }
            for kind in PHASES
        },
        "load_avg_1min": [round(x, 1) for x in load],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--racks", type=int, default=1000)
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
