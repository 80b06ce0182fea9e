"""A real two-node local Ray cluster for tests: ``ray start --head`` plus a second
``ray start --address=...`` node, each a blocking process in its own session (so the test can
stop exactly the processes it started, by process group), small CPU and memory settings,
every port chosen free. Stopped (SIGTERM, then SIGKILL) when the fixture ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services import free_port

RAY = str(Path(sys.executable).parent / "ray")
#: Per node: one CPU and an 80 MB object store (Ray's minimum is ~75 MB).
NODE_ARGS = ("--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--block")


READY = "will now block forever"
#: Hermetic: no token authentication (else Ray 2.5x+ may pick up ~/.ray/auth_token left by an
#: earlier local run on one side and not the other); the driver must use the same settings.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@dataclass
class RayCluster:
    address: str
    procs: list[subprocess.Popen[bytes]]


def _node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [RAY, "start", *args, *NODE_ARGS, f"--dashboard-agent-listen-port={free_port()}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _alive_nodes(address: str) -> int:
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    try:
        res = subprocess.run(
            [sys.executable, "-c", code, address],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **RAY_ENV},
        )
    except subprocess.TimeoutExpired:
        return 0
    return int(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else 0


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """``ray start --block`` prints this once its node is up."""
    deadline = time.monotonic() + timeout_s
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"ray start did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the ``ray start --block`` process and everything it started (its session)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def start_cluster(tmp: Path) -> Iterator[RayCluster]:
    # Ray's socket paths must stay under 107 bytes: a short directory of its own.
    ray_tmp = tempfile.mkdtemp(prefix="wwray", dir="/tmp")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _node(
        [
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--temp-dir={ray_tmp}",
        ],
        tmp / "head.log",
    )
    procs = [head]
    try:
        _wait_started(head, tmp / "head.log", 120)
        worker = _node([f"--address={address}"], tmp / "node.log")
        procs.append(worker)
        _wait_started(worker, tmp / "node.log", 120)
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join(p.read_text()[-2000:] for p in tmp.glob("*.log"))
                raise TimeoutError(f"the two-node Ray cluster did not come up:\n{logs}")
            time.sleep(1.0)
        yield RayCluster(address, procs)
    finally:
        for p in reversed(procs):
            _stop_group(p)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        for p in procs:
            _kill_group(p)
        shutil.rmtree(ray_tmp, ignore_errors=True)
