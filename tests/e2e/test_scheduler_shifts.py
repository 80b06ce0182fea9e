"""Scheduler-hook semantics end to end (issue 7 item 5, DESIGN §8): real ``wattwheel emulate``
and ``wattwheel serve`` processes, shift requests over real HTTP to the emulated scheduler.

Domain A sits 25-40 kW over its feed with a small flywheel, so the ``seed`` policy shifts work
to B every plan period with changing levels. Each request names its (source, target) pair and
replaces the previous one, so the emulated demand never differs from the trace by more than
the shifts in force - and never by more than the largest single request of a pair (requests
that added up, as before, drove a domain far past anything decided)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_procs import processes, start, start_emulate, wait_for_http

from services import free_port

pytestmark = pytest.mark.service

WATCH_S = 25.0
TOL_KW = 0.05

SITE = """
[site]
name = "shifty"
plan_period_s = 4
horizon_min = 1
servers_per_rack = 4

[reserve]
capacity_kw = 60
start_delay_s = 5
min_on_s = 10

[domain_defaults.kes]
modules = 1
module_power_kw = 2
module_energy_kwh = 0.05

[domain_defaults.flex]
noncritical_fraction = 0.5
cap_floor_fraction = 0.5
shift_lead_s = 1
shift_max_fraction_of_peak = 0.3

[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100

[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
"""


def _trace(path: Path) -> None:
    rows = ["timestamp,rack_id,power_w"]
    for t in range(60):
        a_w = 125_000.0 + 15_000.0 * ((t * 7) % 3) / 2.0  # 125 / 140 / 132.5 kW
        rows += [f"{t * 60},a1,{a_w}", f"{t * 60},b1,40000.0"]
    path.write_text("\n".join(rows) + "\n")


def _watch(status_url: str) -> list[dict[str, object]]:
    """Emulator status snapshots over ``WATCH_S`` seconds."""
    snaps: list[dict[str, object]] = []
    end = time.monotonic() + WATCH_S
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() < end:
            snaps.append(http.get(status_url).json())
            time.sleep(0.25)
    return snaps


def test_emulated_load_differs_from_the_trace_only_by_the_shifts_in_force(
    tmp_path: Path,
) -> None:
    site, trace = tmp_path / "site.toml", tmp_path / "trace.csv"
    site.write_text(SITE)
    _trace(trace)
    common = ["--site", str(site), "--trace", str(trace)]
    logs = [tmp_path / "emulate.log", tmp_path / "serve.log"]
    with processes(logs) as procs:
        emulate, devices = start_emulate(
            tmp_path, [*common, "--speed", "30", "--no-mqtt"], logs[0], 30
        )
        procs.append(emulate)
        port = free_port()
        serve = ["serve", *common, "--devices", str(devices), "--policy", "seed"]
        serve += ["--port", str(port), "--db", f"sqlite:///{tmp_path / 'live.db'}"]
        serve += ["--plan-period", "4", "--history-step", "1"]
        procs.append(start(serve, logs[1], tmp_path))
        wait_for_http(f"http://127.0.0.1:{port}/api/v1/status", procs[1])
        snaps = _watch(json.loads(devices.read_text())["site_status_url"])
        assert all(p.poll() is None for p in procs), "a process died"
    shifted = 0
    for snap in snaps:
        doms = snap["domains"]
        assert isinstance(doms, dict)
        largest = snap["largest_request_w"]
        assert isinstance(largest, dict)
        for name, d in doms.items():
            diff = abs(d["demand_kw"] - d["trace_kw"])
            # Never more than the shifts in force...
            assert diff <= d["shift_out_kw"] + d["shift_in_kw"] + TOL_KW, (name, snap)
            # ...and never more than the largest single request of the pairs touching it.
            bound = sum(w for pair, w in largest.items() if name in pair.split("->")) / 1000.0
            assert diff <= bound + TOL_KW, (name, snap)
        in_force = snap["shifts_in_force"]
        assert isinstance(in_force, list)
        pairs = [(s["from"], s["to"]) for s in in_force]
        assert len(pairs) == len(set(pairs)), "two requests of one pair in force at once"
        shifted += any(d["shift_out_kw"] > 1.0 for d in doms.values())
    # Not vacuous: shifts were in force much of the time, with several requests replaced.
    assert shifted >= len(snaps) // 4, f"shifts in force in {shifted} of {len(snaps)} snapshots"
    last = snaps[-1]["scheduler_requests"]
    assert isinstance(last, int) and last >= 3
    # Work moved, not lost: what left A arrived in B.
    out_a = np.array([s["domains"]["A"]["shift_out_kw"] for s in snaps])  # type: ignore[index]
    in_b = np.array([s["domains"]["B"]["shift_in_kw"] for s in snaps])  # type: ignore[index]
    np.testing.assert_allclose(out_a, in_b, atol=1e-6)
