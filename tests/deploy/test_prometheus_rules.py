"""The Prometheus alert rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana) use
only series that ``/metrics`` really exposes; ``promtool`` accepts the rules and their unit tests
pass; a real Prometheus loads them, scrapes a real ``wattwheel serve`` and evaluates them: the
"store buffering" alert goes active when the serve's PostgreSQL is stopped."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services import free_port
from services_pg import SKIP_REASON, PgServer, pg_bin_dir
from wattwheel.api.metrics import METRIC_HELP, StateCollector, make_registry, render
from wattwheel.runtime.state import (
    DomainSnapshot,
    ForecastBand,
    LiveState,
    Overrides,
    RackSnapshot,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "wattwheel-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests" / "wattwheel-alerts-test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "wattwheel-dashboard.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
NAME = re.compile(r"\bwattwheel_[a-z0-9_]+")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _exposed_series() -> set[str]:
    """Sample names (with _total, _bucket...) a /metrics page exposes: those of a page where
    the families below have data, plus each family's names by its type (a family added later
    without data here still counts)."""
    state = LiveState(("A",))
    state.update_domains(
        [
            DomainSnapshot(
                "A",
                1.0,
                100.0,
                120.0,
                0.5,
                0.0,
                soc_target=0.6,
                forecast=(ForecastBand(300.0, 90.0, 100.0, 110.0),),
                breaker_heat=0.3,
                stale=True,
            )
        ]
    )
    state.count_error("device")
    state.update_racks([RackSnapshot("r1", "A", 5.0, cap_kw=4.0, timestamp_s=1.0)])
    state.record_tick(0.01)
    state.leadership = lambda: [
        {"role": "shard-A", "leading": True, "command_left_s": 1.5},
        {"role": "coordinator", "leading": False, "command_left_s": None},
    ]
    state.source_disagreements = lambda: {"mqtt": 3}
    state.tasks = lambda: [{"name": "poller:snmp", "state": "running", "restarts": 2}]
    health = {"healthy": 0, "pending_items": 1, "spill_bytes": 10, "spill_max_bytes": 100}
    collector = StateCollector(state, Overrides(), lambda: health)
    text = render(make_registry(collector)).decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= set(METRIC_HELP)
    by_type = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = {s.name for f in families for s in f.samples}
    names |= {f.name + suffix for f in families for suffix in by_type.get(f.type, ("",))}
    return names


def test_rules_and_dashboard_use_only_exposed_series() -> None:
    exposed = _exposed_series()
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "WattwheelLoopStalled",
        "WattwheelControllerDown",
        "WattwheelTickP99OverBudget",
        "WattwheelDomainStale",
        "WattwheelSourceDisagreement",
        "WattwheelReserveOn",
        "WattwheelBreakerHeatHigh",
        "WattwheelLeaderLost",
        "WattwheelStoreBuffering",
        "WattwheelStoreSpillGrowing",
    }
    for rule in rules:
        used = set(NAME.findall(rule["expr"]))
        assert used or rule["expr"].startswith("up{"), rule["alert"]
        assert used <= exposed, (rule["alert"], used - exposed)
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            used = set(NAME.findall(target["expr"]))
            assert used <= exposed, (panel.get("title"), used - exposed)


def test_every_metric_the_rules_and_dashboard_use_is_documented() -> None:
    doc = (REPO / "docs" / "live-api.md").read_text()
    exprs = [r["expr"] for r in _rules()]
    dash = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in NAME.findall(e)}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    missing = sorted(n for n in families if f"`{n}" not in doc)
    assert not missing, missing


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in check.stdout
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


# ------------------------------------------------------------------ a real Prometheus, live


def _wait(what: str, timeout_s: float, probe: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (httpx.TransportError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s} s (last: {last!r})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def live_stack(tmp_path: Path) -> Iterator[tuple[str, PgServer]]:
    """(Prometheus base URL, the serve's PostgreSQL) for serve -> Prometheus with the rules."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    if pg_bin_dir() is None:
        pytest.skip(SKIP_REASON)
    pg = PgServer()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "serve.log", tmp_path / "prometheus.log"]
    prom_dir = Path(tempfile.mkdtemp(prefix="wattwheel-prom-"))
    try:
        pg.start()
        api_port, prom_port = free_port(), free_port()
        with logs[0].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*WATTWHEEL, "serve", "--db", pg.url, "--port", str(api_port)],
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        config = prom_dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "wattwheel",
                            "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                        }
                    ],
                }
            )
        )
        with logs[1].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={prom_dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        yield f"http://127.0.0.1:{prom_port}/api/v1", pg
    finally:
        for proc in reversed(procs):
            _stop(proc)
        pg.destroy()
        shutil.rmtree(prom_dir, ignore_errors=True)
        for log in logs:
            if log.exists():
                print(f"----- {log.name}\n{log.read_text()[-3000:]}")


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom}/query", params={"query": expr}, timeout=5.0).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _alert_states(prom: str) -> dict[str, str]:
    alerts = httpx.get(f"{prom}/alerts", timeout=5.0).json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in alerts}


