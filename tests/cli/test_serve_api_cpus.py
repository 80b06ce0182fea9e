"""``serve --api-cpus``: a CPU list it cannot use is a one-line error and exit 2, before anything
starts; a usable one is printed as the split (the processes' real masks: tests/api and
tests/e2e/test_api_process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A missing site file stops serve right after the CPU split: no server is ever started.
    return subprocess.run(
        [*WATTWHEEL, "serve", "--site", str(tmp_path / "no-site.toml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [("4096", "not available"), ("x", "not a CPU list"), ("0-4095", "not available")],
)
def test_an_unusable_cpu_list_is_exit_2(tmp_path: Path, spec: str, says: str) -> None:
    res = _serve(tmp_path, "--api-cpus", spec)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert "site file not found" not in res.stderr


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux CPU affinity")
def test_the_split_is_printed_at_start_up(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    res = _serve(tmp_path)
    assert res.returncode == 2 and "site file not found" in res.stderr
    if len(cpus) >= 2:
        want = f"API process on CPU {cpus[-1]}"
        assert want in res.stdout + res.stderr
    else:
        assert "not pinned" in res.stdout + res.stderr
    res = _serve(tmp_path, "--api-cpus", "off")
    assert "not pinned" in res.stdout + res.stderr
