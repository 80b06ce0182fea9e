"""``wattwheel serve``'s API process: the FastAPI app (auth gate, routes, SSE, ``/metrics``,
dashboard) in a process of its own, so that no request - read, parsed or answered - can take
the control loop's interpreter lock. Started and supervised by :mod:`.host`; run as
``python -m wattwheel.api.process --ipc-fd N --listen-fd M --parent-pid P``.

- It serves on the listening socket the control process bound (``--listen-fd``): a restart
  never frees the port, and connections wait in its backlog meanwhile.
- Its :class:`LiveState` is a replica: the control process sends a full dump, then every write
  the loop makes (``runtime/state_mirror.py``), plus every 0.2 s the rest of what ``/status``
  and ``/metrics`` show (leadership, tasks, store health, overrides in force).
- Operator commands (overrides) are validated here (auth before the body, 64 KiB gate, 422s),
  then sent to the control process, which applies them (404, 409 or the override) and answers
  after the state writes they caused, so a client reads its own write.
- Stored rows are read from the database with its own connection (SQLite WAL or PostgreSQL);
  with ``memory://`` the reads go to the control process.
- It runs ``--api-nice`` (default 10) below the control process's CPU priority, and with
  ``--api-cpus`` (default ``auto``: with 2+ CPUs, the last one; :mod:`.placement`) on CPUs of
  its own, the control process on the others: on a busy host, a request never takes a core the
  loop is waiting for.
- It dies with the control process: ``PR_SET_PDEATHSIG`` on Linux, and the channel's end of
  stream everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wattwheel.adapters.store.base import ForecastRow, StoreUnavailable
from wattwheel.api.desk import CommandRefused
from wattwheel.api.ipc import JSON, PICKLE, Channel, ChannelClosed
from wattwheel.api.placement import pin_process
from wattwheel.domain.telemetry import PowerSample
from wattwheel.forecast.base import Forecast
from wattwheel.forecast.online import ModelRecord
from wattwheel.runtime.state import DecisionRecord, EventRecord, LiveState, Overrides
from wattwheel.runtime.state_mirror import apply_messages

log = logging.getLogger("wattwheel.api.process")

#: How often the API process tells the control process it is alive (from its event loop).
HEARTBEAT_S = 1.0
#: The longest a command or a forwarded read waits for the control process.
CALL_TIMEOUT_S = 10.0
#: After the channel ends, how long a graceful shutdown may take before the process exits.
EXIT_GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1


@dataclass
class _Call:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    payload: Any = None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class ControlClient:
    """The API process's end of the channel: applies what the control process sends to the
    replica ``state`` and ``overrides``, and makes calls to it (one reader thread)."""

    def __init__(self, channel: Channel, state: LiveState, overrides: Overrides) -> None:
        self.channel = channel
        self.state = state
        self.overrides = overrides
        self.first_dump = threading.Event()
        self.closed = threading.Event()
        self.on_close: Callable[[], None] | None = None
        self._health: dict[str, Any] = {}
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._receive, name="wattwheel-api-receive", daemon=True).start()

    def store_health(self) -> dict[str, Any]:
        return dict(self._health)

    def call(self, op: str, args: dict[str, Any], timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Ask the control process; its payload, or CommandRefused(status, detail) when it
        refused; TimeoutError when it did not answer in time."""
        call = _Call()
        with self._lock:
            n = next(self._ids)
            self._calls[n] = call
        try:
            self.channel.send({"op": op, "id": n, "args": args})
            if not call.done.wait(timeout_s):
                raise TimeoutError(f"the controller did not answer within {timeout_s:g} s")
        except ChannelClosed as exc:
            raise TimeoutError(f"the controller is not reachable: {exc}") from exc
        finally:
            with self._lock:
                self._calls.pop(n, None)
        if not call.ok:
            raise CommandRefused(int(call.payload[0]), str(call.payload[1]))
        return call.payload

    def heartbeat(self) -> None:
        self.channel.send({"op": "heartbeat", "id": 0, "args": {}})

    def _receive(self) -> None:
        try:
            while True:
                batch = self.channel.recv()
                try:
                    self._apply(batch)
                except Exception:  # a bad message must not end the replica
                    log.exception("API process: could not apply a message from the controller")
        except ChannelClosed:
            pass
        finally:
            self.closed.set()
            with self._lock:
                pending = list(self._calls.values())
            for call in pending:
                call.ok, call.payload = False, (503, "the controller closed the channel")
                call.done.set()
            if self.on_close is not None:
                self.on_close()

    def _apply(self, batch: Sequence[Any]) -> None:
        rest = apply_messages(self.state, batch)
        for kind, payload in rest:
            if kind == "extras":
                self._extras(payload)
            elif kind == "reply":
                n, ok, value = payload
                with self._lock:
                    call = self._calls.get(n)
                if call is not None:
                    call.ok, call.payload = ok, value
                    call.done.set()
        if any(kind == "dump" for kind, _ in batch):
            self.first_dump.set()  # with the extras sent along (overrides, tasks)

    def _extras(self, extras: dict[str, Any]) -> None:
        self.overrides.reset(extras["overrides"])
        self._health = dict(extras["store"])
        lead, tasks, disagree = extras["leadership"], extras["tasks"], extras["disagreements"]
        self.state.leadership = None if lead is None else _constant(lead)
        self.state.tasks = _constant(tasks)
        self.state.source_disagreements = None if disagree is None else _constant(disagree)
        learning = extras.get("learning")
        self.state.learning = None if learning is None else _constant(learning)
        budget = extras.get("reserve_budget")
        self.state.reserve_budget = None if budget is None else _constant(budget)


