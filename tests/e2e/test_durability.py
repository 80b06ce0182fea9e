"""Durability at the process level: a real ``wattwheel serve`` killed with SIGKILL.

- An operator's "forbid reserve" (genset maintenance) set through the API survives ``kill -9``
  and a restart, with the TTL that remains of it, and the restart shows it as an event.
- The bounded version of ``benchmarks/bench_durability.py``: QoS-1 sequence-numbered samples
  over a real Mosquitto into serve, PostgreSQL stopped, ``kill -9`` of serve during the outage,
  both restarted: every sample serve acknowledged is in the database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services import free_port
from services_pg import SKIP_REASON, pg_bin_dir

pytestmark = pytest.mark.service

REPO = Path(__file__).resolve().parents[2]
OPERATOR = "durability-operator-token-0123"
WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
AUTH = {"Authorization": f"Bearer {OPERATOR}"}


class Serve:
    """One ``wattwheel serve`` process (restartable) in ``cwd`` on a fixed API port."""

    def __init__(self, cwd: Path, args: list[str]) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.args = ["serve", "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self, timeout_s: float = 60.0) -> None:
        self.runs += 1
        log = self.cwd / f"serve-{self.runs}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                WATTWHEEL + self.args,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/status", headers=AUTH, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not answer within {timeout_s} s: {log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.cwd.glob("serve-*.log"))
        )


@pytest.fixture
def serve_sqlite(tmp_path: Path) -> Iterator[Serve]:
    (tmp_path / "tokens").write_text(f"op:operator:{OPERATOR}\n")
    serve = Serve(
        tmp_path,
        ["--db", f"sqlite:///{tmp_path / 'w.db'}", "--token-file", str(tmp_path / "tokens")],
    )
    try:
        yield serve
    finally:
        serve.stop()
        print(serve.logs())


def test_forbid_reserve_survives_kill_9_with_its_remaining_ttl(serve_sqlite: Serve) -> None:
    serve = serve_sqlite
    serve.start()
    body = {"domain_id": "pdu6", "action": "forbid", "reason": "genset maintenance", "ttl_s": 600}
    r = httpx.post(f"{serve.url}/overrides/reserve", json=body, headers=AUTH, timeout=5.0)
    assert r.status_code == 201, r.text
    set_ov = r.json()
    serve.kill9()  # right after the 201: the override must already be durable
    time.sleep(2.0)  # down for a while: the TTL keeps running
    serve.start()
    restarted_at = time.time()
    got = httpx.get(f"{serve.url}/overrides", headers=AUTH, timeout=5.0).json()["overrides"]
    assert [(o["kind"], o["target"], o["action"]) for o in got] == [("reserve", "pdu6", "forbid")]
    ov = got[0]
    assert ov["expires_s"] == pytest.approx(set_ov["expires_s"])  # same deadline...
    remaining_s = ov["expires_s"] - restarted_at
    assert 0 < remaining_s < 600 - 2.0  # ...so less of it is left
    status = httpx.get(f"{serve.url}/status", headers=AUTH, timeout=5.0).json()
    assert status["overrides_active"] == 1
    events = httpx.get(
        f"{serve.url}/events", params={"kind": "override.restored"}, headers=AUTH, timeout=5.0
    ).json()["events"]
    assert len(events) == 1 and "forbid" in events[0]["message"]
    assert events[0]["data"]["remaining_ttl_s"] < 600 - 2.0


@pytest.mark.slow
def test_no_acknowledged_sample_is_lost_when_serve_is_killed_during_a_database_outage(
    tmp_path: Path,
) -> None:
    """The bench's run, shorter: a 4 s PostgreSQL outage before the kill -9."""
    if pg_bin_dir() is None:
        pytest.skip(SKIP_REASON)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_durability import Settings, run

    settings = Settings(rate=20.0, warmup_s=2.0, outage_s=4.0, after_kill_s=2.0, drain_s=60.0)
    result = asyncio.run(run(settings, tmp_path, print))
    print(result)
    assert result["acked_before_kill"] > 20  # serve really was acknowledging before the kill
    assert result["lost_acked"] == 0
    assert result["lost_published"] == 0  # the broker redelivered what serve had not acked
    assert result["stored"] == result["published"] == result["acked"]
    # The audit log of the outage is there: a row per domain per tick, no hole.
    assert result["audit_gap_max_s"] <= 2.5
    assert result["audit_rows_outage"] >= result["audit_domains"] * (result["outage_s"] - 3)
