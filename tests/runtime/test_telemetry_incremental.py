"""The telemetry view keeps its per-rack sums up to date for the racks whose readings or caps
changed (issue 11: the tick's work follows what changed). Checked against the whole-site
computation it replaces, over random readings, caps, gaps and clock steps, on an inventory
whose servers are not listed rack by rack and with a rack that has no server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wattwheel.domain.telemetry import PowerSample
from wattwheel.domain.telemetry_trust import rack_demand_w
from wattwheel.runtime.inventory import Inventory, ServerInfo
from wattwheel.runtime.telemetry import (
    SampleBlock,
    TelemetryView,
    block_targets,
    outlet_servers,
    sample_targets,
)

NOW = 1_700_000_000.0
DOMAINS = ("A", "B")
RACKS = (("a1", "a2", "a3"), ("b1", "b2"))
SERVERS_IN = {"a1": 4, "a2": 3, "a3": 0, "b1": 5, "b2": 2}


def _inventory() -> Inventory:
    servers = []
    for rack, n in SERVERS_IN.items():
        for k in range(n):
            servers.append(
                ServerInfo(f"{rack}-s{k}", rack, k == 0, 1 + k % 3, 100.0, 2_000.0, f"{rack}/{k}")
            )
    order = np.random.default_rng(7).permutation(len(servers))  # not rack by rack
    return Inventory([servers[i] for i in order], DOMAINS, RACKS)


def _complete_sum(view: TelemetryView, values: np.ndarray, times: np.ndarray, cutoff: float):  # type: ignore[no-untyped-def]
    inv, r = view.inv, view.inv.n_racks
    fresh = (times >= cutoff) & np.isfinite(values)
    n_fresh = np.bincount(inv.server_rack, weights=fresh.astype(float), minlength=r)
    complete = (n_fresh == inv.servers_per_rack) & (inv.servers_per_rack > 0)
    total = np.bincount(inv.server_rack, weights=np.nan_to_num(values), minlength=r)
    return np.where(complete, total, np.nan)


def _whole_site(view: TelemetryView, now_s: float) -> dict[str, np.ndarray]:
    """The per-tick computation over every server (what the view did before the sums were
    kept per rack), from the view's tables; read before the view's own ``demand``."""
    inv, r = view.inv, view.inv.n_racks
    cutoff = now_s - view.max_age_s
    srv_fresh = view.server_t >= cutoff
    n_fresh = np.bincount(inv.server_rack, weights=srv_fresh.astype(float), minlength=r)
    srv_complete = (n_fresh == inv.servers_per_rack) & (inv.servers_per_rack > 0)
    est = np.where(
        np.isnan(view.uncapped_w), view.server_w, np.fmax(view.uncapped_w, view.server_w)
    )
    srv_sum = np.bincount(inv.server_rack, weights=np.nan_to_num(est), minlength=r)
    pdu_fresh = (view.pdu_t >= cutoff) & np.isfinite(view.pdu_w)
    meter_t = view.pdu_t[inv.server_rack]
    cap_at = np.where(view.caps_changed_s <= meter_t, view.caps_w, view.caps_prev_w)
    held = np.bincount(
        inv.server_rack, weights=np.nan_to_num(np.maximum(est - cap_at, 0.0)), minlength=r
    )
    out_sum = _complete_sum(view, view.outlet_w, view.outlet_t, cutoff)
    meter = np.where(pdu_fresh, view.pdu_w, np.nan)
    mqtt = np.where(
        (view.mqtt_rack_t >= cutoff) & np.isfinite(view.mqtt_rack_w),
        view.mqtt_rack_w,
        _complete_sum(view, view.mqtt_server_w, view.mqtt_server_t, cutoff),
    )
    mqtt_stand_in = np.where(view.meter_seen, np.nan, mqtt)  # never for a metered rack
    rack_w = rack_demand_w(
        meter + held,
        np.stack([np.where(srv_complete, srv_sum, np.nan), out_sum + held, mqtt_stand_in + held]),
    )
    fresh = np.isfinite(rack_w)
    rack_w = np.where(fresh, rack_w, view.last_good_rack_w)
    crit = np.bincount(inv.server_rack, weights=np.nan_to_num(est) * inv.critical, minlength=r)
    rack_crit = np.where(srv_complete, crit, rack_w * view.critical_fraction[inv.rack_domain])
    d = inv.n_domains
    demand_kw = np.bincount(inv.rack_domain, weights=rack_w, minlength=d) / 1000.0
    critical_kw = np.bincount(inv.rack_domain, weights=rack_crit, minlength=d) / 1000.0
    return {
        "demand_kw": demand_kw,
        "critical_kw": np.minimum(critical_kw, demand_kw),
        "rack_power_w": rack_w,
        "rack_fresh": fresh,
        "stale": np.bincount(inv.rack_domain, weights=(~fresh).astype(float), minlength=d) > 0,
    }


def _readings(view: TelemetryView, rng: np.random.Generator, now_s: float) -> list[PowerSample]:
    """Some of every kind: rack meters, BMCs, outlets, MQTT racks and servers; some late,
    some of them implausible (rejected), some readings at or near a server's cap."""
    out: list[PowerSample] = []
    inv = view.inv
    for rack in inv.rack_ids:
        if rng.random() < 0.6:
            t = now_s - float(rng.choice([0.0, 0.5, 3.0, 20.0]))
            out.append(PowerSample("snmp", rack, None, t, float(rng.uniform(500, 9_000)), "pdu"))
        if rng.random() < 0.2:
            out.append(PowerSample("mqtt:x", rack, None, now_s, float(rng.uniform(0, 9e3)), "rack"))
    for i, s in enumerate(inv.servers):
        if rng.random() < 0.4:
            cap = view.caps_w[i]
            w = float(cap) if math.isfinite(cap) and rng.random() < 0.5 else rng.uniform(50, 2e3)
            bad = rng.random() < 0.03
            out.append(
                PowerSample("redfish", s.rack_id, s.server_id, now_s, -1.0 if bad else w, "server")
            )
        if rng.random() < 0.3:
            n = s.outlet.rsplit("/", 1)[1] if s.outlet else "0"
            out.append(
                PowerSample("snmp", s.rack_id, f"outlet-{n}", now_s, rng.uniform(50, 2e3), "outlet")
            )
        if rng.random() < 0.15:
            out.append(
                PowerSample("mqtt:x", s.rack_id, s.server_id, now_s, rng.uniform(50, 2e3), "server")
            )
    return out


