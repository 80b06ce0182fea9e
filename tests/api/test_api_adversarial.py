"""A standing adversarial suite against one real ``wattwheel serve`` process (SQLite store, its
own tokens, a device map, the control loop running):

- three concurrent anonymous 24 MB bodies are answered 401 from their headers (an operator's
  413), without the server waiting for the bodies, and the loop keeps ticking;
- the device map rewritten as a restarted emulator would shows as mode ``degraded``;
- schemathesis against the app's OpenAPI document, every operation with operator, viewer and no
  token, valid and invalid inputs: no response may be a 5xx, and the control loop must still be
  ticking afterwards.

Schemathesis' coverage phase (boundary values, wrong types, missing and unknown fields) runs
first with the operator token, then random valid and invalid cases with each token, bounded and
deterministic (``derandomize``): ``WATTWHEEL_FUZZ_EXAMPLES`` (default 8 per
operation, token and mode) raises the budget for a longer local run. The figures (requests
tried, status codes) are printed and written to ``fuzz-summary.json`` in the test's directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from services import free_port
from wattwheel.cli.live_wiring import DEVICE_MAP_FORMAT
from wattwheel.runtime.inventory import default_inventory
from wattwheel.sim.scenario import bundled_site, load_scenario

pytestmark = pytest.mark.service

VIEWER = "fuzz-viewer-token-0123"
OPERATOR = "fuzz-operator-token-0123"
WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
EXAMPLES = int(os.environ.get("WATTWHEEL_FUZZ_EXAMPLES", "8"))
TOKENS = {"operator": OPERATOR, "viewer": VIEWER, "anonymous": None}


@dataclass(frozen=True)
class Served:
    url: str
    devices: Path


def _device_map(status_port: int) -> str:
    """A device map as ``emulate`` writes it, with no device section: the plant is modelled."""
    site = load_scenario(bundled_site(), None).site
    inventory = default_inventory(site, 100.0, 2000.0)
    return json.dumps(
        {
            "format": DEVICE_MAP_FORMAT,
            "inventory": inventory.to_json(),
            "domains": {
                d: list(r) for d, r in zip(site.domain_names, site.domain_racks, strict=True)
            },
            "site_status_url": f"http://127.0.0.1:{status_port}/site",
        }
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A ``wattwheel serve`` started here on a device map with no devices (the modelled plant)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "tokens").write_text(f"v:viewer:{VIEWER}\no:operator:{OPERATOR}\n")
    devices = tmp / "devices.json"
    devices.write_text(_device_map(4000))
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *WATTWHEEL,
                "serve",
                "--db",
                f"sqlite:///{tmp / 'fuzz.db'}",
                "--port",
                str(port),
                "--token-file",
                str(tmp / "tokens"),
                "--policy",
                "reactive",
                "--devices",
                str(devices),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield Served(url, devices)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            r = httpx.get(f"{url}/api/v1/status", headers=_auth(VIEWER), timeout=2)
            if r.status_code == 200 and r.json()["loop_latency_ms"]["count"] > 0:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError("serve did not answer within 90 s")


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _status(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/status", headers=_auth(VIEWER), timeout=10)
    return dict(r.json())


def _wait_mode(url: str, mode: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status = _status(url)
    while status["mode"] != mode and time.monotonic() < deadline:
        time.sleep(0.2)
        status = _status(url)
    assert status["mode"] == mode, status
    return status


def test_an_emulator_restart_shows_as_degraded(served: Served) -> None:
    """The emulator restarting rewrites the device map with new ports: serve says ``degraded``
    (status, /metrics, an event) until the map matches its wiring again."""
    wired = served.devices.read_text()
    _wait_mode(served.url, "normal")
    served.devices.write_text(_device_map(4321))  # what a restarted emulator would write
    t0 = time.monotonic()
    status = _wait_mode(served.url, "degraded")
    took_s = time.monotonic() - t0
    assert "changed since serve started" in status["degraded"]["device_map"]
    metrics = httpx.get(f"{served.url}/metrics", headers=_auth(VIEWER), timeout=10).text
    assert 'wattwheel_mode{mode="degraded"} 1.0' in metrics
    # The event reaches the store with the loop's next flush: wait for it, boundedly.
    deadline = time.monotonic() + 15
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        events = httpx.get(
            f"{served.url}/api/v1/events", params={"kind": "device_map"}, headers=_auth(VIEWER)
        ).json()["events"]
        time.sleep(0.2)
    assert events and "changed since serve started" in events[0]["message"]
    print(f"\ndevice map rewritten: mode degraded after {took_s:.1f} s")
    served.devices.write_text(wired)
    assert _wait_mode(served.url, "normal")["degraded"] == {}


def _announce_big_body(port: int, auth_line: bytes) -> tuple[bytes, float]:
    """Send the head of a POST announcing 24 MB plus its first 64 KiB, then wait for the answer."""
    head = (
        b"POST /api/v1/overrides/cap HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth_line
        + f"Content-Length: {24 * 1024 * 1024}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        t0 = time.perf_counter()
        sock.sendall(head + b"[" * 65536)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
        return data, time.perf_counter() - t0


def test_big_bodies_are_refused_from_their_headers(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    before = _ticks(served.url)
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        anonymous = [pool.submit(_announce_big_body, port, b"") for _ in range(3)]
        operator = pool.submit(
            _announce_big_body, port, f"Authorization: Bearer {OPERATOR}\r\n".encode()
        )
        answers = [f.result() for f in [*anonymous, operator]]
    codes = [a[0].split(b" ")[1].decode() for a in answers]
    assert codes == ["401", "401", "401", "413"], [a[0][:100] for a in answers]
    slowest_s = max(a[1] for a in answers)
    assert slowest_s < 5.0
    time.sleep(2.5)
    ticks = _ticks(served.url) - before
    assert ticks >= int(time.monotonic() - t0) - 1, "the loop stalled"
    print(
        f"\n3 anonymous + 1 operator 24 MB bodies: {codes}, slowest answer {slowest_s * 1e3:.0f} ms"
    )


def test_no_input_gets_a_server_error(served: Served, tmp_path: Path) -> None:
    url = served.url
    before = _ticks(url)
    t0 = time.monotonic()
    doc = httpx.get(f"{url}/api/v1/openapi.json", headers=_auth(VIEWER), timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    codes: Counter[int] = Counter()
    phases: Counter[str] = Counter()
    failures: list[str] = []
    session = httpx.Client(base_url=url, timeout=10)

    def call(case: Any, token: str | None, phase: str) -> None:
        phases[phase] += 1
        request = case.as_transport_kwargs(base_url=url, headers=_auth(token))
        # The stream never ends: take its status line and hang up.
        with session.stream(
            request["method"],
            request["url"],
            params=request.get("params"),
            headers=request.get("headers"),
            content=_content(request),
        ) as response:
            codes[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {request['url']} {request.get('params')} "
                    f"{_content(request)!r:.300} -> {response.status_code}"
                )

    operations = [op.ok() for op in schema.get_all_operations()]
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    for op in operations:
        # The coverage phase first: boundaries (min, max, one past), wrong types, missing and
        # unknown fields, one case each, as the operator (who gets past the gate everywhere).
        config = schema.config.generation_for(operation=op)
        for case in schema.iter_coverage_cases(
            op, generation_modes=modes, generation_config=config
        ):
            call(case, OPERATOR, "coverage")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)
            for token in TOKENS.values():
                _run_examples(strategy, lambda case, token=token: call(case, token, "random"))
    session.close()
    took_s = time.monotonic() - t0
    time.sleep(2.5)  # the loop ticks every second: two more ticks at least
    after = _ticks(url)
    summary = {
        "operations": len(operations),
        "requests": sum(codes.values()),
        "requests_by_phase": dict(phases),
        "status_codes": dict(sorted(codes.items())),
        "server_errors": len(failures),
        "examples_per_operation_token_mode": EXAMPLES,
        "seconds": round(took_s, 1),
        "loop_ticks_during_and_after": after - before,
    }
    (tmp_path / "fuzz-summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nschemathesis vs wattwheel serve: {json.dumps(summary)}")
    assert not failures, "\n".join(failures[:20])
    assert summary["requests"] >= len(operations) * 3 * 2  # every operation, token and mode
    assert after - before >= int(took_s), "the control loop stopped ticking under the fuzzer"


def _ticks(url: str) -> int:
    status = httpx.get(f"{url}/api/v1/status", headers=_auth(VIEWER), timeout=10).json()
    return int(status["loop_latency_ms"]["count"])


def _run_examples(strategy: Any, check: Any) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    # Unsatisfiable: a negative schema with no invalid value (an enum of two, say): nothing to send
    with contextlib.suppress(Unsatisfiable):
        run()


def _content(request: dict[str, Any]) -> bytes | None:
    if "json" in request:
        return json.dumps(request["json"], allow_nan=True).encode()
    data = request.get("data")
    if data is None:
        return None
    return data if isinstance(data, bytes) else str(data).encode()
