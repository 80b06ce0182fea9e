"""Failover between two ``wattwheel serve --etcd`` processes, measured at the emulated devices
(issue 8 item 4; target: the new leader's first command < 3 s after the old leader died, and no
bank ever commanded by both).

Real processes: a single-member ``etcd`` on free ports (its own data directory), ``wattwheel
emulate --no-mqtt --write-log`` (the default scenario: three domains, a SunSpec flywheel bank
each behind one Modbus TCP port; every accepted write is recorded with its wall time and the
client's TCP address) and two ``wattwheel serve --etcd`` processes with default timing (lease
TTL, control period). The leader (whoever holds every role) is paused (``kill -STOP`` for
``--pause-s``, then ``kill -CONT``: it must find its lease gone and follow) or killed (``kill
-9``, then restarted as a follower), alternately, ``--events`` times. The Modbus writes are
attributed to a process by the client's TCP port (this script maps each serve's sockets from
``/proc``).

Per event and bank: ``first_command_after_crash_s`` = the new leader's first setpoint write
minus the moment of the signal; ``gap_s`` = that write minus the old leader's last one.
``overlapping_writes``: writes that interleave two instances on a bank (each event may hand a
bank over once; every further change of writer is counted). ``expiry_s`` (when the bench saw
the old election keys disappear in etcd) splits the time into waiting for the lease and the
takeover.

Usage: ``python benchmarks/bench_failover.py [--events 6] [--json]``.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
INSTANCES = ("ctl-a", "ctl-b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _popen(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "WATTWHEEL_TOKENS": ""},
        )  # fmt: skip


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)


# ------------------------------------------------------------------------- who writes what
def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_ports_to(remote_port: int) -> dict[str, int]:
    """Socket inode -> local port of every TCP connection to ``remote_port``."""
    found: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if int(remote.rsplit(":", 1)[1], 16) == remote_port:
                found[inode] = int(local.rsplit(":", 1)[1], 16)
    return found


class PortMap:
    """Client TCP port -> instance name, refreshed from /proc every 50 ms in a thread."""

    def __init__(self, modbus_port: int) -> None:
        self.modbus_port = modbus_port
        self.pids: dict[str, int] = {}
        self.owner: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def refresh(self) -> None:
        ports = _tcp_ports_to(self.modbus_port)
        for name, pid in list(self.pids.items()):
            for inode in _socket_inodes(pid):
                if inode in ports:
                    self.owner[ports[inode]] = name

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.refresh()


# ------------------------------------------------------------------------- the system
@dataclass
class Serve:
    name: str
    api_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    def status(self) -> dict[str, Any] | None:
        try:
            reply = httpx.get(f"{self.url}/status", timeout=2.0)
            return dict(reply.json()) if reply.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def leading(self) -> set[str]:
        st = self.status() or {}
        return {r["role"] for r in st.get("leadership") or [] if r.get("leading")}

    def ticking(self) -> bool:
        st = self.status() or {}
        return int((st.get("loop_latency_ms") or {}).get("count") or 0) >= 3


@dataclass
class System:
    work: Path
    etcd_url: str = ""
    modbus_port: int = 0
    roles: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    serves: dict[str, Serve] = field(default_factory=dict)
    ports: PortMap | None = None

    @property
    def write_log(self) -> Path:
        return self.work / "modbus-writes.jsonl"

    def start(self, serve_args: list[str]) -> None:
        self._start_etcd()
        self._start_emulator()
        self.ports = PortMap(self.modbus_port)
        self.ports.start()
        self.serve_args = serve_args
        for serve in (Serve(name, free_port()) for name in INSTANCES):
            self.serves[serve.name] = serve
            self.start_serve(serve.name)
            _wait(f"{serve.name} answers", lambda s=serve: s.status() is not None, 120)
            if len(self.serves) == 1:
                # Started together, the instances may split the roles between them (a valid
                # state, but not the one the events below start from): let the first one take
                # every role before the second campaigns.
                _wait(
                    f"{serve.name} leading every role",
                    lambda s=serve: len(s.leading()) == self.roles,
                    120,
                )

    def _start_etcd(self) -> None:
        if not Path(ETCD).exists():
            raise FileNotFoundError(
                f"etcd binary not found at {ETCD} (apt-get install etcd-server)"
            )
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.procs.append(
            _popen([ETCD, "--name=bench", f"--data-dir={self.work / 'etcd'}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=bench={peer_url}"],
                   self.work / "etcd.log", self.work)
        )  # fmt: skip
        _wait("etcd", lambda: _etcd_range(self.etcd_url, "/") is not None, 30)

    def _start_emulator(self) -> None:
        devices = self.work / "devices.json"
        self.procs.append(
            _popen([*WATTWHEEL, "emulate", "--no-mqtt", "--devices", str(devices),
                    "--write-log", str(self.write_log)], self.work / "emulate.log", self.work)
        )  # fmt: skip
        _wait("emulate", devices.exists, 90)
        device_map = json.loads(devices.read_text())
        self.modbus_port = int(device_map["modbus"]["port"])
        self.roles = len(device_map["domains"]) + 1

    def start_serve(self, name: str) -> None:
        serve = self.serves[name]
        args = [*WATTWHEEL, "serve", "--devices", str(self.work / "devices.json"),
                "--db", "memory://", "--port", str(serve.api_port), "--etcd", self.etcd_url,
                "--instance-id", name, "--spill-dir", str(self.work / f"spill-{name}"),
                *self.serve_args]  # fmt: skip
        serve.proc = _popen(args, self.work / f"serve-{name}.log", self.work)
        assert self.ports is not None
        self.ports.pids[name] = serve.proc.pid

    def leader(self, timeout_s: float = 60) -> str:
        found: list[str] = []

        def one_leads_all() -> bool:
            found[:] = [n for n, s in self.serves.items() if len(s.leading()) == self.roles]
            return len(found) == 1

        _wait("one instance leading every role", one_leads_all, timeout_s)
        return found[0]

    def writes(self) -> list[dict[str, Any]]:
        assert self.ports is not None
        self.ports.refresh()
        rows = [json.loads(ln) for ln in self.write_log.read_text().splitlines() if ln.strip()]
        rows = [r for r in rows if r["setpoint"]]
        for r in rows:
            port = str(r["peer"]).rpartition(":")[2]
            r["by"] = self.ports.owner.get(int(port), "unknown") if port.isdigit() else "unknown"
        return rows

    def stop(self) -> None:
        if self.ports is not None:
            self.ports.stop()
        for serve in self.serves.values():
            if serve.proc is not None:
                _end(serve.proc)
        for proc in reversed(self.procs):
            _end(proc, signal.SIGTERM)


def _etcd_range(url: str, prefix: str) -> list[str] | None:
    key = prefix.encode()
    end = key[:-1] + bytes([key[-1] + 1])
    body = {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode()}
    try:
        reply = httpx.post(f"{url}/v3/kv/range", json=body, timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    return [base64.b64decode(kv["value"]).decode() for kv in reply.get("kvs", [])]


# ------------------------------------------------------------------------- one event
@dataclass
class Event:
    kind: str  # "kill -9" or "kill -STOP"
    old: str
    new: str
    at_s: float  # wall time of the signal
    keys_gone_s: float | None = None


def fail_leader(system: System, kind: str, pause_s: float, restart: bool) -> Event:
    old = system.leader()
    new = next(n for n in INSTANCES if n != old)
    proc = system.serves[old].proc
    assert proc is not None
    _wait(f"{new} warm", system.serves[new].ticking, 60)
    time.sleep(2.0)  # steady state: the leader writes every tick
    at_s = time.time()
    os.kill(proc.pid, signal.SIGKILL if kind == "kill -9" else signal.SIGSTOP)
    event = Event(kind, old, new, at_s)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # when the old leader's election keys go
        holders = _etcd_range(system.etcd_url, "/wattwheel/") or []
        if old not in holders:
            event.keys_gone_s = time.time() - at_s
            break
        time.sleep(0.02)
    _wait(f"{new} leads every role", lambda: len(system.serves[new].leading()) == system.roles, 30)
    time.sleep(2.0)  # the new leader commands for a while
    if kind == "kill -9":
        proc.wait(5)
        if restart:
            system.start_serve(old)
            _wait(f"{old} restarted", lambda: system.serves[old].status() is not None, 120)
    else:
        time.sleep(max(pause_s - 4.0, 0.0))
        os.kill(proc.pid, signal.SIGCONT)  # it must find its lease gone and follow
        time.sleep(3.0)
    return event


def analyse(events: list[Event], writes: list[dict[str, Any]]) -> dict[str, Any]:
    units = sorted({int(w["unit"]) for w in writes})
    per_event: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        end_s = events[i + 1].at_s if i + 1 < len(events) else float("inf")
        firsts, gaps = [], []
        for unit in units:
            mine = [w for w in writes if w["unit"] == unit]
            old_last = max((w["t_s"] for w in mine if w["by"] == ev.old and w["t_s"] <= ev.at_s),
                           default=None)  # fmt: skip
            new_first = min(
                (w["t_s"] for w in mine if w["by"] == ev.new and ev.at_s < w["t_s"] < end_s),
                default=None,
            )
            if new_first is None:
                seen = sorted({str(w["by"]) for w in mine if ev.at_s < w["t_s"] < end_s})
                raise RuntimeError(
                    f"{ev.kind}: {ev.new} never commanded unit {unit} (writers then: {seen})"
                )
            firsts.append(new_first - ev.at_s)
            if old_last is not None:
                gaps.append(new_first - old_last)
        per_event.append(
            {
                "kind": ev.kind,
                "old": ev.old,
                "new": ev.new,
                "keys_gone_s": None if ev.keys_gone_s is None else round(ev.keys_gone_s, 3),
                "first_command_s_max": round(max(firsts), 3),
                "gap_s_max": round(max(gaps), 3) if gaps else None,
            }
        )
    changes = 0
    for unit in units:
        seq = [w["by"] for w in sorted(writes, key=lambda w: w["t_s"]) if w["unit"] == unit]
        changes += sum(a != b for a, b in itertools.pairwise(seq))
    expected = len(events) * len(units)
    return {
        "per_event": per_event,
        "writer_changes": changes,
        "overlapping_writes": max(changes - expected, 0),
        "unattributed_writes": sum(w["by"] == "unknown" for w in writes),
    }


def run(
    events: int, pause_s: float, serve_args: list[str], work: Path, restart_last: bool = True
) -> dict[str, Any]:
    system = System(work)
    try:
        system.start(serve_args)
        system.leader(120)
        happened = []
        for i in range(events):
            # A pause first: the paused process resumes as a follower, so the kill that follows
            # needs no restart before it (a bounded test runs just these two).
            kind = "kill -STOP" if i % 2 == 0 else "kill -9"
            happened.append(fail_leader(system, kind, pause_s, restart_last or i + 1 < events))
        time.sleep(1.0)
        result = analyse(happened, system.writes())
    finally:
        system.stop()
    per = result["per_event"]
    gaps = [e["gap_s_max"] for e in per if e["gap_s_max"] is not None]
    return {
        "events": len(per),
        "gap_s_max": max(gaps) if gaps else None,
        "first_command_after_crash_s_max": max(e["first_command_s_max"] for e in per),
        "overlapping_writes": result["overlapping_writes"],
        "unattributed_writes": result["unattributed_writes"],
        "keys_gone_s_max": max((e["keys_gone_s"] or 0.0) for e in per),
        "per_event": per,
        "serve_args": serve_args,
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6, help="failures (STOP / kill -9 alternate)")
    parser.add_argument("--pause-s", type=float, default=8.0, help="how long a STOP lasts (s)")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve option")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wattwheel-failover-"))
    try:
        out = run(args.events, args.pause_s, list(args.serve_arg), work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
        return
    for ev in out["per_event"]:
        print(
            f"{ev['kind']:>10}: {ev['old']} -> {ev['new']}: keys gone {ev['keys_gone_s']} s, "
            f"first command {ev['first_command_s_max']} s, gap {ev['gap_s_max']} s"
        )
    print(
        f"events {out['events']}: first command after crash max "
        f"{out['first_command_after_crash_s_max']} s, gap max {out['gap_s_max']} s, "
        f"overlapping writes {out['overlapping_writes']} ({out['machine']})"
    )


if __name__ == "__main__":
    main()
