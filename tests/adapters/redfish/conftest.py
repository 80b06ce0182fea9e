"""A small real HTTP server that serves DMTF Redfish mockups, keeping PATCHes in memory.

Independent of the wattwheel emulator on purpose (stdlib `http.server`), so the client is
tested against the DMTF payloads as recorded, not against our own idea of Redfish.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "redfish"


def load_mockup(name: str) -> dict[str, dict[str, Any]]:
    """Every payload of a DMTF short-form mockup, keyed by the URI that answers it."""
    base = DATA / name
    payloads: dict[str, dict[str, Any]] = {}
    for path in sorted(base.rglob("index.json")):
        rel = path.parent.relative_to(base).as_posix()
        uri = "/redfish/v1/" if rel == "." else f"/redfish/v1/{rel}"
        payloads[uri] = json.loads(path.read_text())
    return payloads


def _merge(current: Any, patch: Any) -> Any:
    """Redfish PATCH semantics: objects merge, arrays merge by index (`{}` = unchanged)."""
    if isinstance(current, dict) and isinstance(patch, dict):
        merged = dict(current)
        for key, value in patch.items():
            merged[key] = _merge(current.get(key), value)
        return merged
    if isinstance(current, list) and isinstance(patch, list):
        return [_merge(c, p) for c, p in zip(current, patch, strict=False)] + current[len(patch) :]
    return patch


class MockupServer:
    """Serves `payloads` over HTTP on a free port; GET, PATCH (merged in memory), POST actions."""

    def __init__(self, payloads: Mapping[str, dict[str, Any]], port: int = 0) -> None:
        self.payloads = copy.deepcopy(dict(payloads))
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        # A deep accept queue: the client fetches outlets concurrently, and a queue of 5
        # would drop SYNs and cost a 1 s retransmit.
        ThreadingHTTPServer.request_queue_size = 64
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: the device stops answering. Idempotent."""
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def _uri(self) -> str:
                path = self.path.split("?", 1)[0]
                return "/redfish/v1/" if path.rstrip("/") == "/redfish/v1" else path.rstrip("/")

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length", "0"))
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                uri = self._uri()
                with server._lock:
                    server.requests.append(("GET", uri, None))
                    payload = copy.deepcopy(server.payloads.get(uri))
                if payload is None:
                    self._reply(404, {"error": {"code": "Base.1.19.ResourceMissingAtURI"}})
                else:
                    self._reply(200, payload)

            def do_PATCH(self) -> None:
                uri, body = self._uri(), self._body()
                with server._lock:
                    server.requests.append(("PATCH", uri, body))
                    if uri not in server.payloads:
                        self._reply(404)
                        return
                    server.payloads[uri] = _merge(server.payloads[uri], body)
                self._reply(204)

            def do_POST(self) -> None:
                uri, body = self._uri(), self._body()
                with server._lock:
                    server.requests.append(("POST", uri, body))
                    resource_uri, _, action = uri.rpartition("/")
                    # A static mockup cannot run actions; apply the one the client uses.
                    if action.endswith("Outlet.PowerControl") and resource_uri in server.payloads:
                        server.payloads[resource_uri]["PowerState"] = body["PowerState"]
                        self._reply(204)
                        return
                self._reply(405)

        return Handler


@pytest.fixture
def rackmount_payloads() -> dict[str, dict[str, Any]]:
    return load_mockup("public-rackmount1")


@pytest.fixture
def pdu_payloads() -> dict[str, dict[str, Any]]:
    return load_mockup("public-pdu")


@pytest.fixture
def serve_mockup() -> Iterator[Callable[..., MockupServer]]:
    """Start MockupServer instances on free ports (or a given one); all stopped afterwards."""
    started: list[MockupServer] = []

    def start(payloads: Mapping[str, dict[str, Any]], port: int = 0) -> MockupServer:
        server = MockupServer(payloads, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
