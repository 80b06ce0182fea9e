"""A real single-member etcd on free client/peer ports in a temporary data directory, which a test
can stop and start again (same ports, same data) to play an etcd restart or outage.

A uniquely named module (not conftest) so tests can import :class:`EtcdServer` for typing."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdServer:
    """``etcd`` with short raft timers (fast start, leases down to 1 s)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD,
            "--name=t",
            f"--data-dir={self.work_dir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ]
        with (self.work_dir / "etcd.log").open("ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not ready in {timeout_s} s: {self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        request = urllib.request.Request(f"{self.url}/v3/kv/range", b'{"key":"AA=="}')
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=0.5) as reply:
            return bool(reply.status == 200)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self) -> str:
        return (self.work_dir / "etcd.log").read_text(errors="replace")[-2000:]


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A fresh etcd; stopped at the end. Skips only when the binary is not installed."""
    if not Path(ETCD).exists():
        pytest.skip(f"etcd binary not found at {ETCD} (apt-get install etcd-server)")
    server = EtcdServer(tmp_path)
    server.start()
    yield server
    server.stop()
