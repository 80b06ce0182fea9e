"""Real protocol peers for tests, each started on a free port and stopped afterwards.

- ``snmpsim``: the SNMP simulator serving ``.snmprec`` recordings (UDP).
- ``mosquitto``: an MQTT broker with a throw-away config (TCP), restartable on the same port.

Nothing here relies on services already running on the machine. Import the fixtures from
``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# snmpsim drops root privileges before it indexes the data files, and the unprivileged user
# may not be able to read the Python install (e.g. under /root/.pyenv). These modules are
# imported lazily after the drop, so load them first.
_SNMPSIM_PRELOAD = (
    "import dbm.dumb, encodings.latin_1, encodings.ascii, encodings.utf_8, "
    "encodings.hex_codec, sys\n"
    "from snmpsim.commands.responder import main\n"
    "sys.argv[0] = 'snmpsim-command-responder'\n"
    "sys.exit(main())\n"
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 nobody listens on right now (TCP by default, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class SnmpSim:
    """A running ``snmpsim-command-responder``; ``port`` is its UDP port on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        # pytest's tmp_path is private to root (0700), so the dropped-privilege simulator
        # could not read it: use a world-readable directory instead.
        self.work_dir = Path(tempfile.mkdtemp(prefix="wattwheel-snmpsim-"))
        self.data_dir = self.work_dir / "data"
        shutil.copytree(data_dir, self.data_dir)
        cache_dir = self.work_dir / "cache"
        cache_dir.mkdir()
        for path in (self.work_dir, self.data_dir, *self.data_dir.iterdir()):
            path.chmod(0o755)
        cache_dir.chmod(0o777)
        self.log_path = self.work_dir / "snmpsim.log"
        args = [
            sys.executable,
            "-c",
            _SNMPSIM_PRELOAD,
            f"--data-dir={self.data_dir}",
            f"--cache-dir={cache_dir}",
            f"--agent-udpv4-endpoint=127.0.0.1:{port}",
            "--log-level=error",
        ]
        env = dict(os.environ)
        import snmpsim  # here, not at the top: conftest imports this module for every test

        if os.geteuid() == 0:
            if _others_can_traverse(Path(snmpsim.__file__).parent):
                args += ["--process-user=nobody", "--process-group=nogroup"]
            else:
                # A checkout under /root: nobody could not import the rest of snmpsim/pysnmp
                # after the drop. snmpsim's own escape hatch keeps it running as root.
                env["SNMPSIM_ALLOW_ROOT"] = "true"
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, community: str, timeout_s: float = 30.0) -> None:
        """Wait until a GET of sysDescr answers (indexing the recordings takes a few seconds)."""
        probe = _snmp_probe_packet(community)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpsim exited: {self.log_path.read_text()[-2000:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                sock.sendto(probe, ("127.0.0.1", self.port))
                with contextlib.suppress(OSError):
                    return bool(sock.recv(4096))
            return False

        _wait_for(answers, timeout_s, "snmpsim")

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _others_can_traverse(path: Path) -> bool:
    """True if an unprivileged user can reach ``path`` (o+x on it and every parent)."""
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


def _snmp_probe_packet(community: str) -> bytes:
    """A hand-encoded SNMPv2c GetRequest for sysDescr.0 (no library, so it cannot lie)."""
    oid = bytes([0x06, 0x08, 0x2B, 6, 1, 2, 1, 1, 1, 0])
    varbind = _tlv(0x30, oid + b"\x05\x00")
    pdu = _tlv(0xA0, b"\x02\x01\x01" + b"\x02\x01\x00" + b"\x02\x01\x00" + _tlv(0x30, varbind))
    return _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, community.encode()) + pdu)


def _tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1:``port``, no persistence, anonymous access."""

    def __init__(
        self, work_dir: Path, port: int, extra_config: str = "", persistent: bool = False
    ) -> None:
        self.port = port
        self.config = work_dir / "mosquitto.conf"
        # Persistence (sessions, subscriptions and queued messages survive a graceful restart)
        # is written to a world-writable directory: as root, mosquitto drops to its own user.
        store = Path(tempfile.mkdtemp(prefix="wattwheel-mosquitto-")) if persistent else None
        if store is not None:
            store.chmod(0o777)
        persistence = (
            f"persistence true\npersistence_location {store}/\n"
            if store is not None
            else "persistence false\n"
        )
        self._store = store
        self.config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            # Without it the broker's PUBACKs wait on Nagle + delayed ACK (~40 ms per window).
            "set_tcp_nodelay true\n"
            # The default (1000) silently drops QoS 1 messages a slow subscriber has not taken.
            "max_queued_messages 1000000\n"
            f"log_dest stderr\n{extra_config}"
        )
        self.log_path = work_dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        _wait_for(self._accepts, 10.0, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): a persistent broker saves its state."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._store is not None:
            shutil.rmtree(self._store, ignore_errors=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


@pytest.fixture
def snmpsim_factory() -> Iterator[Callable[[Path, str], SnmpSim]]:
    """Start snmpsim on a free UDP port serving a copy of a directory of recordings."""
    started: list[SnmpSim] = []

    def start(data_dir: Path, probe_community: str) -> SnmpSim:
        sim = SnmpSim(data_dir, free_port(socket.SOCK_DGRAM))
        started.append(sim)
        sim.wait_ready(probe_community)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto broker on a free port; stopped (or killed) at the end."""
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto binary not found at {MOSQUITTO}")
    broker = Mosquitto(tmp_path, free_port())
    broker.start()
    yield broker
    broker.cleanup()


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Like ``mosquitto`` with persistence on: stop() + start() keeps sessions and queues."""
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto binary not found at {MOSQUITTO}")
    broker = Mosquitto(tmp_path, free_port(), persistent=True)
    broker.start()
    yield broker
    broker.cleanup()
