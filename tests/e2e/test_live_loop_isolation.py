"""Issue 7 items 1 and 4 at the process level: real ``wattwheel emulate`` + ``wattwheel serve``
on the default scenario (cella-oversub: three domains, three racks of 40 servers) with a
Mosquitto started here.

- Rack pin: an operator pins one rack (``POST /api/v1/overrides/cap {"scope": "rack"}``).
  Every tick used to raise from then on (a whole-site array met a one-rack array in the cap
  planner) while ``mode`` said ``normal``. Now decisions keep coming for every domain, audit
  rows reach the database, the mode stays honest (``normal``, no tick failure) and the rack's
  servers get caps that hold it to its pin.
- Big bodies: three concurrent anonymous 24 MB bodies to a write route while the loop runs.
  The API runs in its own process (``api/process.py``) and refuses the bodies before reading
  them: the decision age (``/status`` ``tick_age_s``: now - the newest decision) stays
  below 3 s throughout, and the audit rows keep reaching the database.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import Mosquitto, free_port

pytestmark = [pytest.mark.service, pytest.mark.slow, pytest.mark.timeout(300)]

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
OPERATOR = "isolation-operator-token-0123"
DOMAINS = {"pdu6", "pdu7", "pdu8"}
MAX_DECISION_AGE_S = 3.0


def _start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            WATTWHEEL + args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _until(what: str, timeout_s: float, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.25)


@dataclass
class Live:
    api: str
    db: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited"

    def get(self, path: str, **params: Any) -> Any:
        self.alive()
        auth = {"Authorization": f"Bearer {OPERATOR}"}
        r = httpx.get(f"{self.api}/api/v1{path}", params=params, headers=auth, timeout=10)
        r.raise_for_status()
        return r.json()

    def decisions_since(self, t_s: float) -> list[tuple[float, str, str]]:
        """(timestamp, domain, mode) of the audit rows stored after ``t_s``."""
        with sqlite3.connect(self.db, timeout=5) as con:
            rows = con.execute(
                "SELECT timestamp_s, domain_id, mode FROM decisions WHERE timestamp_s > ?",
                (t_s,),
            ).fetchall()
        return [(float(t), str(d), str(m)) for t, d, m in rows]

    def newest_decision_s(self) -> float:
        with sqlite3.connect(self.db, timeout=5) as con:
            (t,) = con.execute("SELECT MAX(timestamp_s) FROM decisions").fetchone()
        return float(t or 0.0)


@pytest.fixture
def live(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Live]:
    devices, db = tmp_path / "devices.json", tmp_path / "live.db"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"op:operator:{OPERATOR}\n")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["emulate"] = _start(
            ["emulate", "--speed", "10", "--devices", str(devices),
             "--mqtt-url", f"127.0.0.1:{mosquitto.port}"],
            tmp_path / "emulate.log",
            tmp_path,
        )  # fmt: skip
        _until("the device map", 60, lambda: devices.exists())
        time.sleep(0.5)
        port = free_port()
        procs["serve"] = _start(
            ["serve", "--devices", str(devices), "--port", str(port), "--db", f"sqlite:///{db}",
             "--token-file", str(tokens), "--plan-period", "10", "--history-step", "1"],
            tmp_path / "serve.log",
            tmp_path,
        )  # fmt: skip
        live = Live(f"http://127.0.0.1:{port}", db, procs)

        def every_domain_decided() -> bool:
            try:
                rows = live.get("/decisions", limit=30)["decisions"]
            except httpx.HTTPError:
                return False
            return {d["domain_id"] for d in rows} == DOMAINS and db.exists()

        _until("decisions for every domain", 90, every_domain_decided)
        yield live
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)
        for name in ("emulate", "serve"):  # shown by pytest when the test failed
            log = tmp_path / f"{name}.log"
            print(f"----- {name}.log\n{log.read_text()[-4000:] if log.exists() else ''}")


def test_a_rack_pin_keeps_every_domain_decided_and_the_mode_honest(live: Live) -> None:
    rack = "cella_pdu7"

    def rack_power_kw() -> float:
        row = next(x for x in live.get("/racks")["racks"] if x["rack_id"] == rack)
        return float(row["power_kw"] or 0.0)

    power_kw = _until("the rack's measured power", 30, lambda: rack_power_kw() > 100.0)
    power_kw = rack_power_kw()
    pin_kw = round(0.9 * power_kw, 1)  # 10 % below its draw: above its critical share
    r = httpx.post(
        f"{live.api}/api/v1/overrides/cap",
        json={"scope": "rack", "target": rack, "cap_kw": pin_kw, "reason": "hot aisle"},
        headers={"Authorization": f"Bearer {OPERATOR}"},
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    pinned_at = time.time()

    def capped() -> bool:
        row = next(x for x in live.get("/racks")["racks"] if x["rack_id"] == rack)
        return row["cap_kw"] is not None and row["cap_kw"] <= pin_kw + 0.5

    _until("the rack's caps within its pin", 30, capped)

    def audited() -> dict[str, list[float]] | None:
        rows = live.decisions_since(pinned_at)
        per_domain = {d: sorted(t for t, dom, _ in rows if dom == d) for d in DOMAINS}
        return per_domain if min(len(v) for v in per_domain.values()) >= 8 else None

    per_domain = _until("8 audit rows per domain since the pin", 30, audited)
    # Every domain decided (and was audited) every period: ~1 s apart, none missing.
    for dom, stamps in per_domain.items():
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < MAX_DECISION_AGE_S, f"{dom}: a {max(gaps):.1f} s gap"
    rows = live.decisions_since(pinned_at)
    # No tick raised. (On a loaded machine a late forecast may honestly show as
    # reactive-fallback; what must never appear is a failing tick or a silent one.)
    honest = {"normal", "reactive-fallback"}
    assert {m for _, _, m in rows} <= honest
    status = live.get("/status")
    assert status["mode"] in honest and status["tick_failures"] == 0
    assert status["tick_age_s"] < MAX_DECISION_AGE_S
    assert all(t["restarts"] == 0 for t in status["tasks"]), status["tasks"]


def test_three_anonymous_24_mb_bodies_do_not_delay_the_loop(live: Live) -> None:
    body = b'{"scope": "rack", "target": "' + b"x" * (24 * 1024 * 1024) + b'"}'
    answers: list[int | str] = []
    ages: list[float] = []  # now - the newest decision, as /status reports it
    stop = threading.Event()

    def send() -> None:
        try:
            r = httpx.post(
                f"{live.api}/api/v1/overrides/cap",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            answers.append(r.status_code)
        except httpx.HTTPError as exc:  # the server may close on a refused body
            answers.append(type(exc).__name__)

    def watch() -> None:
        while not stop.is_set():
            # A /status that does not answer is no sample: continuity is checked in the db.
            with contextlib.suppress(httpx.HTTPError):
                age = live.get("/status")["tick_age_s"]
                # None until the first tick of a domain is published: no sample either (it
                # used to raise here and end the watch silently).
                if age is not None:
                    ages.append(float(age))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    senders = [threading.Thread(target=send) for _ in range(3)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(90)
    time.sleep(max(0.0, 5.0 - (time.monotonic() - started)))  # watch at least 5 s
    stop.set()
    watcher.join()
    assert len(answers) == 3 and all(a != 200 for a in answers), answers
    assert not any(isinstance(a, int) and a >= 500 for a in answers), answers
    ended = time.time()
    # Decisions kept coming throughout: the audit rows (read from the database, beside the
    # API) of every domain cover the attack window with no gap of 3 s or more.
    t0 = ended - (time.monotonic() - started)

    def covered() -> dict[str, list[float]] | None:
        rows = live.decisions_since(t0 - MAX_DECISION_AGE_S)
        per = {d: sorted(t for t, dom, _ in rows if dom == d) for d in DOMAINS}
        return per if all(v and v[-1] >= ended for v in per.values()) else None

    per_domain = _until("audit rows past the attack window", 30, covered)
    for dom, stamps in per_domain.items():
        window = [t0 - MAX_DECISION_AGE_S, *(t for t in stamps if t <= ended + 1.0)]
        gap = max(b - a for a, b in itertools.pairwise(window))
        assert gap < MAX_DECISION_AGE_S, f"{dom}: no decision for {gap:.1f} s"
    # And as the API saw it, whenever it answered (/status tick_age_s).
    assert all(a < MAX_DECISION_AGE_S for a in ages), f"decision age up to {max(ages):.1f} s"
    status = live.get("/status")
    assert status["tick_failures"] == 0 and status["mode"] in {"normal", "reactive-fallback"}
    print(
        f"3 x 24 MB anonymous bodies: answers {answers}; decision age max "
        f"{max(ages, default=float('nan')):.2f} s over {len(ages)} reads of /status"
    )
