"""A throw-away PostgreSQL server for tests and benchmarks: initdb into a temp dir, run on a free
port with its unix socket in that dir, stop and delete it afterwards.

PostgreSQL refuses to run as root; when we are root, every server command runs as the
``postgres`` system user (``runuser``) and the temp dir is chowned to it. If no PostgreSQL
binaries are installed, :func:`pg_bin_dir` returns None and tests skip with that reason.

Used by ``tests/adapters/store`` (fixture :func:`postgres_server`) and
``benchmarks/bench_ingest.py``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

SKIP_REASON = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)"


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL bin dir, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir. ``start()``/``stop()`` may be repeated."""

    def __init__(self, fast: bool = True) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(SKIP_REASON)
        self.bin_dir = bin_dir
        self.port = free_port()
        # Directly under /tmp: pytest's tmp dirs are root-only (0700) and postgres must enter it.
        self.base = Path(tempfile.mkdtemp(prefix="wattwheel-pg-"))
        self.data_dir = self.base / "data"
        self.log_file = self.base / "server.log"
        self.fast = fast
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{log}")

    def start(self) -> None:
        opts = [f"-p {self.port}", f"-k {self.base}", "-c listen_addresses=127.0.0.1"]
        if self.fast:  # tests only: durability is not what they check
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(opts),
            "start",
        )
        self._wait_port()

    def _wait_port(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not open port {self.port}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def postgres_server(fast: bool = True) -> Iterator[PgServer]:
    """Generator for a pytest fixture: a started server, destroyed afterwards."""
    server = PgServer(fast=fast)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def fresh_pg_database(server: PgServer) -> str:
    """Create an empty database on ``server``; its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    import psycopg  # only needed when a server runs

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"