@pytest.mark.slow
@pytest.mark.service
def test_a_real_prometheus_evaluates_the_rules_on_a_real_serve(
    live_stack: tuple[str, PgServer],
) -> None:
    prom, pg = live_stack
    # serve is scraped: its loop ticks, it leads every role, the store is healthy
    _wait("serve scraped", 90, lambda: _query(prom, 'up{job="wattwheel"} == 1'))
    _wait(
        "ticks", 30, lambda: _query(prom, "increase(wattwheel_loop_latency_seconds_count[5s]) > 0")
    )
    leaders = _query(prom, "wattwheel_leader")
    assert leaders and all(float(r["value"][1]) == 1.0 for r in leaders)
    assert float(_query(prom, "wattwheel_store_healthy")[0]["value"][1]) == 1.0
    sources = {r["metric"]["source"] for r in _query(prom, "wattwheel_source_disagreements_total")}
    assert sources == {"bmc", "outlets", "mqtt"}
    spill_max = float(_query(prom, "wattwheel_store_spill_max_bytes")[0]["value"][1])
    assert spill_max == 512 * 1024 * 1024

    def rules_evaluated() -> list[dict[str, Any]]:
        groups = httpx.get(f"{prom}/rules", timeout=5.0).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = len(rules) == len(_rules()) and all(
            r.get("lastEvaluation", "0001")[:4] != "0001" for r in rules
        )
        return rules if done else []

    rules = _wait("every rule evaluated", 30, rules_evaluated)
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    healthy = ("WattwheelLoopStalled", "WattwheelControllerDown", "WattwheelLeaderLost")
    quiet = (*healthy, "WattwheelStoreBuffering", "WattwheelStoreSpillGrowing")

    def all_quiet() -> dict[str, str] | None:
        states = _alert_states(prom)
        return states if not any(name in states for name in quiet) else None

    # A rule evaluated in serve's first seconds (scrapes from before its first tick count as
    # "no tick in a minute") can leave an alert pending; on a healthy serve every one of
    # these clears at the next evaluations and none may stay.
    _wait("no alert on a healthy serve", 20, lambda: all_quiet() is not None)
    # The database goes away: writes spill, the "store buffering" alert goes active.
    pg.stop()
    _wait("store unhealthy", 30, lambda: _query(prom, "wattwheel_store_healthy == 0"))
    _wait(
        "WattwheelStoreBuffering active",
        30,
        lambda: _alert_states(prom).get("WattwheelStoreBuffering") in ("pending", "firing"),
    )
    spill = _wait("spill growing", 30, lambda: _query(prom, "wattwheel_store_spill_bytes > 0"))
    assert math.isfinite(float(spill[0]["value"][1]))
    assert "WattwheelLoopStalled" not in _alert_states(prom)  # the loop does not wait on the DB
