"""``serve --only-shard``: a process runs one shard's domains, racks and MQTT topics, with its
own MQTT session and spill journal; with etcd it campaigns for the site coordinator role, and its
static share of the reserve is computed from the whole site."""

from __future__ import annotations

import numpy as np
import pytest
import typer

from sites import site_toml
from wattwheel.cli.live_cmds import _election_options, _one_shard
from wattwheel.cli.live_wiring import build_leadership, build_wiring, shard_map
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import parse_site
from wattwheel.domain.trace import Trace
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.leader import COORDINATOR
from wattwheel.runtime.shards import split_shards
from wattwheel.sim.scenario import build_scenario

SITE = site_toml("w", {"A": ["a1", "a2"], "B": ["b1"], "C": ["c1"]}, servers_per_rack=2)


def _site():  # type: ignore[no-untyped-def]
    racks = ("a1", "a2", "b1", "c1")
    power = np.full((2, 4), 40_000.0)
    return build_scenario(parse_site(SITE), Trace(np.array([0.0, 300.0]), racks, power)).site


def test_one_shard_cuts_the_site_the_inventory_and_the_shard_map() -> None:
    site = _site()
    inv = default_inventory(site, 100.0, 2_000.0)
    shard_of = shard_map(site.domain_names, split_shards(site.domain_names, 2))
    assert shard_of == {"A": "s0", "B": "s0", "C": "s1"}
    cut, mine, lead = _one_shard(site, inv, shard_of, "s1")
    assert cut.domain_names == ("C",) and mine.rack_ids == ("c1",) and lead == {"C": "s1"}
    assert {s.rack_id for s in mine.servers} == {"c1"}
    with pytest.raises(ConfigError, match="no such shard"):
        _one_shard(site, inv, shard_of, "s7")


def test_a_shard_process_has_its_own_session_and_no_coordinator_campaign() -> None:
    election = _election_options(None, None, None, 3, 0.5, 2, "s1")
    assert election.session_id == "shard-s1" and election.only_shard == "s1"
    assert election.n_shards == 2
    # --instance-id still names the session.
    assert _election_options(None, "ctl-x", None, 3, 0.5, None, "s1").session_id == "ctl-x"
    with pytest.raises(typer.Exit):
        _election_options(None, None, ["s0=A"], 3, 0.5, 2, None)  # specs and --shards
    lead, _ = build_leadership("w", {"C": "s1"}, FakeClock(), instance_id="i", coordinator=False)
    assert lead.elector is not None and COORDINATOR not in lead.elector.roles
    lead, _ = build_leadership("w", {"C": "s1"}, FakeClock(), instance_id="i")
    assert lead.elector is not None and COORDINATOR in lead.elector.roles


def test_a_shard_process_subscribes_to_its_racks_topics_only() -> None:
    site = _site()
    inv = default_inventory(site, 100.0, 2_000.0)
    cut, mine, _ = _one_shard(site, inv, {"A": "s0", "B": "s0", "C": "s1"}, "s0")
    mqtt = {"host": "127.0.0.1", "port": 1, "site": "w"}
    [bg] = build_wiring({"mqtt": mqtt}, cut, mine, own_topics=True).background
    ingester = bg.run.__self__  # type: ignore[attr-defined]
    assert ingester.topic_filter == [
        "wattwheel/w/telemetry/a1",
        "wattwheel/w/telemetry/a2",
        "wattwheel/w/telemetry/b1",
    ]
    [bg] = build_wiring({"mqtt": mqtt}, site, inv).background
    assert bg.run.__self__.topic_filter == "wattwheel/w/telemetry/+"  # type: ignore[attr-defined]


def test_spawn_gives_each_shard_process_its_shard_port_and_own_files() -> None:
    from pathlib import Path

    from wattwheel.cli.live_cmds import _shard_names, shard_argv

    assert _shard_names(3, None) == ["s0", "s1", "s2"]
    assert _shard_names(None, ["row-a=A,B", "row-b=C"]) == ["row-a", "row-b"]
    with pytest.raises(typer.Exit):
        _shard_names(None, None)
    argv = ["serve", "--devices", "d.json", "--shards", "2", "--spawn", "--port", "9000"]
    args = shard_argv(argv, "s1", 1, 9000, None, None, None)
    assert "--spawn" not in args
    assert args[-6:] == [
        "--only-shard",
        "s1",
        "--port",
        "9002",
        "--db",
        "sqlite:///wattwheel-s1.db",
    ]
    args = shard_argv(argv, "s0", 0, 9000, "sqlite:///var/w.db", "ctl", Path("sp"))
    assert args[-6:] == [
        "--db",
        "sqlite:///var/w-s0.db",
        "--instance-id",
        "ctl-s0",
        "--spill-dir",
        "sp/s0",
    ]
    # A shared PostgreSQL (or memory://) is passed on as it is.
    assert "--db" not in shard_argv(argv, "s0", 0, 9000, "postgresql+psycopg://h/db", None, None)


def test_static_shares_come_from_the_whole_sites_rated_load() -> None:
    from wattwheel.cli.coord_wiring import static_shares

    site = _site()  # 50 kW reserve; A, B, C at 100 kW primary each
    shares = static_shares(site, {"A": "s0", "B": "s0", "C": "s1"})
    assert shares == pytest.approx({"s0": 50.0 * 2 / 3, "s1": 50.0 / 3})
