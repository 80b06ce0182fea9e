"""Run an ASGI app with uvicorn: in a background thread (tests, demos) or in a running loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 10.0


@dataclass
class RunningServer:
    """A uvicorn server running in a daemon thread; `url` is its base URL."""

    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (at most `timeout_s` seconds)."""
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY. Without it uvicorn's separate writes of headers and
    # body meet the client's delayed ACK and every keep-alive request costs ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


@dataclass(frozen=True)
class TlsFiles:
    """PEM certificate and key for serving HTTPS, as real BMCs do."""

    certfile: str
    keyfile: str


def _config(app: Any, log_level: str, tls: TlsFiles | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ssl_certfile=tls.certfile if tls else None,
        ssl_keyfile=tls.keyfile if tls else None,
    )


def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    tls: TlsFiles | None = None,
) -> RunningServer:
    """Start `app` on host:port (0 = a free port) in a daemon thread; returns once it listens.

    With `tls`, it serves HTTPS.
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, log_level, tls))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the emulator did not start listening on {host}:{bound_port}")
        time.sleep(0.01)
    return RunningServer(host, bound_port, server, thread, "https" if tls else "http")


async def serve(
    app: Any, host: str, port: int, log_level: str = "warning", tls: TlsFiles | None = None
) -> None:
    """Serve `app` on host:port inside the running event loop until cancelled.

    Cancelling the task shuts uvicorn down gracefully (listening socket closed, connections
    drained) before the cancellation propagates.
    """
    sock = _bind(host, port)
    server = uvicorn.Server(_config(app, log_level, tls))
    running = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        server.should_exit = True
        await running
        raise
    finally:
        sock.close()