class RemoteDesk:
    """Sends override commands to the control process (see :mod:`.desk`)."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def run(self, command: str, args: Any) -> dict[str, Any]:
        try:
            result = self.client.call("desk", {"command": command, "args": dict(args)})
        except TimeoutError as exc:
            raise CommandRefused(503, f"{exc}; the command may not have been applied") from exc
        return dict(result)


class RemoteStore:
    """Reads stored rows through the control process (``memory://``, which no other process
    can open). Writes are not the API process's business."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def _read(self, method: str, **kwargs: Any) -> Any:
        try:
            return self.client.call("store", {"method": method, "kwargs": kwargs})
        except (TimeoutError, CommandRefused) as exc:
            raise StoreUnavailable(str(exc)) from exc

    def telemetry(
        self, rack_id: str | None = None, since_s: float | None = None, limit: int = 1000
    ) -> list[tuple[int, PowerSample]]:
        return list(self._read("telemetry", rack_id=rack_id, since_s=since_s, limit=limit))

    def forecasts(
        self, series_id: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[tuple[int, ForecastRow]]:
        return list(self._read("forecasts", series_id=series_id, since_s=since_s, limit=limit))

    def decisions(
        self,
        domain_id: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DecisionRecord]]:
        return list(
            self._read(
                "decisions", domain_id=domain_id, before_id=before_id, since_s=since_s, limit=limit
            )
        )

    def events(
        self,
        kind: str | None = None,
        before_id: int | None = None,
        since_s: float | None = None,
        limit: int = 100,
    ) -> list[tuple[int, EventRecord]]:
        return list(
            self._read("events", kind=kind, before_id=before_id, since_s=since_s, limit=limit)
        )

    def models(self, limit: int = 100) -> list[ModelRecord]:
        """The model history (``/api/v1/models``), as the control process's store has it."""
        return list(self._read("models", limit=limit))

    def write_model(self, record: ModelRecord, now_s: float) -> None:
        self._no_write(record)

    def _no_write(self, *_: Any) -> None:
        raise StoreUnavailable("the API process does not write to the store")

    def write_telemetry(self, samples: Sequence[PowerSample]) -> None:
        self._no_write(samples)

    def write_forecast(self, forecast: Forecast) -> None:
        self._no_write(forecast)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        self._no_write(records)

    def write_event(self, event: EventRecord) -> None:
        self._no_write(event)

    def apply_retention(
        self, older_than_s: float, now_s: float, tables: Sequence[str] = ()
    ) -> dict[str, int]:
        self._no_write(older_than_s)
        return {}

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the control process dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the channel's EOF
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _exit_soon(server: Any) -> None:
    """The control process is gone or closed the channel: stop serving, and exit even if a
    client (an SSE stream) holds the graceful shutdown."""
    server.should_exit = True
    timer = threading.Timer(EXIT_GRACE_S, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


async def _serve(server: Any, listen: socket.socket, client: ControlClient) -> None:
    async def beat() -> None:
        while True:
            try:
                client.heartbeat()
            except ChannelClosed:
                return
            await asyncio.sleep(HEARTBEAT_S)

    beating = asyncio.ensure_future(beat())
    try:
        await server.serve(sockets=[listen])
    finally:
        beating.cancel()


def _place(init: dict[str, Any]) -> None:
    """Before any thread starts (they inherit both): below the controller's CPU priority, so
    that on a busy host the loop runs first, and on the API's own CPUs (``--api-cpus``)."""
    if init.get("nice"):
        with contextlib.suppress(OSError):
            os.nice(int(init["nice"]))
    cpus = init.get("cpus")
    if cpus:
        try:
            pin_process(int(c) for c in cpus)
        except OSError as exc:
            log.warning("API process: not pinned to CPU(s) %s: %s", cpus, exc)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m wattwheel.api.process")
    ap.add_argument("--ipc-fd", type=int, required=True)
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent(args.parent_pid)

    import uvicorn

    from wattwheel.adapters.store.sql import SqlStore
    from wattwheel.api.app import create_app

    channel = Channel(socket.socket(fileno=args.ipc_fd), JSON, frozenset({PICKLE}))
    init: dict[str, Any] = channel.recv()
    logging.basicConfig(
        level=init["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _place(init)
    state, overrides = LiveState(init["domain_ids"]), Overrides()
    client = ControlClient(channel, state, overrides)
    db_url: str = init["db_url"]
    store: Any = RemoteStore(client) if db_url == "memory://" else SqlStore.open(db_url, False)
    app = create_app(
        state,
        store,
        overrides,
        init["tokens"],
        anonymous_read=init["anonymous_read"],
        max_body_bytes=init["max_body_bytes"],
        site_name=init["site_name"],
        keepalive_s=init["keepalive_s"],
        desk=RemoteDesk(client),
        store_health=client.store_health,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    client.on_close = lambda: _exit_soon(server)
    client.start()
    if not client.first_dump.wait(30.0):
        log.warning("API process: no state from the controller after 30 s; serving anyway")
    listen = socket.socket(fileno=args.listen_fd)
    try:
        asyncio.run(_serve(server, listen, client))
    finally:
        store.close()


if __name__ == "__main__":
    main()
