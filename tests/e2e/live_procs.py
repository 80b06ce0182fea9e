"""Start and stop real ``wattwheel`` processes for the end-to-end tests.

Every e2e test runs the product as a user does: ``wattwheel emulate`` writes a device map,
``wattwheel serve`` reads it, each in its own process with its output in a log file that is
printed when the test ends (pass or fail), so a failure in CI shows what the processes said.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
Proc = subprocess.Popen[bytes]


def start(
    args: Sequence[str],
    log: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    append: bool = False,
) -> Proc:
    """``wattwheel ARGS`` in ``cwd``, stdout and stderr to ``log`` (appended to if asked: a
    restarted process keeps its earlier output)."""
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            [*WATTWHEEL, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def stop(proc: Proc, timeout_s: float = 10.0) -> None:
    """SIGINT (a clean shutdown), then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for_file(path: Path, proc: Proc, log: Path, timeout_s: float = 60.0) -> None:
    """Until ``path`` exists; fails with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{path.name} not written within {timeout_s:.0f} s"
        time.sleep(0.2)


def wait_for_http(url: str, proc: Proc, timeout_s: float = 90.0) -> None:
    """Until ``GET url`` answers 200 (a busy 2-core box takes a while to import everything)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the process exited"
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


def print_logs(logs: Sequence[Path], tail_chars: int = 4000) -> None:
    for log in logs:
        if log.exists():
            print(f"----- {log.name}\n{log.read_text()[-tail_chars:]}")


@contextmanager
def processes(logs: list[Path]) -> Iterator[list[Proc]]:
    """A list to append started processes to: all are stopped (last first) and their logs
    printed when the block ends, however it ends."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            stop(proc)
        print_logs(logs)


def start_emulate(
    tmp_path: Path, args: Sequence[str], log: Path, timeout_s: float = 60.0
) -> tuple[Proc, Path]:
    """``wattwheel emulate ARGS --devices tmp/devices.json``, waited for until its device map
    is written; returns the process and the map's path."""
    devices = tmp_path / "devices.json"
    proc = start(["emulate", *args, "--devices", str(devices)], log, tmp_path)
    try:
        wait_for_file(devices, proc, log, timeout_s)
    except BaseException:
        stop(proc)
        raise
    return proc, devices
