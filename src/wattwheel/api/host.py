"""The control process's side of ``wattwheel serve``'s API process (:mod:`.process`): start it,
feed it the live state, run the commands it forwards, restart it when it dies or stops
answering.

Three threads, none of them on the control loop:

- the **supervisor** starts the process (on the listening socket ``serve`` bound), watches it
  (exit code, heartbeats: one per second from its event loop) and restarts it after a crash, or
  after :attr:`ApiProcess.stall_s` without a heartbeat (killed first), with a backoff doubling
  from 0.5 s to 30 s (reset after a minute of health). Each restart is logged, counted
  (``errors{kind="task"}``), recorded as a ``task.crash`` event, and shown in ``/api/v1/status``
  ``tasks`` as ``api-process`` (state, restarts, last error) and in
  ``wattwheel_task_restarts_total{task="api-process"}``;
- the **sender** drains the :class:`StateMirror` (a full dump first, then the loop's writes,
  batched: it waits 50 ms after the first write for the rest of the tick's) and every 0.2 s
  the extras (leadership, tasks, store health, overrides) into the channel;
- the **receiver** runs the commands: overrides through a :class:`LocalDesk` on the
  controller's own state, overrides and store; stored-row reads (``memory://`` only);
  heartbeats.

The loop only ever appends its writes to the bounded mirror: an API process that is slow,
blocked, crashed or restarting costs it nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from wattwheel.adapters.store.base import Store, StoreUnavailable
from wattwheel.adapters.store.models import model_history_for
from wattwheel.api.desk import CommandRefused, LocalDesk
from wattwheel.api.ipc import JSON, PICKLE, Channel, ChannelClosed
from wattwheel.runtime.state_mirror import MirroredLiveState
from wattwheel.runtime.supervise import Backoff

log = logging.getLogger("wattwheel.api.host")

NAME = "api-process"
#: How often the sender adds the extras (leadership, tasks, store health, overrides).
EXTRAS_PERIOD_S = 0.2
#: After the first queued write, how long the sender waits for the rest of the tick's writes
#: before it sends them as one batch (it then takes the interpreter lock once per tick, not
#: at each write while the tick runs).
SEND_LINGER_S = 0.05
#: Stored-row reads the API process may forward (``memory://``).
STORE_READS = frozenset({"telemetry", "forecasts", "decisions", "events", "models"})


def listen_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The API's listening socket, bound here so that the port outlives an API process.
    Raises OSError (port in use, bad address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class ApiProcess:
    """See the module docstring.

    Args:
        listen: the bound, listening socket the API process serves on.
        init: what the API process needs to start (tokens, site name, db URL, ...), sent first.
        state: the controller's live state (its mirror feeds the API process).
        desk: runs the forwarded override commands.
        store: the controller's store (forwarded reads).
        extras: leadership, tasks, store health and overrides, as plain values.
        on_crash: ``(message)`` each time the process is restarted.
    """

    def __init__(
        self,
        listen: socket.socket,
        init: Mapping[str, Any],
        state: MirroredLiveState,
        desk: LocalDesk,
        store: Store,
        extras: Callable[[], dict[str, Any]],
        on_crash: Callable[[str], None] | None = None,
        backoff: Backoff | None = None,
        stall_s: float = 15.0,
        startup_s: float = 90.0,
    ) -> None:
        self.listen = listen
        self.init = dict(init)
        self.state = state
        self.mirror = state.mirror
        self.desk = desk
        self.store = store
        self.extras = extras
        self.on_crash = on_crash
        self.backoff = backoff or Backoff()
        self.stall_s = stall_s
        self.startup_s = startup_s
        self._stopping = threading.Event()
        self._extras_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._health: dict[str, Any] = {
            "name": NAME,
            "state": "backoff",
            "restarts": 0,
            "last_error": None,
            "last_error_s": None,
            "started_s": None,
            "pid": None,
        }
        self._beat = 0.0
        self._beats = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="wattwheel-api-supervisor")
        self._thread.daemon = True

    # ---- public ----

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the API process (SIGTERM, then SIGKILL) and the threads; blocking."""
        self._stopping.set()
        self._thread.join(timeout_s)

    def health(self) -> dict[str, Any]:
        """The process as ``/api/v1/status`` ``tasks`` shows a supervised task."""
        with self._health_lock:
            return dict(self._health)

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # ---- supervision ----

    def _set_health(self, **fields: Any) -> None:
        with self._health_lock:
            self._health.update(fields)

    def _supervise(self) -> None:
        delay_s = self.backoff.first_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                reason = self._run_once()
            except Exception as exc:  # could not even start it: retried like a crash
                log.exception("API process: could not start it")
                reason = f"could not start: {type(exc).__name__}: {exc}"
            if reason is None or self._stopping.is_set():
                break
            if time.monotonic() - started >= self.backoff.healthy_s:
                delay_s = self.backoff.first_s
            with self._health_lock:
                self._health.update(
                    state="backoff",
                    restarts=int(self._health["restarts"]) + 1,
                    last_error=reason,
                    last_error_s=time.time(),
                )
            log.error("API process %s; restarting it in %.1f s", reason, delay_s)
            if self.on_crash is not None:
                try:
                    self.on_crash(f"{NAME}: {reason}; restarting it")
                except Exception:
                    log.exception("API process: reporting the crash failed")
            self._stopping.wait(delay_s)
            delay_s = min(delay_s * 2, self.backoff.max_s)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Channel]:
        ours, theirs = socket.socketpair()
        try:
            cmd = [
                sys.executable,
                "-m",
                "wattwheel.api.process",
                "--ipc-fd",
                str(theirs.fileno()),
                "--listen-fd",
                str(self.listen.fileno()),
                "--parent-pid",
                str(os.getpid()),
            ]
            # Its own session: a Ctrl-C meant for serve reaches serve, which ends it in order.
            proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(), self.listen.fileno()), start_new_session=True
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return proc, Channel(ours, PICKLE, frozenset({JSON}))

    def _run_once(self) -> str | None:
        """Run one API process until it dies or stalls (the reason) or we stop (None)."""
        proc, channel = self._spawn()
        self.proc = proc
        self._beat, self._beats = time.monotonic(), 0
        self._set_health(state="running", started_s=time.time(), pid=proc.pid)
        self.mirror.start()  # the new process starts from a full dump
        done = threading.Event()
        threads = [
            threading.Thread(target=self._send, args=(channel, done), name="wattwheel-api-send"),
            threading.Thread(target=self._receive, args=(channel,), name="wattwheel-api-recv"),
        ]
        try:
            channel.send(self.init)
            for t in threads:
                t.daemon = True
                t.start()
            return self._watch(proc)
        finally:
            done.set()
            self.mirror.stop()
            self._end(proc)
            channel.close()
            for t in threads:
                t.join(5.0)

    def _watch(self, proc: subprocess.Popen[bytes]) -> str | None:
        while not self._stopping.wait(0.25):
            code = proc.poll()
            if code is not None:
                return f"exited with code {code}"
            limit_s = self.stall_s if self._beats else self.startup_s
            silent_s = time.monotonic() - self._beat
            if silent_s > limit_s:
                proc.kill()
                return f"did not answer for {silent_s:.0f} s (killed)"
        return None

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not reaped in 5 s
            log.error("API process %d did not end", proc.pid)
        self._set_health(pid=None)

    # ---- the channel ----

    def _push_extras(self) -> None:
        """Queue the extras; under a lock, so extras reach the API process in the order they
        were taken (a command's own extras are never overtaken by older ones)."""
        with self._extras_lock:
            try:
                extras = self.extras()
            except Exception:
                log.exception("API process: the status extras could not be taken")
                return
            self.mirror.put("extras", extras)

    def _send(self, channel: Channel, done: threading.Event) -> None:
        due = 0.0
        try:
            while not done.is_set():
                now = time.monotonic()
                if now >= due:
                    self._push_extras()
                    due = now + EXTRAS_PERIOD_S
                batch = self.mirror.take(self.state, EXTRAS_PERIOD_S, SEND_LINGER_S)
                if batch:
                    channel.send(batch)
        except ChannelClosed:
            pass
        except Exception:
            log.exception("API process: sending the state failed")

    def _receive(self, channel: Channel) -> None:
        try:
            while True:
                message = channel.recv()
                if not isinstance(message, dict):
                    continue
                op = message.get("op")
                self._beat = time.monotonic()
                if op == "heartbeat":
                    self._beats += 1
                    continue
                self._answer(message)
        except ChannelClosed:
            pass
        except Exception:
            log.exception("API process: reading its commands failed")

    def _answer(self, message: Mapping[str, Any]) -> None:
        n = message.get("id")
        args = message.get("args")
        ok, value = False, (400, "malformed command")
        if isinstance(args, dict):
            if message.get("op") == "desk":
                ok, value = self._desk(args)
            elif message.get("op") == "store":
                ok, value = self._read(args)
        with self._extras_lock:
            if ok and message.get("op") == "desk":
                try:
                    self.mirror.put("extras", self.extras())
                except Exception:
                    log.exception("API process: the status extras could not be taken")
            self.mirror.put("reply", (n, ok, value))

    def _desk(self, args: Mapping[str, Any]) -> tuple[bool, Any]:
        command, kwargs = args.get("command"), args.get("args")
        if not isinstance(command, str) or not isinstance(kwargs, dict):
            return False, (400, "malformed command")
        try:
            return True, self.desk.run(command, kwargs)
        except CommandRefused as exc:
            return False, (exc.status, exc.detail)
        except (ValueError, TypeError) as exc:
            return False, (422, str(exc))
        except Exception as exc:
            log.exception("API process: command %s failed", command)
            return False, (500, f"{type(exc).__name__}: {exc}")

    def _read(self, args: Mapping[str, Any]) -> tuple[bool, Any]:
        method, kwargs = args.get("method"), args.get("kwargs")
        if method not in STORE_READS or not isinstance(kwargs, dict):
            return False, (400, "malformed read")
        try:
            if method == "models":
                history = model_history_for(self.store)
                return True, [] if history is None else history.models(**kwargs)
            return True, getattr(self.store, str(method))(**kwargs)
        except StoreUnavailable as exc:
            return False, (503, f"store unavailable: {exc}")
        except (ValueError, TypeError) as exc:
            return False, (422, str(exc))
