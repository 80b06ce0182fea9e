"""Run capacity candidates as Ray tasks (the ``capacity`` extra: ``pip install
'wattwheel[capacity]'``).

The inputs (trace, resolved sites, forecast model) are put in Ray's object store once; each
candidate is an independent task that receives a reference to them, so nothing is re-read or
re-sent per task. By default a private local Ray instance is started (``num_cpus`` workers, a
small object store) and shut down at the end; with an address the executor joins an existing
cluster (``ray start --head``) and only disconnects from it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from wattwheel.domain.errors import WattwheelError
from wattwheel.sim.capacity import Candidate, CapacityInputs, evaluate

#: Object store of a local instance: the inputs are a few MB; Ray's minimum is ~75 MB.
LOCAL_OBJECT_STORE_BYTES = 150 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0


class ClusterUnreachable(WattwheelError):
    """The Ray cluster named by ``--ray-address`` cannot be reached."""


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise WattwheelError(
            "running on Ray needs the capacity extra: pip install 'wattwheel[capacity]' "
            "(or run with --serial)"
        ) from None
    return ray


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one line, when nothing listens at ``host:port`` (``ray://`` too)."""
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ClusterUnreachable(
            f"--ray-address {address!r}: expected HOST:PORT (the head's GCS port, e.g. "
            "127.0.0.1:6379) or ray://HOST:PORT"
        )
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
            "(is `ray start --head` running there?)"
        ) from None


def _remote_evaluate(inputs: CapacityInputs, cand: Candidate) -> dict[str, float]:
    return evaluate(inputs, cand)


class RayExecutor:
    """Candidates as Ray tasks; ``wait`` returns whichever finishes first."""

    def __init__(
        self,
        inputs: CapacityInputs,
        address: str | None = None,
        num_cpus: int = 2,
        object_store_bytes: int = LOCAL_OBJECT_STORE_BYTES,
    ) -> None:
        ray = _import_ray()
        self.ray = ray
        if address:
            check_reachable(address)
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    object_store_memory=object_store_bytes,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
        except Exception as exc:  # Ray raises many types (ConnectionError, RuntimeError...)
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise ClusterUnreachable(f"cannot start or join {where}: {exc}") from None
        self._task = ray.remote(num_cpus=1)(_remote_evaluate)
        self._inputs_ref = ray.put(inputs)
        self._running: dict[Any, Candidate] = {}

    @property
    def nodes(self) -> int:
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def submit(self, cand: Candidate) -> None:
        ref = self._task.remote(self._inputs_ref, cand)
        self._running[ref] = cand

    def wait(self) -> tuple[Candidate, dict[str, float]]:
        ready, _ = self.ray.wait(list(self._running), num_returns=1)
        ref = ready[0]
        cand = self._running.pop(ref)
        try:
            metrics: dict[str, float] = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, WattwheelError) else exc
            raise WattwheelError(
                f"{cand.policy} at {cand.servers} servers failed on Ray: {cause}"
            ) from None
        return cand, metrics

    def close(self) -> None:
        for ref in self._running:
            self.ray.cancel(ref, force=True)
        self._running.clear()
        self.ray.shutdown()
