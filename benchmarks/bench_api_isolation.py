"""Tick latency of ``wattwheel serve`` while its API is hammered, vs idle, in one run
(issue 7; target: the hammered tick p99 within 20 % of the idle tick p99).

Real processes: ``wattwheel emulate`` (the default scenario: three domains, 120 servers,
Redfish, SNMP, Modbus, reserve and scheduler HTTP, MQTT when a ``mosquitto`` binary exists) and
``wattwheel serve`` (its own SQLite store and tokens, ``--control-period`` 0.1 s so a phase has
hundreds of ticks), with its API process as ``serve`` runs it (``--api-nice``, ``--api-cpus``:
passed through, defaults as ``serve``'s).

Once serve's start-up work is over (its ``warm:*`` tasks done, then ``--warmup-s``): phases
of ``--phase-s`` each, idle and hammered interleaved A B B A (``--cycles`` pairs, each
second pair reversed) so that a drift in the machine's own load falls on both; the ticks of each
kind are pooled (>= 300 per phase at the defaults) and ``--settle-s`` after each phase are
counted in neither. Hammered: a separate load-generator process (a lean keep-alive HTTP/1.1
client on asyncio streams, ~0.1 ms of CPU per request) sends ``--reads`` requests/s
spread over ``/status``, ``/domains``, ``/decisions``, ``/racks``, ``/events`` and ``/metrics``
(viewer token) and ``--bodies`` requests/s of 1 MB JSON bodies to ``POST /overrides/cap``
(operator token; the API process refuses them, 413), at most 32 in flight. Tick durations are
serve's own (``/api/v1/loop/ticks``: the runtime's measurement of each tick).

The load generator stands for the API's clients, which on a real site run on other hosts, not
on the controller's: here it shares this machine, so by default it runs at ``--client-nice 19``
and on the API process's CPUs (``--client-cpus api``; ``any``: not pinned). ``emulate`` and
``mosquitto`` stand for the plant's devices and broker, other hosts on a real site too: by
default they run on the control process's CPUs, where no API work runs (``--plant-cpus
control``; ``any``: not pinned). The tick waits for the emulated devices' answers (the reserve
is read every tick, caps and setpoints are written), so where they run is part of what is
measured; both choices are printed with the figures (``settings``).

Usage: ``python benchmarks/bench_api_isolation.py [--phase-s 30] [--cycles 2] [--reads 200]
[--bodies 5] [--api-cpus auto] [--api-nice 10] [--client-nice 19] [--client-cpus api]
[--plant-cpus control]``.
Progress goes to stderr; the result is one JSON line on stdout: idle and hammered tick p50/p99,
the ratio, requests answered, load average, the CPU time each process used per second of each
kind of phase, and every process's niceness and CPUs as read back from ``/proc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from wattwheel.api.placement import allowed_cpus, split_cpus

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
VIEWER, OPERATOR = "bench-viewer-token-0123", "bench-operator-token-0123"
READS = ("/status", "/domains", "/decisions?limit=100", "/racks", "/events?limit=100")
CONTROL_PERIOD_S = 0.1
MAX_IN_FLIGHT = 32
TARGET = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    args: list[str], log: Path, cwd: Path, cpus: frozenset[int] | None = None
) -> subprocess.Popen[bytes]:
    def place() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=place,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- /proc read-backs


def nice_of(pid: int) -> int:
    """A process's niceness, from /proc (field 19 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def cpus_of(pid: int) -> list[int]:
    """The CPUs any thread of ``pid`` may run on (the union over its threads)."""
    cpus: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpus |= set(os.sched_getaffinity(int(task.name)))
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(cpus)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def waits(pid: int) -> dict[int, int]:
    """Per thread of ``pid``: nanoseconds spent runnable but waiting for a CPU (schedstat)."""
    out: dict[int, int] = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out[int(task.name)] = int((task / "schedstat").read_text().split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    except FileNotFoundError:
        pass
    return out


def waited_s(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds waited between two :func:`waits` samples by the threads present in both."""
    return sum(after[t] - before[t] for t in before.keys() & after.keys()) / 1e9


def placement(pid: int) -> dict[str, Any]:
    return {"pid": pid, "nice": nice_of(pid), "cpus": cpus_of(pid)}


# ---------------------------------------------------------------- the system


def start_system(work: Path, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """mosquitto + emulate + serve; the API URL once decisions flow, and the processes."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    # Where serve will put its control process (the same split as serve's --api-cpus).
    split = split_cpus(args.api_cpus, allowed_cpus())
    plant = None if split is None or args.plant_cpus == "any" else split[0]
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    mqtt = ["--no-mqtt"]
    if Path(mosquitto).exists():
        port = _free_port()
        (work / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        procs["mosquitto"] = _start(
            [mosquitto, "-c", str(work / "m.conf")], work / "mq.log", work, plant
        )
        mqtt = ["--mqtt-url", f"127.0.0.1:{port}"]
    devices = work / "devices.json"
    procs["emulate"] = _start(
        [*WATTWHEEL, "emulate", "--speed", "10", "--devices", str(devices), *mqtt],
        work / "emulate.log", work, plant,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not devices.exists():
        if time.monotonic() > deadline or procs["emulate"].poll() is not None:
            raise RuntimeError(f"emulate did not start: {(work / 'emulate.log').read_text()}")
        time.sleep(0.2)
    time.sleep(0.5)
    (work / "tokens").write_text(f"v:viewer:{VIEWER}\nop:operator:{OPERATOR}\n")
    api_port = _free_port()
    procs["serve"] = _start(
        [*WATTWHEEL, "serve", "--devices", str(devices), "--port", str(api_port),
         "--db", f"sqlite:///{work / 'live.db'}", "--token-file", str(work / "tokens"),
         "--control-period", str(CONTROL_PERIOD_S), "--plan-period", "10",
         "--history-step", "1", "--api-nice", str(args.api_nice), "--api-cpus", args.api_cpus],
        work / "serve.log", work,
    )  # fmt: skip
    url = f"http://127.0.0.1:{api_port}/api/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            r = httpx.get(f"{url}/decisions", headers=_auth(VIEWER), timeout=5)
            if r.status_code == 200 and len(r.json()["decisions"]) >= 3:
                return url, procs
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or procs["serve"].poll() is not None:
            raise RuntimeError(f"serve did not start: {(work / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.5)


def warmed(url: str, timeout_s: float = 180.0) -> float:
    """Wait until serve's start-up work is over (the ``warm:*`` tasks - Redfish discovery,
    SNMP tables - done): it would land in the first phase. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        status = httpx.get(f"{url}/status", headers=_auth(VIEWER), timeout=10).json()
        warm = [t for t in status["tasks"] if str(t["name"]).startswith("warm:")]
        if all(t["state"] == "done" for t in warm):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"serve's warm-up tasks not done after {timeout_s:g} s")


def api_pid(url: str) -> int:
    status = httpx.get(f"{url}/status", headers=_auth(VIEWER), timeout=10).json()
    task = next(t for t in status["tasks"] if t["name"] == "api-process")
    return int(task["pid"])


def tick_count(url: str) -> int:
    return int(httpx.get(f"{url}/loop/ticks", params={"after": 2**62},
                         headers=_auth(VIEWER), timeout=10).json()["count"])  # fmt: skip


def ticks_between(url: str, first: int, end: int) -> list[float]:
    """The durations (ms) of ticks ``first`` .. ``end - 1`` (serve keeps the last 1,000)."""
    r = httpx.get(f"{url}/loop/ticks", params={"after": first}, headers=_auth(VIEWER), timeout=10)
    return list(r.json()["latency_ms"])[: end - first]


# ---------------------------------------------------------------- the load generator


class _Conn:
    """One keep-alive HTTP/1.1 connection of the load generator (plain asyncio streams: a
    request costs the generator ~0.1 ms of CPU, against ~2.5 ms with httpx, so the client's own
    work is not what the server's CPU competes with)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes = b"") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(head + body)
        with contextlib.suppress(ConnectionError):  # refused early (413): its answer may be there
            await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        if "content-length" in fields:
            await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        if fields.get("connection", "").lower() == "close" or body:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def hammer(url: str, seconds: float, reads_per_s: float, bodies_per_s: float) -> Counter[str]:
    """Send reads and 1 MB bodies at fixed rates for ``seconds`` over at most ``MAX_IN_FLIGHT``
    connections (keep-alive; a body goes on a connection of its own, closed after): a request due
    while all are busy is counted as ``skipped``, so a server that cannot keep up shows as a
    lower answered rate, not as a growing backlog."""
    parsed = httpx.URL(url)
    host, port, prefix = str(parsed.host), int(parsed.port or 80), parsed.path
    body = json.dumps(
        {"scope": "rack", "target": "cella_pdu6", "cap_kw": 1.0, "reason": "x" * 1_000_000}
    ).encode()
    targets = [f"{prefix}{r}" for r in READS] + ["/metrics"]
    reads = [
        f"GET {t} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {VIEWER}\r\n\r\n".encode()
        for t in targets
    ]
    post = (
        f"POST {prefix}/overrides/cap HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answered: Counter[str] = Counter()
    idle = [_Conn(host, port) for _ in range(MAX_IN_FLIGHT)]

    async def send(kind: str, conn: _Conn, head: bytes, payload: bytes = b"") -> None:
        try:
            status = await asyncio.wait_for(conn.request(head, payload), 5.0)
            answered[f"{kind} {status}"] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            answered[f"{kind} {type(exc).__name__}"] += 1
            conn.close()
        finally:
            idle.append(conn)

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    n_reads = n_bodies = 0
    while (now := time.monotonic() - start) < seconds:
        due: list[tuple[str, bytes, bytes]] = []
        while n_reads < now * reads_per_s:
            due.append(("read", reads[n_reads % len(reads)], b""))
            n_reads += 1
        while n_bodies < now * bodies_per_s:
            due.append(("1MB body", post, body))
            n_bodies += 1
        tasks = {t for t in tasks if not t.done()}
        for kind, head, payload in due:
            if idle:
                tasks.add(asyncio.ensure_future(send(kind, idle.pop(), head, payload)))
            else:
                answered["skipped (client full)"] += 1
        await asyncio.sleep(0.002)
    print("done", flush=True)  # the phase ends here (see run)
    for task in tasks:  # the phase is over: what is still in flight is not waited for
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return answered


def hammer_main(url: str, seconds: float, reads: float, bodies: float) -> None:
    """The load generator's own process: 'ready', wait for a line, hammer, 'done', counts."""
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    answered = asyncio.run(hammer(url, seconds, reads, bodies))
    print(json.dumps({"answered": dict(answered), "took_s": time.monotonic() - started}))


def start_hammer(
    url: str, args: argparse.Namespace, cpus: list[int] | None
) -> subprocess.Popen[str]:
    def place() -> None:
        os.nice(args.client_nice)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    cmd = [sys.executable, __file__, "--hammer", url, str(args.phase_s), str(args.reads),
           str(args.bodies)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=place
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the load generator did not start")
    return proc


# ---------------------------------------------------------------- phases


def pct(ms: list[float], q: float) -> float:
    return float(np.quantile(np.array(ms), q)) if ms else float("nan")


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    url, procs = start_system(work, args)
    try:
        say(f"  warm-up tasks done after {warmed(url):.0f} s")
        time.sleep(args.warmup_s)  # first forecasts
        pids = {"control (serve)": procs["serve"].pid, "api": api_pid(url),
                "emulate": procs["emulate"].pid}  # fmt: skip
        api_cpus = cpus_of(pids["api"])
        all_cpus = sorted(os.sched_getaffinity(0))
        client_cpus = api_cpus if args.client_cpus == "api" and api_cpus != all_cpus else None
        order: list[str] = []
        for cycle in range(args.cycles):
            order += ["idle", "hammered"] if cycle % 2 == 0 else ["hammered", "idle"]
        ticks: dict[str, list[float]] = {"idle": [], "hammered": []}
        per_phase: list[dict[str, Any]] = []
        cpu_used: dict[str, Counter[str]] = {"idle": Counter(), "hammered": Counter()}
        cpu_wait: dict[str, Counter[str]] = {"idle": Counter(), "hammered": Counter()}
        seconds: Counter[str] = Counter()
        answered: Counter[str] = Counter()
        client: dict[str, Any] | None = None
        for i, kind in enumerate(order):
            gen = start_hammer(url, args, client_cpus) if kind == "hammered" else None
            if gen is not None:
                pids["load generator"] = gen.pid
                client = placement(gen.pid)
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            waited = {name: waits(pid) for name, pid in pids.items()}
            t0, c0 = time.monotonic(), tick_count(url)
            if gen is not None:
                assert gen.stdin is not None and gen.stdout is not None
                gen.stdin.write("go\n")
                gen.stdin.flush()
                if gen.stdout.readline().strip() != "done":
                    raise RuntimeError("the load generator failed")
            else:
                time.sleep(args.phase_s)
            c1, took_s = tick_count(url), time.monotonic() - t0
            used = {name: cpu_s(pid) - before[name] for name, pid in pids.items()}
            queued = {name: waited_s(waited[name], waits(pid)) for name, pid in pids.items()}
            if gen is not None:
                # Read on through the same buffered pipe that gave "done" (communicate() reads
                # the raw pipe and misses a last line already buffered with it).
                assert gen.stdin is not None and gen.stdout is not None
                gen.stdin.close()
                out = gen.stdout.read()
                gen.wait(30)
                result = json.loads(out.strip().splitlines()[-1])
                answered.update(result["answered"])
                pids.pop("load generator")
            ms = ticks_between(url, c0, c1)
            ticks[kind] += ms
            cpu_used[kind].update(used)
            cpu_wait[kind].update(queued)
            seconds[kind] += took_s
            p50, p99 = pct(ms, 0.5), pct(ms, 0.99)
            per_phase.append({"kind": kind, "ticks": len(ms), "p50_ms": round(p50, 2),
                              "p99_ms": round(p99, 2), "max_ms": round(max(ms), 2)})  # fmt: skip
            say(f"  phase {i + 1}/{len(order)} {kind:8s} {len(ms):4d} ticks: p50 {p50:6.1f} ms "
                f"p99 {p99:6.1f} ms max {max(ms):6.1f} ms; CPU s/s "
                + ", ".join(f"{n} {u / took_s:.2f}" for n, u in used.items())
                + "; waiting for a CPU s/s "
                + ", ".join(f"{n} {u / took_s:.2f}" for n, u in queued.items()))  # fmt: skip
            time.sleep(args.settle_s)  # in-flight requests end, queues drain: counted nowhere
        settings = {
            "control (serve)": placement(pids["control (serve)"]),
            "api": placement(pids["api"]),
            "load generator": client,
            "emulate": placement(pids["emulate"]),
            "mosquitto": placement(procs["mosquitto"].pid) if "mosquitto" in procs else None,
            "serve": {
                "--api-nice": args.api_nice,
                "--api-cpus": args.api_cpus,
                "--control-period": CONTROL_PERIOD_S,
            },
            "machine_cpus": all_cpus,
        }
    finally:
        for proc in reversed(procs.values()):
            _stop(proc)
    idle_p99, hammered_p99 = pct(ticks["idle"], 0.99), pct(ticks["hammered"], 0.99)
    ok = sum(n for k, n in answered.items() if k.endswith((" 200", " 413")))
    return {
        "idle_p99_ms": round(idle_p99, 2),
        "hammered_p99_ms": round(hammered_p99, 2),
        "ratio": round(hammered_p99 / idle_p99, 3),
        "target": TARGET,
        "met": bool(hammered_p99 / idle_p99 <= TARGET),
        "idle_p50_ms": round(pct(ticks["idle"], 0.5), 2),
        "hammered_p50_ms": round(pct(ticks["hammered"], 0.5), 2),
        "ticks": {k: len(v) for k, v in ticks.items()},
        "order": order,
        "phases": per_phase,
        "requests_answered": ok,
        "requests_per_s": round(ok / seconds["hammered"], 1),
        "requests": dict(answered),
        "offered": {"reads_per_s": args.reads, "bodies_per_s": args.bodies, "body_bytes": 10**6},
        "cpu_s_per_s": {
            kind: {name: round(u / seconds[kind], 3) for name, u in cpu_used[kind].items()}
            for kind in cpu_used
        },
        # Time runnable but waiting for a CPU, summed over each process's threads (those alive
        # at both ends of a phase).
        "cpu_wait_s_per_s": {
            kind: {name: round(u / seconds[kind], 3) for name, u in cpu_wait[kind].items()}
            for kind in cpu_wait
        },
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "settings": settings,
    }


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--hammer":
        hammer_main(sys.argv[2], *(float(x) for x in sys.argv[3:6]))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phase-s", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--cycles", type=int, default=2, help="idle/hammered pairs (A B, B A, ...)")
    ap.add_argument("--settle-s", type=float, default=2.0, help="uncounted gap after a phase")
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--reads", type=float, default=200.0, help="read requests per second")
    ap.add_argument("--bodies", type=float, default=5.0, help="1 MB bodies per second")
    ap.add_argument("--api-nice", type=int, default=10, help="serve --api-nice")
    ap.add_argument("--api-cpus", default="auto", help="serve --api-cpus (auto, off, a list)")
    ap.add_argument("--client-nice", type=int, default=19, help="the load generator's niceness")
    ap.add_argument(
        "--client-cpus",
        choices=("api", "any"),
        default="api",
        help="api: the load generator on the API process's CPUs (when pinned); any: unpinned",
    )
    ap.add_argument(
        "--plant-cpus",
        choices=("control", "any"),
        default="control",
        help="control: emulate and mosquitto (the devices and broker, other hosts on a real "
        "site) on the control process's CPUs, off the API's; any: unpinned",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as work:
        result = run(Path(work), args)
    say(
        f"idle p99 {result['idle_p99_ms']} ms, hammered p99 {result['hammered_p99_ms']} ms: "
        f"ratio {result['ratio']} ({'WITHIN' if result['met'] else 'ABOVE'} the {TARGET} target)"
        f"; {result['requests_answered']} requests answered ({result['requests_per_s']}/s); "
        f"load {result['load_avg_end'][0]}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
