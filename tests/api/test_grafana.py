"""The Grafana dashboard in deploy/grafana is valid JSON whose queries use only metric names that
/metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from wattwheel.api.metrics import METRIC_HELP

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "wattwheel-dashboard.json"
# Counters gain _total, histograms _bucket/_sum/_count in the exposition format.
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def test_dashboard_queries_use_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used = {m for e in exprs for m in re.findall(r"\bwattwheel_[a-z_]+", e)}
    exported = set(METRIC_HELP) | {n + s for n in METRIC_HELP for s in SUFFIXES}
    assert used <= exported, used - exported
    for name in (
        "wattwheel_demand_kw",
        "wattwheel_capacity_kw",
        "wattwheel_kes_soc",
        "wattwheel_reserve_state",
        "wattwheel_loop_latency_seconds_bucket",
    ):
        assert name in used