def _blocks(samples: list[PowerSample]) -> list[SampleBlock]:
    groups: dict[tuple[str, str], list[PowerSample]] = {}
    for s in samples:
        groups.setdefault((s.source, s.kind), []).append(s)
    return [
        SampleBlock(
            source,
            kind,
            tuple(s.rack_id for s in rows),
            None if kind in ("pdu", "rack") else tuple(s.server_id for s in rows),
            np.array([s.power_w for s in rows]),
            np.array([s.timestamp_s for s in rows]),
        )
        for (source, kind), rows in groups.items()
    ]


@pytest.mark.parametrize("seed", range(6))
def test_the_per_rack_sums_match_the_whole_site_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inv = _inventory()
    view = TelemetryView(inv, np.array([0.7, 0.6]), max_age_s=5.0, max_power_w=5_000.0)
    n = len(inv.servers)
    now_s = NOW
    for _ in range(60):
        now_s += float(rng.choice([0.3, 1.0, 1.0, 4.0]))
        samples = _readings(view, rng, now_s)
        if rng.random() < 0.5:
            view.ingest(samples, now_s)
        else:  # as arrays: one block per source and kind
            for block in _blocks(samples):
                view.ingest_block(block, now_s)
        if rng.random() < 0.5:  # a new wave of caps, some lifted
            caps = view.caps_w.copy()
            moved = rng.random(n) < 0.3
            caps[moved] = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(100, 2e3, n))[moved]
            view.set_caps(caps, now_s + float(rng.choice([-0.5, 0.0, 0.2])))
            view.assume_uncapped(np.isfinite(caps), rng.uniform(100, 2e3, n))
        want = _whole_site(view, now_s)
        got = view.demand(now_s)
        for name, expected in want.items():
            np.testing.assert_allclose(getattr(got, name), expected, rtol=1e-12, atol=1e-9)


def test_a_quiet_tick_aggregates_nothing_again() -> None:
    """Readings of one rack's servers dirty that rack only; a tick after it has nothing to
    redo, and a server's reading ageing out still makes its rack incomplete (time, not work)."""
    inv = _inventory()
    view = TelemetryView(inv, np.array([0.7, 0.6]), max_age_s=5.0)
    a1 = [s for s in inv.servers if s.rack_id == "a1"]
    view.ingest([PowerSample("redfish", "a1", s.server_id, NOW, 500.0, "server") for s in a1], NOW)
    assert np.flatnonzero(view._dirty).tolist() == [inv.rack_index["a1"]]
    first = view.demand(NOW)
    assert not view._dirty.any()
    assert first.rack_fresh[inv.rack_index["a1"]]
    assert first.rack_power_w[inv.rack_index["a1"]] == pytest.approx(500.0 * len(a1))
    later = view.demand(NOW + 6.0)
    assert not later.rack_fresh[inv.rack_index["a1"]]  # aged out: the last good value holds
    assert later.rack_power_w[inv.rack_index["a1"]] == pytest.approx(500.0 * len(a1))


@pytest.mark.parametrize("rating_w", [None, 3_000.0])
def test_a_block_resolves_to_the_rows_its_samples_do(rating_w: float | None) -> None:
    """Every kind, over MQTT or not, known and unknown racks, servers and outlets."""
    inv = _inventory()
    outlets = outlet_servers(inv)
    rng = np.random.default_rng(3)
    view = TelemetryView(inv, np.array([0.7, 0.6]))
    samples = _readings(view, rng, NOW)
    samples += [
        PowerSample("snmp", "nowhere", None, NOW, 1.0, "pdu"),
        PowerSample("redfish", "a1", "ghost", NOW, 1.0, "server"),
        PowerSample("snmp", "a1", "outlet-99", NOW, 1.0, "outlet"),
        PowerSample("mqtt:x", "a1", "outlet-1", NOW, 1.0, "outlet"),
        PowerSample("mqtt:x", "b1", None, NOW, 1.0, "pdu"),
        PowerSample("odd", "a1", None, NOW, 1.0, "weird"),
    ]
    for block in _blocks(samples):
        got = block_targets(inv, outlets, block, 5_000.0, rating_w)
        want = sample_targets(inv, outlets, block.samples(), 5_000.0, rating_w)
        known = want[0] >= 0
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1][known], want[1][known])
        np.testing.assert_array_equal(got[2], want[2])
