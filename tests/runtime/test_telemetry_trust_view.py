"""The runtime's telemetry view applies the trust rules: the MQTT spoofs of issue 7 change
nothing while the rack's own meter is fresh, implausible readings are rejected (and reported
as not accepted, so they are not stored), disagreements are noticed once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sites import one_domain_site
from wattwheel.domain.telemetry import PowerSample
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.telemetry import QUIET_CHECKS, PlausibleSamples, TelemetryView

NOW = 1_700_000_000.0


def _view(rating_kw: float | None = 150.0, metered: tuple[str, ...] = ()) -> TelemetryView:
    site = one_domain_site("trust", servers_per_rack=2, rack_rating_kw=150)
    inv = default_inventory(site, 100.0, 2_000.0)
    return TelemetryView(
        inv,
        np.array([0.7]),
        max_age_s=10.0,
        rack_rating_w=None if rating_kw is None else rating_kw * 1000.0,
        metered_racks=metered,
    )


def _meter(power_w: float, t: float = NOW) -> PowerSample:
    return PowerSample("snmp:a1", "a1", None, t, power_w, "pdu")


def _mqtt(power_w: float, t: float = NOW, kind: str = "rack") -> PowerSample:
    return PowerSample("mqtt:spoofer", "a1", None, t, power_w, kind)


def test_site_file_carries_the_rack_rating() -> None:
    site = one_domain_site("trust", servers_per_rack=2, rack_rating_kw=150)
    assert site.rack_rating_kw == 150.0


def test_a_2x_feed_spoof_is_rejected_and_a_plausible_high_one_ignored() -> None:
    view = _view()
    ok = view.ingest([_meter(90_000.0), _mqtt(200_000.0)], NOW)
    assert ok.tolist() == [True, False]  # 2x the 100 kW feed: above the 150 kW rating
    assert view.rejected == {"absurd": 1}
    view.ingest([_mqtt(140_000.0)], NOW)  # plausible, but the meter says 90 kW
    assert view.demand(NOW).demand_kw[0] == 90.0
    notices = view.take_notices()
    assert any(
        "mqtt disagrees with the meter on 1 rack(s) (a1 140000 W vs 90000 W)" in n for n in notices
    )
    assert view.disagreements["mqtt"] == 1


def test_a_half_draw_spoof_does_not_lower_an_overloaded_feed() -> None:
    view = _view()
    view.ingest([_meter(122_000.0), _mqtt(61_000.0)], NOW)
    assert view.demand(NOW).demand_kw[0] == 122.0
    view.ingest([_mqtt(61_000.0, NOW + 1)], NOW + 1)  # newer than the meter: still ignored
    assert view.demand(NOW + 1).demand_kw[0] == 122.0


def test_mqtt_cannot_pose_as_the_meter() -> None:
    view = _view()
    view.ingest([_meter(122_000.0)], NOW)
    view.ingest([_mqtt(61_000.0, NOW + 1, kind="pdu")], NOW + 1)  # claims to be the PDU
    assert view.demand(NOW + 1).demand_kw[0] == 122.0


def test_mqtt_never_stands_in_for_a_metered_rack_whose_meter_went_stale() -> None:
    # The process-level spoof test caught it on a loaded box: the SNMP meter stopped answering
    # for > max_age and a plausible MQTT spoof at 1.3x the feed became the rack's demand.
    view = _view()
    view.ingest([_meter(90_000.0)], NOW)
    assert view.demand(NOW).demand_kw[0] == 90.0  # a tick while the meter was fresh
    later = NOW + 20.0  # the meter is now older than max_age (10 s)
    view.ingest([_mqtt(140_000.0, later)], later)
    seen = view.demand(later)
    assert seen.demand_kw[0] == 90.0 and bool(seen.stale[0])  # last good value, stale
    view.ingest([_mqtt(40_000.0, later + 1)], later + 1)  # nor can it lower it
    assert view.demand(later + 1).demand_kw[0] == 90.0
    bmc = [PowerSample("redfish", "a1", f"a1-s0{i}", later + 2, 60_000.0) for i in (1, 2)]
    view.ingest([*bmc, _mqtt(140_000.0, later + 2)], later + 2)
    seen = view.demand(later + 2)  # a polled source stands in: the BMC sum, not MQTT
    assert seen.demand_kw[0] == 120.0 and not bool(seen.stale[0])


def test_a_configured_meter_that_never_answered_is_not_replaced_by_mqtt() -> None:
    # A loaded PDU agent that times out from the start: the rack is stale (held safe by the
    # fast loop), not metered by whoever publishes on the broker.
    view = _view(metered=("a1",))
    view.ingest([_mqtt(140_000.0)], NOW)
    seen = view.demand(NOW)
    assert seen.demand_kw[0] == 0.0 and bool(seen.stale[0])
    unmetered = _view()
    unmetered.ingest([_mqtt(140_000.0)], NOW)
    assert unmetered.demand(NOW).demand_kw[0] == 140.0  # an MQTT-only rack: MQTT is its meter


def test_without_a_meter_mqtt_counts_but_never_lowers_the_bmc_sum() -> None:
    view = _view()
    bmc = [PowerSample("redfish", "a1", f"a1-s0{i}", NOW, 40_000.0) for i in (1, 2)]
    view.ingest([*bmc, _mqtt(30_000.0)], NOW)
    assert view.demand(NOW).demand_kw[0] == 80.0  # the BMC sum, not the lower MQTT
    view.ingest([_mqtt(95_000.0, NOW + 1)], NOW + 1)
    assert view.demand(NOW + 1).demand_kw[0] == 95.0  # the higher one: never hide load


def test_future_timestamps_beyond_the_skew_are_rejected_within_it_taken_as_now() -> None:
    view = _view()
    ok = view.ingest([_meter(90_000.0, NOW + 60)], NOW)
    assert ok.tolist() == [False] and view.rejected == {"future": 1}
    view.ingest([_meter(90_000.0, NOW + 4)], NOW)  # 4 s ahead: accepted, dated now
    assert view.pdu_t[0] == NOW
    view.ingest([_meter(95_000.0, NOW + 1)], NOW + 1)  # so it does not shadow this one
    assert view.demand(NOW + 1).demand_kw[0] == 95.0


def test_without_a_rating_only_the_per_server_bound_applies() -> None:
    view = _view(rating_kw=None)
    assert view.ingest([_mqtt(190_000.0)], NOW).tolist() == [True]


def test_rejections_are_noticed_once_per_kind() -> None:
    view = _view()
    view.ingest([_mqtt(-1.0), _mqtt(-2.0), replace(_mqtt(1.0), power_w=float("nan"))], NOW)
    notices = view.take_notices()
    assert len(notices) == 2 and view.rejected == {"negative": 2, "nan": 1}
    assert view.take_notices() == []


async def test_the_gate_in_front_of_a_store_passes_only_believable_samples() -> None:
    site = one_domain_site("trust", servers_per_rack=2, rack_rating_kw=150)
    inv = default_inventory(site, 100.0, 2_000.0)
    stored: list[PowerSample] = []

    async def store(samples: list[PowerSample]) -> None:
        stored.extend(samples)

    gate = PlausibleSamples(inv, store, lambda: NOW, rack_rating_w=150_000.0)
    await gate(
        [
            _mqtt(90_000.0),  # fine
            _mqtt(200_000.0),  # 2x the feed: above the rating
            _mqtt(90_000.0, NOW + 60),  # from the future
            _mqtt(90_000.0, NOW - 3600),  # an hour late (a redelivery): still true, kept
            PowerSample("mqtt:x", "z9", None, NOW, 1.0, "rack"),  # no such rack
            replace(_mqtt(1.0), power_w=float("inf")),
        ]
    )
    assert [s.power_w for s in stored] == [90_000.0, 90_000.0]
    assert gate.rejected == 4
    reasons = {r.reason: r.count for r in gate.take_rejections()}
    assert reasons == {"sample absurd": 1, "sample future": 1, "sample unknown": 1, "sample nan": 1}
    assert gate.take_rejections() == []
    await gate([])  # an all-rejected or empty batch still succeeds (acknowledged)
    assert gate.rejected == 4


def test_a_flapping_source_is_noted_once_per_episode() -> None:
    view = _view()
    t = NOW
    for k in range(30):  # disagrees every other check: one episode, one notice
        t += 1
        view.ingest([_meter(90_000.0, t), _mqtt(140_000.0 if k % 2 else 90_000.0, t)], t)
        view.demand(t)
    notices = view.take_notices()
    assert [n.split(" on ")[0] for n in notices] == ["mqtt disagrees with the meter"]
    assert view.disagreements["mqtt"] == 15  # every disagreeing check is counted
    for _ in range(QUIET_CHECKS):
        t += 1
        view.ingest([_meter(90_000.0, t), _mqtt(90_000.0, t)], t)
        view.demand(t)
    assert view.take_notices() == ["mqtt agrees with the rack meters again"]


def _server(power_w: float, t: float, server: str = "a1-s01") -> PowerSample:
    return PowerSample("redfish:a1-s01", "a1", server, t, power_w, "server")


def test_a_late_reading_at_an_earlier_lower_cap_is_not_taken_for_demand() -> None:
    """The CI failure of stop 6: a first wave of caps, then two raises a tick apart; a BMC
    still at the first cap is read after the second raise. Taking that reading for the
    server's demand would hold the estimate low for as long as the server stays capped."""
    view = _view()
    sid = view.inv.servers[0].server_id
    i = view.inv.server_index[sid]
    view.ingest([_server(50_000.0, NOW, sid)], NOW)
    caps = np.full(len(view.inv.servers), np.nan)
    for k, cap_w in enumerate((30_000.0, 40_000.0, 45_000.0)):
        caps[i] = cap_w
        view.set_caps(caps.copy(), NOW + 1 + k)
    view.ingest([_server(30_000.0, NOW + 3.5, sid)], NOW + 3.5)
    assert view.server_demand_w()[i] == 50_000.0
    # Once the window has passed, a reading below every cap is demand again.
    view.ingest([_server(20_000.0, NOW + 20, sid)], NOW + 20)
    assert view.server_demand_w()[i] == 20_000.0


