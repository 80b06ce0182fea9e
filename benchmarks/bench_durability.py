"""Nothing acknowledged is lost: ``kill -9`` of ``wattwheel serve`` during a database outage.

Everything is real and started here on free ports: a PostgreSQL server (initdb in a temp dir,
fsync on), a Mosquitto broker, ``wattwheel serve`` (its MQTT ingester subscribed with QoS 1 on a
persistent session; the default durable store with its spill journal) and a QoS-1 publisher of
sequence-numbered samples (one sample per message; the sequence number is in the sample's
``source``, ``bench-seq-<n>``, which the store keeps, prefixed ``mqtt:``). Timeline:

1. serve runs on PostgreSQL; the publisher sends ``--rate`` messages/s throughout;
2. after ``--warmup-s`` PostgreSQL is stopped (``pg_ctl stop -m fast``);
3. ``--outage-s`` later (15 s by default) serve is killed with SIGKILL;
4. the publisher keeps going ``--after-kill-s`` more, then stops; PostgreSQL is started again,
   then serve (same working directory, so the same spill journal);
5. we wait until serve has acknowledged every published message (the broker redelivers what it
   had not acknowledged) or ``--drain-s`` passed, then count rows in PostgreSQL.

Definitions (what the JSON line reports):

- ``published``: messages the broker acknowledged to the publisher (PUBACK received: QoS 1, the
  broker took responsibility for them).
- ``acked``: distinct sequence numbers whose PUBACK *serve* sent to the broker, i.e. messages
  the broker considers delivered and will never redeliver. Measured exactly: serve reaches the
  broker through a small MQTT-aware TCP relay in this script, which decodes the PUBLISH packets
  the broker sends (packet id -> sequence number, from the payload) and the PUBACK packets serve
  sends back (packet id), and counts a message once its PUBACK was forwarded to the broker.
  ``acked_before_kill`` counts those sent before the SIGKILL.
- ``stored``: distinct sequence numbers in PostgreSQL's ``telemetry`` table at the end.
- ``lost_acked``: ``acked`` minus ``stored`` (must be 0: an acknowledged sample is durable).
- ``lost_published``: published but not stored at the end (at-least-once delivery: also 0 when
  serve got back up, the broker redelivering what serve had not acknowledged).
- ``duplicate_rows``: telemetry rows beyond one per sequence number (at-least-once).
- ``audit_rows_outage``: decision rows (the audit log) stamped between the database stop and the
  kill (one per domain per tick, ``outage_s`` measured); ``audit_gap_max_s``: the longest gap
  between two consecutive stored decision times in that window (about the 1 s control period
  when none is missing); ``audit_lost_s``: the kill time minus the last stored decision's time
  (rows still in the loop's memory when the process died: at most the store-flush period, 1 s,
  plus a tick).

    .venv/bin/python benchmarks/bench_durability.py --json

Needs PostgreSQL server binaries (``/usr/lib/postgresql/*/bin``) and Mosquitto
(``scripts/system-deps.sh``). Figures in the README came from a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aiomqtt  # noqa: E402
import httpx  # noqa: E402
import psycopg  # noqa: E402

from services import Mosquitto, free_port  # noqa: E402
from services_pg import PgServer  # noqa: E402
from wattwheel.runtime.inventory import default_inventory  # noqa: E402
from wattwheel.sim.scenario import bundled_site, load_scenario  # noqa: E402

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
MQTT_SITE = "bench"
SEQ = re.compile(rb"bench-seq-(\d+)")


# ------------------------------------------------------------------ MQTT-aware relay


@dataclass
class AckLedger:
    """What the relay saw: PUBLISHes sent to serve and the PUBACKs serve sent back."""

    acked: set[int] = field(default_factory=set)
    acked_at_s: dict[int, float] = field(default_factory=dict)
    delivered: set[int] = field(default_factory=set)


def _remaining_length(buf: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """(value, bytes used) of the MQTT varint at ``start``; None if incomplete."""
    value, mult = 0, 1
    for i in range(4):
        if start + i >= len(buf):
            return None
        b = buf[start + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i + 1
        mult *= 128
    raise ValueError("malformed MQTT remaining length")


def _packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Pop whole packets (first byte, body) off the front of ``buf``."""
    out = []
    while len(buf) >= 2:
        rl = _remaining_length(buf, 1)
        if rl is None:
            break
        length, used = rl
        end = 1 + used + length
        if len(buf) < end:
            break
        out.append((buf[0], bytes(buf[1 + used : end])))
        del buf[:end]
    return out


