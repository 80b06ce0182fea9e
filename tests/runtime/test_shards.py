"""One process per shard: the site and inventory cut to a shard, and telemetry as arrays
(SampleBlock) taken exactly as the same readings one object each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from wattwheel.control.registry import make_policy
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.domain.telemetry import PowerSample
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.fakes import FakeCapActuator
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.shards import shard_inventory, shard_site, split_shards
from wattwheel.runtime.telemetry import SampleBlock, TelemetryView

NOW = 1_700_000_000.0


def _site(n_domains: int = 5) -> SiteParams:
    lines = [
        "[site]",
        'name = "shards"',
        "servers_per_rack = 3",
        "[reserve]",
        "capacity_kw = 77",
        "[domain_defaults.kes]",
        "modules = 2",
        "module_power_kw = 10",
        "module_energy_kwh = 1",
    ]
    for d in range(n_domains):
        lines += [
            "[[domains]]",
            f'name = "d{d}"',
            f'racks = ["d{d}r0", "d{d}r1"]',
            f"primary_capacity_kw = {100 + d}",
        ]
    config = parse_site("\n".join(lines) + "\n")
    return resolve_site(config, {f"d{d}": np.array([100.0 + d]) for d in range(n_domains)})


def test_split_shards_makes_contiguous_named_groups() -> None:
    assert split_shards(("a", "b", "c", "d", "e"), 2) == ["s0=a,b,c", "s1=d,e"]
    assert split_shards(("a", "b"), 2) == ["s0=a", "s1=b"]
    for bad in (0, 3):
        with pytest.raises(ConfigError, match="--shards"):
            split_shards(("a", "b"), bad)


def test_shard_site_keeps_only_its_domains_and_the_site_wide_values() -> None:
    site = _site()
    cut = shard_site(site, ["d3", "d1"])
    assert cut.domain_names == ("d1", "d3")  # site order
    assert cut.domain_racks == (("d1r0", "d1r1"), ("d3r0", "d3r1"))
    assert cut.primary_kw.tolist() == [101.0, 103.0]
    assert cut.kes.modules.shape == (2,) and cut.kes.rated_power_kw.tolist() == [20.0, 20.0]
    assert cut.flex.noncritical_fraction.shape == (2,)
    assert cut.kes_initial_soc.shape == (2,)
    assert cut.reserve == site.reserve and cut.costs == site.costs
    # The whole site is left as it was.
    assert site.n_domains == 5 and site.primary_kw.shape == (5,)
    with pytest.raises(ConfigError, match="unknown domains"):
        shard_site(site, ["d9"])


def test_shard_inventory_holds_the_servers_of_its_racks_only() -> None:
    site = _site()
    inv = default_inventory(site, 100.0, 2_000.0)
    cut = shard_site(site, ["d2"])
    mine = shard_inventory(inv, cut)
    assert mine.rack_ids == ("d2r0", "d2r1")
    assert len(mine.servers) == 6 and {s.rack_id for s in mine.servers} == {"d2r0", "d2r1"}
    assert mine.server_domain.tolist() == [0] * 6
    # A policy runs on the cut site as on any site.
    make_policy("predictive", cut)


def _readings(inv_servers: Sequence[str], t: float) -> list[PowerSample]:
    out = [
        PowerSample("pdu", "d0r0", None, t, 2_400.0, "pdu"),
        PowerSample("pdu", "d0r1", None, t, 2_100.0, "pdu"),
        PowerSample("pdu", "nowhere", None, t, 1_000.0, "pdu"),  # unknown rack
        PowerSample("pdu", "d1r0", None, t, -5.0, "pdu"),  # negative: rejected
    ]
    out += [
        PowerSample("bmc", sid.rsplit("-", 1)[0], sid, t, 700.0 + 10 * k, "server")
        for k, sid in enumerate(inv_servers)
    ]
    return out


def _as_blocks(samples: list[PowerSample]) -> list[SampleBlock]:
    blocks = []
    for kind in ("pdu", "server"):
        rows = [s for s in samples if s.kind == kind]
        blocks.append(
            SampleBlock(
                rows[0].source,
                kind,
                tuple(s.rack_id for s in rows),
                None if kind == "pdu" else tuple(s.server_id for s in rows),
                np.array([s.power_w for s in rows]),
                np.array([s.timestamp_s for s in rows]),
            )
        )
    return blocks


def test_a_block_is_taken_exactly_as_the_same_readings_one_by_one() -> None:
    site = _site(2)
    inv = default_inventory(site, 100.0, 2_000.0)
    servers = [s.server_id for s in inv.servers if s.rack_id == "d0r0"]
    one_by_one, as_arrays = (TelemetryView(inv, np.full(2, 0.5), max_age_s=10.0) for _ in "ab")
    for step in range(3):  # the second and later blocks use the memoised rows
        t = NOW + step
        samples = _readings(servers, t)
        ok = one_by_one.ingest(samples, t)
        blocks = _as_blocks(samples)
        oks = np.concatenate([as_arrays.ingest_block(b, t) for b in blocks])
        pdu_first = [s for s in samples if s.kind == "pdu"] + [
            s for s in samples if s.kind == "server"
        ]
        assert oks.tolist() == [bool(ok[samples.index(s)]) for s in pdu_first]
        a, b = one_by_one.demand(t), as_arrays.demand(t)
        np.testing.assert_array_equal(a.demand_kw, b.demand_kw)
        np.testing.assert_array_equal(a.rack_power_w, b.rack_power_w)
        np.testing.assert_array_equal(a.stale, b.stale)
        np.testing.assert_array_equal(one_by_one.server_w, as_arrays.server_w)
    assert one_by_one.rejected == as_arrays.rejected and sum(as_arrays.rejected.values()) == 6
    # Only the rows it believed are kept to be stored.
    block = _as_blocks(_readings(servers, NOW))[0]
    kept = block.select(as_arrays.ingest_block(block, NOW + 2))
    assert kept.rack_ids == ("d0r0", "d0r1") and kept.samples()[0].power_w == 2_400.0


async def test_pushed_blocks_feed_the_tick_and_reach_the_store() -> None:
    class Sink:
        def __init__(self) -> None:
            self.telemetry: list[PowerSample] = []

        def write_telemetry(self, samples: list[PowerSample]) -> None:
            self.telemetry.extend(samples)

        def write_forecast(self, forecast: object) -> None:
            pass

        def write_decisions(self, records: object) -> None:
            pass

        def write_event(self, event: object) -> None:
            pass

    full = _site(4)
    site = shard_site(full, ["d2", "d3"])
    inv = shard_inventory(default_inventory(full, 100.0, 2_000.0), site)
    clock = FakeClock(start_s=NOW)
    rt = Runtime(
        site,
        make_policy("reactive", site),
        Devices(caps=FakeCapActuator()),
        inv,
        clock,
        config=RuntimeConfig(device_timeout_s=0.2),
    )
    sink = Sink()
    rt.sink = sink
    racks = inv.rack_ids
    rt.reader.buffer_for("pushed").append(
        SampleBlock(
            "mqtt-shard",
            "pdu",
            (*racks, "d0r0"),  # d0 is another shard's: not this process's to believe
            None,
            np.array([150_000.0, 1_000.0, 1_000.0, 1_000.0, 9_999.0]),
            np.full(5, NOW),
        )
    )
    report = await rt.tick()
    assert report.observation.demand_kw.tolist() == [151.0, 2.0]
    assert rt.state.telemetry_ingested == 4 and rt.state.errors.get("input") == 1
    await rt.flush()
    assert [s.rack_id for s in sink.telemetry] == list(racks)