def test_a_reading_above_the_cap_just_lifted_is_demand() -> None:
    """A server held at 20 kW, then lifted: its next reading (40 kW) is above the earlier cap,
    so that cap was no longer in force and the reading is its demand."""
    view = _view()
    sid = view.inv.servers[0].server_id
    i = view.inv.server_index[sid]
    caps = np.full(len(view.inv.servers), np.nan)
    caps[i] = 20_000.0
    view.set_caps(caps.copy(), NOW)
    view.assume_uncapped(np.isfinite(caps), np.full(len(caps), 30_000.0))
    view.ingest([_server(20_000.0, NOW + 1, sid)], NOW + 1)
    assert view.demand_guessed()[i]  # at its cap: still only a guess
    caps[i] = np.nan
    view.set_caps(caps.copy(), NOW + 2)
    view.ingest([_server(20_000.0, NOW + 2.5, sid)], NOW + 2.5)  # the lift not there yet
    assert view.demand_guessed()[i]
    view.ingest([_server(40_000.0, NOW + 3, sid)], NOW + 3)
    assert not view.demand_guessed()[i]
    assert view.server_demand_w()[i] == 40_000.0


def test_a_reading_between_a_lowered_cap_and_the_earlier_one_is_demand() -> None:
    view = _view()
    sid = view.inv.servers[0].server_id
    i = view.inv.server_index[sid]
    view.ingest([_server(50_000.0, NOW, sid)], NOW)
    caps = np.full(len(view.inv.servers), np.nan)
    caps[i] = 40_000.0
    view.set_caps(caps.copy(), NOW + 1)
    caps[i] = 20_000.0
    view.set_caps(caps.copy(), NOW + 2)
    view.ingest([_server(39_500.0, NOW + 2.5, sid)], NOW + 2.5)  # still at the 40 kW cap
    assert view.server_demand_w()[i] == 50_000.0
    view.ingest([_server(30_000.0, NOW + 3, sid)], NOW + 3)  # below both: demand fell
    assert view.server_demand_w()[i] == 30_000.0