class Relay:
    """TCP relay serve -> broker that decodes MQTT 3.1.1 / 5 PUBLISH and PUBACK packets."""

    def __init__(self, broker_port: int, ledger: AckLedger) -> None:
        self.broker_port = broker_port
        self.ledger = ledger
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self._conns |= {c_writer, b_writer}
        pending: dict[int, list[int]] = {}  # packet id -> sequence numbers in flight to serve
        conn = {"v5": False}
        try:
            await asyncio.gather(
                self._pump(b_reader, c_writer, lambda p: self._from_broker(p, pending, conn)),
                self._pump(c_reader, b_writer, lambda p: self._from_client(p, pending, conn)),
            )
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            for w in (c_writer, b_writer):
                w.close()
                self._conns.discard(w)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_packet: Callable[[tuple[int, bytes]], Callable[[], None] | None],
    ) -> None:
        buf = bytearray()
        while data := await reader.read(65536):
            buf.extend(data)
            done = []
            for packet in _packets(buf):
                writer.write(bytes([packet[0]]) + _encode_rl(len(packet[1])) + packet[1])
                after = on_packet(packet)
                if after is not None:
                    done.append(after)
            await writer.drain()  # forwarded: only now do the PUBACKs count
            for after in done:
                after()
        writer.close()

    def _from_client(
        self, packet: tuple[int, bytes], pending: dict[int, list[int]], conn: dict[str, bool]
    ) -> Callable[[], None] | None:
        kind, body = packet[0] >> 4, packet[1]
        if kind == 1:  # CONNECT: protocol name (2+len) then the level
            name_len = int.from_bytes(body[:2], "big")
            conn["v5"] = body[2 + name_len] == 5
        if kind == 4 and len(body) >= 2:  # PUBACK
            seqs = pending.pop(int.from_bytes(body[:2], "big"), [])

            def record() -> None:
                now = time.monotonic()
                for s in seqs:
                    self.ledger.acked.add(s)
                    self.ledger.acked_at_s.setdefault(s, now)

            return record
        return None

    def _from_broker(
        self, packet: tuple[int, bytes], pending: dict[int, list[int]], conn: dict[str, bool]
    ) -> None:
        first, body = packet
        if first >> 4 != 3 or not (first >> 1) & 3:  # only QoS > 0 PUBLISHes carry an id
            return None
        topic_len = int.from_bytes(body[:2], "big")
        pos = 2 + topic_len
        packet_id = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        if conn["v5"]:
            rl = _remaining_length(body, pos)
            assert rl is not None
            pos += rl[1] + rl[0]
        seqs = [int(m) for m in SEQ.findall(body[pos:])]
        pending[packet_id] = seqs
        self.ledger.delivered.update(seqs)
        return None


def _encode_rl(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ------------------------------------------------------------------ publisher


@dataclass
class Publisher:
    """QoS-1 publisher of one sequence-numbered sample per message, at ``rate`` per second."""

    port: int
    racks: list[str]
    rate: float
    published: set[int] = field(default_factory=set)
    next_seq: int = 0
    running: bool = True

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="bench-publisher") as client:
            t0 = time.monotonic()
            while self.running:
                seq = self.next_seq
                self.next_seq += 1
                rack = self.racks[seq % len(self.racks)]
                payload = json.dumps(
                    {
                        "v": 1,
                        "ts": time.time(),
                        "rack": rack,
                        "power_w": 5000.0 + (seq % 100),
                        "kind": "rack",
                        "source": f"bench-seq-{seq}",
                    }
                )
                await client.publish(f"wattwheel/{MQTT_SITE}/telemetry/{rack}", payload, qos=1)
                self.published.add(seq)  # the broker's PUBACK arrived
                delay = t0 + (seq + 1) / self.rate - time.monotonic()
                await asyncio.sleep(max(delay, 0.0))


# ------------------------------------------------------------------ serve


class Serve:
    def __init__(self, cwd: Path, db_url: str, devices: Path) -> None:
        self.cwd = cwd
        self.api_port = free_port()
        self.args = [
            "serve",
            "--db",
            db_url,
            "--devices",
            str(devices),
            "--port",
            str(self.api_port),
            "--policy",
            "reactive",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with (self.cwd / f"serve-{self.runs}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                WATTWHEEL + self.args,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def wait_up(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    r = await http.get(f"http://127.0.0.1:{self.api_port}/api/v1/status")
                    if r.status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise RuntimeError(f"serve did not answer within {timeout_s} s:\n{self.log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        return "\n".join(
            f"----- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.cwd.glob("serve-*.log"))
        )


def device_map(mqtt_port: int) -> dict[str, Any]:
    """An MQTT-only device map for the bundled site (no other device is wired)."""
    site = load_scenario(bundled_site(), None).site
    return {
        "format": "wattwheel-device-map",
        "version": 1,
        "site": site.name,
        "domains": {d: list(r) for d, r in zip(site.domain_names, site.domain_racks, strict=True)},
        "inventory": default_inventory(site, 100.0, 2000.0).to_json(),
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "site": MQTT_SITE},
    }


# ------------------------------------------------------------------ the run


@dataclass(frozen=True)
class Settings:
    rate: float = 20.0
    warmup_s: float = 5.0
    outage_s: float = 15.0
    after_kill_s: float = 3.0
    drain_s: float = 60.0


def _count(dsn: str, kill_wall_s: float, pg_stop_wall_s: float) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT source FROM telemetry WHERE source LIKE '%bench-seq-%'"
        ).fetchall()
        decisions = [
            float(t)
            for (t,) in conn.execute(
                "SELECT timestamp_s FROM decisions WHERE timestamp_s <= %s ORDER BY timestamp_s",
                (kill_wall_s,),
            ).fetchall()
        ]
        n_domains = int(
            conn.execute("SELECT count(DISTINCT domain_id) FROM decisions").fetchone()[0]
        )
    # the ingester may prefix the source with its transport ("mqtt:bench-seq-12")
    seqs = [int(s.rsplit("bench-seq-", 1)[1]) for (s,) in rows]
    in_outage = [t for t in decisions if t >= pg_stop_wall_s]
    times = sorted(set(in_outage))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "audit_gap_max_s": round(max(gaps), 2) if gaps else float("nan"),
        "stored_seqs": set(seqs),
        "rows": len(seqs),
        "audit_rows_outage": len(in_outage),
        "audit_last_s": decisions[-1] if decisions else float("nan"),
        "n_domains": n_domains,
    }


async def run(settings: Settings, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    pg = PgServer(fast=False)
    mosquitto = Mosquitto(work, free_port())
    ledger = AckLedger()
    relay = Relay(mosquitto.port, ledger)
    devices = work / "devices.json"
    serve: Serve | None = None
    try:
        await asyncio.to_thread(pg.start)
        mosquitto.start()
        await relay.start()
        devices.write_text(json.dumps(device_map(relay.port)))
        serve = Serve(work, pg.url, devices)
        serve.start()
        await serve.wait_up()
        site = load_scenario(bundled_site(), None).site
        racks = [r for rs in site.domain_racks for r in rs]
        pub = Publisher(mosquitto.port, racks, settings.rate)
        pub_task = asyncio.ensure_future(pub.run())
        deadline = time.monotonic() + 60
        while not ledger.acked:  # serve's ingester is subscribed and acknowledging
            if pub_task.done():
                pub_task.result()
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve acknowledged nothing in 60 s\n{serve.log()}")
            await asyncio.sleep(0.2)
        log(f"serve up and acknowledging; warm-up {settings.warmup_s:g} s")
        await asyncio.sleep(settings.warmup_s)
        pg_stop_wall_s = time.time()
        await asyncio.to_thread(pg.stop)
        log(f"PostgreSQL stopped; kill -9 of serve in {settings.outage_s:g} s")
        await asyncio.sleep(settings.outage_s)
        kill_wall_s, kill_mono_s = time.time(), time.monotonic()
        serve.kill9()
        acked_before_kill = {s for s, t in ledger.acked_at_s.items() if t <= kill_mono_s}
        log(f"serve killed ({len(acked_before_kill)} acked so far); publishing on")
        await asyncio.sleep(settings.after_kill_s)
        pub.running = False
        await pub_task
        await asyncio.to_thread(pg.start)
        serve.start()
        await serve.wait_up()
        log("PostgreSQL and serve restarted; waiting for the broker's redeliveries")
        deadline = time.monotonic() + settings.drain_s
        while not pub.published <= ledger.acked and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # the last acknowledged batch reaches the database
        dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres"
        counted = await asyncio.to_thread(_count, dsn, kill_wall_s, pg_stop_wall_s)
        stored: set[int] = counted["stored_seqs"]
        return {
            "published": len(pub.published),
            "acked": len(ledger.acked),
            "acked_before_kill": len(acked_before_kill),
            "stored": len(stored & pub.published),
            "lost_acked": len(ledger.acked - stored),
            "lost_acked_before_kill": len(acked_before_kill - stored),
            "lost_published": len(pub.published - stored),
            "duplicate_rows": counted["rows"] - len(stored),
            "audit_rows_outage": counted["audit_rows_outage"],
            "audit_domains": counted["n_domains"],
            "outage_s": round(kill_wall_s - pg_stop_wall_s, 2),
            "audit_gap_max_s": counted["audit_gap_max_s"],
            "audit_lost_s": round(kill_wall_s - counted["audit_last_s"], 2),
            "settings": vars(settings) | {"postgres_fsync": True},
        }
    finally:
        if serve is not None:
            serve.stop()
            if os.environ.get("BENCH_SHOW_LOGS"):
                print(serve.log(), file=sys.stderr)
        await relay.stop()
        mosquitto.cleanup()
        pg.destroy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    ap.add_argument("--rate", type=float, default=Settings.rate, help="messages per second")
    ap.add_argument("--warmup-s", type=float, default=Settings.warmup_s)
    ap.add_argument("--outage-s", type=float, default=Settings.outage_s)
    ap.add_argument("--after-kill-s", type=float, default=Settings.after_kill_s)
    ap.add_argument("--drain-s", type=float, default=Settings.drain_s)
    args = ap.parse_args()
    settings = Settings(args.rate, args.warmup_s, args.outage_s, args.after_kill_s, args.drain_s)

    def log(message: str) -> None:
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="wattwheel-bench-durability-"))
    try:
        result = asyncio.run(run(settings, work, log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
