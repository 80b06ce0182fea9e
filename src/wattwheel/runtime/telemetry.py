"""Telemetry -> per-rack and per-domain demand: the latest reading of each server / PDU,
checked (``check_sample``), aged, and summed with numpy so 1,000 racks cost little per tick.

Which readings are believed follows :mod:`wattwheel.domain.telemetry_trust` (DESIGN §8): a
reading above the rack's rating (``rack_rating_kw`` in the site file) or dated beyond the
allowed clock skew in the future is rejected (counted, never stored). Per rack, the demand is
its own meter (the PDU read from the device) while that is fresh; the other sources (the sum
of its servers when every server is fresh, the sum of its outlets, MQTT) are only checked
against it, and a disagreement is flagged, never used. With no fresh meter the demand is the
highest of the complete fresh sources (a source reading low cannot hide load), else the last
good value (the rack is then *stale*). A domain is stale when any of its racks is.

MQTT stands in for the meter only on a rack that has no meter of its own (none configured,
``metered_racks``, and none ever read: a rack metered over MQTT alone): on a metered rack, a
stale or silent meter is replaced by the polled sources (servers, outlets) or by its last good
value (the rack is then stale, and the fast loop holds its domain safe), never by MQTT.
Otherwise an adversary who also slows the meter down (a loaded agent, a dropped poll) would set
the rack's demand.

Samples that arrived over MQTT (``source`` starting with ``mqtt``, set by the ingester, not
by the payload) are kept apart whatever ``kind`` they claim: anyone who can publish on the
broker can write them, so they never count as a rack's meter.

Critical load is the sum of critical servers where server readings exist, else the site's
critical fraction of the rack.

Caps hide demand: a capped server reads about its cap. The view keeps, per server, the last
reading taken while it was not held at its cap, so the controller sees the demand it is
holding back (``held_back_w``) instead of chasing its own caps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.telemetry import MessageRejection, PowerSample, check_sample
from wattwheel.domain.telemetry_trust import TrustRules, disagrees, plausible, rack_demand_w
from wattwheel.runtime.inventory import Inventory

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
log = logging.getLogger(__name__)

_SERVER, _OUTLET, _PDU, _MQTT_RACK, _MQTT_SERVER = 0, 1, 2, 3, 4

#: The sources checked against a rack's meter, as named in events and counters.
CROSS_CHECKED = ("bmc", "outlets", "mqtt")
#: Checks (ticks) a source must agree everywhere before its disagreement is noted as over.
QUIET_CHECKS = 10

#: A server reading at or above this fraction of its cap is taken as held by the cap.
AT_CAP_FRACTION = 0.97
#: A reading above this multiple of a cap shows that the cap is not the one in force.
ABOVE_CAP_FRACTION = 1.03
#: Caps remembered per server, for readings taken while a change may not have reached the BMC.
CAP_HISTORY = 4


@dataclass(frozen=True)
class DemandView:
    """Per-domain demand this tick (kW) and per-rack detail (W)."""

    demand_kw: FloatArray
    critical_kw: FloatArray
    stale: BoolArray
    rack_power_w: FloatArray
    rack_fresh: BoolArray
    #: (D,) every rack of the domain has been read at least once since start.
    known: BoolArray


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Readings of one kind from one source as arrays: what a device that reads many racks or
    servers at once hands the tick (the fast path: no object per reading). A source that
    reads the same racks/servers every time should pass the same ``rack_ids`` and
    ``server_ids`` tuples: the view resolves them to rows once.

    Attributes:
        source, kind: as :class:`PowerSample`'s, for every row.
        rack_ids: (N,) the rack of each row.
        server_ids: (N,) the server or outlet id of each row; None: rack/PDU totals.
        power_w, timestamp_s: (N,) the readings and when they were taken (epoch s).
    """

    source: str
    kind: str
    rack_ids: tuple[str, ...]
    server_ids: tuple[str | None, ...] | None
    power_w: FloatArray
    timestamp_s: FloatArray

    def __len__(self) -> int:
        return len(self.rack_ids)

    def sample(self, k: int) -> PowerSample:
        """Row ``k`` as a :class:`PowerSample` (for messages and the store)."""
        server = None if self.server_ids is None else self.server_ids[k]
        return PowerSample(
            self.source,
            self.rack_ids[k],
            server,
            float(self.timestamp_s[k]),
            float(self.power_w[k]),
            self.kind,
        )

    def samples(self) -> list[PowerSample]:
        return [self.sample(k) for k in range(len(self))]

    def select(self, keep: BoolArray) -> SampleBlock:
        """The rows where ``keep`` is set (the same block when it keeps every row)."""
        if bool(keep.all()):
            return self
        rows = np.flatnonzero(keep)
        return SampleBlock(
            self.source,
            self.kind,
            tuple(self.rack_ids[i] for i in rows),
            None if self.server_ids is None else tuple(self.server_ids[i] for i in rows),
            self.power_w[rows],
            self.timestamp_s[rows],
        )


#: Row targets of the blocks seen lately, per (source, kind, racks, servers).
BLOCK_MEMO_MAX = 256


def outlet_servers(inventory: Inventory) -> dict[str, int]:
    """Outlet key (``"<rack>/<n>"``) -> index of the server behind it."""
    return {s.outlet: i for i, s in enumerate(inventory.servers) if s.outlet is not None}


#: Where one sample goes: (table, row, the most it may plausibly read in W); see sample_targets.
Target = tuple[int, int, float]
#: Memoised targets kept per view before the memo is cleared (ids a sender made up must not
#: grow it without bound).
MEMO_MAX = 1_000_000


def _target(
    inv: Inventory,
    outlet_server: dict[str, int],
    s: PowerSample,
    max_power_w: float,
    rating: float,
) -> Target:
    kind, over_mqtt = s.kind, s.source.startswith("mqtt")
    limit = min(max_power_w, rating)
    if kind == "server":
        i = inv.server_index.get(s.server_id or "", -1)
        if i >= 0:
            return (_MQTT_SERVER if over_mqtt else _SERVER), i, limit
    elif kind == "outlet" and not over_mqtt:
        # SNMP outlets arrive as "outlet-<n>"; the inventory names them "<rack>/<n>".
        key = f"{s.rack_id}/{(s.server_id or '').removeprefix('outlet-')}"
        j = outlet_server.get(key, -1)
        if j >= 0:
            return _OUTLET, j, limit
    elif kind in ("pdu", "rack"):
        r = inv.rack_index.get(s.rack_id, -1)
        if r >= 0:
            servers = max(int(inv.servers_per_rack[r]), 1)
            return (_MQTT_RACK if over_mqtt else _PDU), r, min(max_power_w * servers, rating)
    return -1, 0, limit


def sample_targets(
    inv: Inventory,
    outlet_server: dict[str, int],
    samples: Sequence[PowerSample],
    max_power_w: float,
    rack_rating_w: float | None,
    memo: dict[tuple[str, str, str, str | None], Target] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]:
    """Per sample: which table it updates (-1: an unknown rack/server/outlet, or an outlet
    claimed over MQTT), the row, and the most it may plausibly read (W).

    ``memo`` (owned by the caller, for one inventory and bounds) remembers each (source, kind,
    rack, server)'s target: a tick of 40,000 BMC readings then costs one lookup per reading."""
    rating = math.inf if rack_rating_w is None else rack_rating_w
    n = len(samples)
    if memo is None:
        rows = [_target(inv, outlet_server, s, max_power_w, rating) for s in samples]
    else:
        if len(memo) > MEMO_MAX:
            memo.clear()
        rows = []
        for s in samples:
            key = (s.source, s.kind, s.rack_id, s.server_id)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = _target(inv, outlet_server, s, max_power_w, rating)
            rows.append(hit)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    arr = np.array(rows, dtype=float).reshape(n, 3)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].copy()


def block_targets(
    inv: Inventory,
    outlet_server: dict[str, int],
    block: SampleBlock,
    max_power_w: float,
    rack_rating_w: float | None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]:
    """:func:`sample_targets` for a :class:`SampleBlock`, one dictionary lookup per row and
    no object per reading (a block of 8,000 BMC readings in well under a millisecond)."""
    n = len(block)
    rating = math.inf if rack_rating_w is None else rack_rating_w
    over_mqtt = block.source.startswith("mqtt")
    table = np.full(n, -1, dtype=np.int64)
    row = np.zeros(n, dtype=np.int64)
    limit = np.full(n, min(max_power_w, rating))
    servers = block.server_ids if block.server_ids is not None else (None,) * n
    if block.kind == "server":
        found = np.fromiter((inv.server_index.get(sid or "", -1) for sid in servers), np.int64, n)
        code = _MQTT_SERVER if over_mqtt else _SERVER
    elif block.kind == "outlet" and not over_mqtt:
        # SNMP outlets arrive as "outlet-<n>"; the inventory names them "<rack>/<n>".
        found = np.fromiter(
            (
                outlet_server.get(f"{rack}/{(sid or '').removeprefix('outlet-')}", -1)
                for rack, sid in zip(block.rack_ids, servers, strict=True)
            ),
            np.int64,
            n,
        )
        code = _OUTLET
    elif block.kind in ("pdu", "rack"):
        found = np.fromiter((inv.rack_index.get(r, -1) for r in block.rack_ids), np.int64, n)
        known = found >= 0
        behind = np.maximum(inv.servers_per_rack[found[known]], 1)
        limit[known] = np.minimum(max_power_w * behind, rating)
        code = _MQTT_RACK if over_mqtt else _PDU
    else:
        return table, row, limit
    known = found >= 0
    table[known] = code
    row[known] = found[known]
    return table, row, limit


class PlausibleSamples:
    """A telemetry sink that passes on only the samples the telemetry view could believe (a
    known rack/server, finite, not negative, at most the rack's rating, not beyond the allowed
    clock skew in the future) and counts the rest in ``rejected``.

    Put it in front of anything that stores what a transport delivers (e.g. the durable sink an
    MQTT ingester acknowledges behind): rejected samples are never stored as readings (DESIGN
    §8). Staleness is not checked: an old reading is true, just late (a redelivery after an
    outage), and worth keeping. A batch of rejected samples still "succeeds", so the transport
    acknowledges it: it will never become valid.
    """

    def __init__(
        self,
        inventory: Inventory,
        then: Callable[[list[PowerSample]], Awaitable[None]],
        now_s: Callable[[], float],
        rack_rating_w: float | None = None,
        max_power_w: float = 100_000.0,
        rules: TrustRules | None = None,
    ) -> None:
        self.inv = inventory
        self.then = then
        self.now_s = now_s
        self.rack_rating_w = rack_rating_w
        self.max_power_w = max_power_w
        self.rules = rules or TrustRules()
        self.rejected = 0
        self._outlet_server = outlet_servers(inventory)
        self._new: dict[str, MessageRejection] = {}

    async def __call__(self, samples: list[PowerSample]) -> None:
        if samples:
            table, _, limit = sample_targets(
                self.inv, self._outlet_server, samples, self.max_power_w, self.rack_rating_w
            )
            n = len(samples)
            power = np.fromiter((s.power_w for s in samples), float, n)
            ts = np.fromiter((s.timestamp_s for s in samples), float, n)
            now_s = self.now_s()
            ok = plausible(power, ts, limit, now_s, self.rules) & (table >= 0)
            self.rejected += n - int(ok.sum())
            for k in np.flatnonzero(~ok):
                self._note(samples[int(k)], now_s, float(limit[k]))
            samples = [s for s, good in zip(samples, ok, strict=True) if good]
        await self.then(samples)

    def _note(self, sample: PowerSample, now_s: float, limit_w: float) -> None:
        problem = check_sample(sample, now_s, math.inf, limit_w, self.rules.max_future_s)
        code, message = (
            (problem.code, problem.message)
            if problem is not None
            else (
                "unknown",
                f"{sample.source}: rack {sample.rack_id!r} / {sample.server_id!r} unknown",
            )
        )
        seen = self._new.get(code)
        self._new[code] = MessageRejection(
            f"sample {code}", 1 if seen is None else seen.count + 1, message
        )

    def take_rejections(self) -> list[MessageRejection]:
        """Samples dropped since the previous call, per reason (a :class:`ReportsRejections`)."""
        new, self._new = list(self._new.values()), {}
        return new


def _zero_nan(x: FloatArray) -> FloatArray:
    """``x`` with NaN as 0 (the tables hold finite readings or NaN: what ``np.nan_to_num``
    does for them, in two passes instead of seven)."""
    out: FloatArray = np.where(np.isnan(x), 0.0, x)
    return out


class _RackSums:
    """Per rack, over its servers: the sums of their demand estimates (``est_w``), of what
    the current caps hold back (``held_w``), of their readings (``read_w``), of the critical
    servers' estimates (``critical_w``), of their outlet and MQTT readings, and the oldest
    reading of each per-server table (-inf: a server never read; a rack's table is complete
    and fresh when its oldest reading is)."""

    def __init__(self, n_racks: int) -> None:
        self.est_w = np.zeros(n_racks)
        self.held_w = np.zeros(n_racks)
        self.read_w = np.zeros(n_racks)
        self.critical_w = np.zeros(n_racks)
        self.server_oldest_s = np.full(n_racks, -math.inf)
        self.outlet_w = np.zeros(n_racks)
        self.outlet_oldest_s = np.full(n_racks, -math.inf)
        self.mqtt_w = np.zeros(n_racks)
        self.mqtt_oldest_s = np.full(n_racks, -math.inf)


class TelemetryView:
    """The latest readings by rack/server, and what each tick needs from them.

    Args:
        inventory: servers and racks.
        critical_fraction: (D,) critical share of a rack without server readings.
        max_age_s: a reading older than this is stale.
        max_power_w: a server/outlet reading above this is absurd; PDU/rack totals may reach
            ``max_power_w`` times the servers behind them.
        rack_rating_w: the most a rack can draw (W, from the site file); no reading of a rack
            or of anything in it may exceed it. None: only ``max_power_w`` bounds readings.
        rules: disagreement tolerance and allowed clock skew.
        metered_racks: racks with a meter of their own that is polled (an SNMP PDU): MQTT
            never stands in for their meter, even before it first answers.
    """

    def __init__(
        self,
        inventory: Inventory,
        critical_fraction: FloatArray,
        max_age_s: float = 5.0,
        max_power_w: float = 100_000.0,
        rack_rating_w: float | None = None,
        rules: TrustRules | None = None,
        metered_racks: Collection[str] = (),
    ) -> None:
        self.inv = inventory
        self.rules = rules or TrustRules()
        self.rack_rating_w = rack_rating_w
        self.critical_fraction = np.asarray(critical_fraction, dtype=float)
        self.max_age_s = max_age_s
        self.max_power_w = max_power_w
        n, r = len(inventory.servers), inventory.n_racks
        self.server_w = np.full(n, np.nan)
        self.server_t = np.full(n, -math.inf)
        self.uncapped_w = np.full(n, np.nan)
        #: servers whose ``uncapped_w`` is a guess (capped before they were ever read free)
        self.guessed = np.zeros(n, dtype=bool)
        self.pdu_w = np.full(r, np.nan)
        self.pdu_t = np.full(r, -math.inf)
        self.outlet_w = np.full(n, np.nan)
        self.outlet_t = np.full(n, -math.inf)
        self.mqtt_rack_w = np.full(r, np.nan)
        self.mqtt_rack_t = np.full(r, -math.inf)
        self.mqtt_server_w = np.full(n, np.nan)
        self.mqtt_server_t = np.full(n, -math.inf)
        self.last_good_rack_w = np.zeros(r)
        #: the tables each target code updates: (values, times)
        self._tables: dict[int, tuple[FloatArray, FloatArray]] = {
            _SERVER: (self.server_w, self.server_t),
            _OUTLET: (self.outlet_w, self.outlet_t),
            _PDU: (self.pdu_w, self.pdu_t),
            _MQTT_RACK: (self.mqtt_rack_w, self.mqtt_rack_t),
            _MQTT_SERVER: (self.mqtt_server_w, self.mqtt_server_t),
        }
        self.caps_w = np.full(n, np.nan)
        self.caps_prev_w = np.full(n, np.nan)
        self.caps_changed_s = np.full(n, -math.inf)
        #: earlier caps, newest first (NaN: uncapped), and when each was replaced (-inf: none)
        self.caps_hist_w = np.full((n, CAP_HISTORY), np.nan)
        self.caps_replaced_s = np.full((n, CAP_HISTORY), -math.inf)
        #: per server, the latest of its ``caps_replaced_s`` (never lower: a bound to skip by)
        self._cap_replaced_latest_s = np.full(n, -math.inf)
        self.ever_read = np.zeros(r, dtype=bool)
        #: racks with a meter of their own: configured as polled, or read at least once
        self.meter_seen = np.isin(np.asarray(inventory.rack_ids), list(metered_racks))
        #: the servers of each rack, contiguous: rack k's are ``_by_rack[_rack_start[k]:...]``
        self._by_rack = np.argsort(inventory.server_rack, kind="stable")
        self._rack_n = np.asarray(inventory.servers_per_rack, dtype=np.int64)
        self._rack_start = np.concatenate(([0], np.cumsum(self._rack_n)[:-1])).astype(np.int64)
        self._has_servers = self._rack_n > 0
        # Per rack, sums and oldest times of its servers' rows (see _aggregate): kept up to date
        # for the racks whose server rows changed since the last tick (``_dirty``), not
        # recomputed over every server each tick.
        self._agg = _RackSums(r)
        self._dirty = np.zeros(r, dtype=bool)
        #: per rack, when a cap of one of its servers last changed (for the meter's view of it)
        self._rack_cap_changed_s = np.full(r, -math.inf)
        self._outlet_server = outlet_servers(inventory)
        self._memo: dict[tuple[str, str, str, str | None], Target] = {}
        self._block_memo: dict[
            tuple[str, str, tuple[str, ...], tuple[str | None, ...] | None],
            tuple[NDArray[np.int64], NDArray[np.int64], FloatArray, tuple[int, ...]],
        ] = {}
        self.rejected: dict[str, int] = {}
        self._logged_codes: set[str] = set()
        #: per cross-checked source: rack-ticks it disagreed with the meter, and where it does
        self.disagreements: dict[str, int] = dict.fromkeys(CROSS_CHECKED, 0)
        self._episode = dict.fromkeys(CROSS_CHECKED, False)
        self._quiet = dict.fromkeys(CROSS_CHECKED, 0)
        self._notices: list[str] = []

    # ---- ingest ----
    def ingest(self, samples: Sequence[PowerSample], now_s: float) -> BoolArray:
        """Take the readings that are plausible and fresh; returns, per sample, whether it was
        accepted (a rejected one is counted and must not be stored as a reading).

        Vectorised (tens of thousands of BMC readings a tick): the checks run on arrays, and
        only rejected readings go through :func:`check_sample` for their message.
        """
        n = len(samples)
        if n == 0:
            return np.zeros(0, dtype=bool)
        table, index, limit = self._targets(samples)
        power = np.fromiter((s.power_w for s in samples), float, n)
        ts = np.fromiter((s.timestamp_s for s in samples), float, n)
        codes = tuple(int(c) for c in np.unique(table))
        return self._ingest_rows(table, index, limit, power, ts, now_s, samples.__getitem__, codes)

    def ingest_block(self, block: SampleBlock, now_s: float) -> BoolArray:
        """:meth:`ingest` for a :class:`SampleBlock`: its rows are resolved to the view's
        tables once per (source, kind, racks, servers), then every check runs on its arrays."""
        if len(block) == 0:
            return np.zeros(0, dtype=bool)
        key = (block.source, block.kind, block.rack_ids, block.server_ids)
        targets = self._block_memo.get(key)
        if targets is None:
            if len(self._block_memo) >= BLOCK_MEMO_MAX:
                self._block_memo.clear()
            table, index, limit = block_targets(
                self.inv, self._outlet_server, block, self.max_power_w, self.rack_rating_w
            )
            codes = tuple(int(c) for c in np.unique(table))
            targets = self._block_memo[key] = (table, index, limit, codes)
        table, index, limit, codes = targets
        power = np.asarray(block.power_w, dtype=float)
        ts = np.asarray(block.timestamp_s, dtype=float)
        return self._ingest_rows(table, index, limit, power, ts, now_s, block.sample, codes)

    def _ingest_rows(
        self,
        table: NDArray[np.int64],
        index: NDArray[np.int64],
        limit: FloatArray,
        power: FloatArray,
        ts: FloatArray,
        now_s: float,
        sample_at: Callable[[int], PowerSample],
        codes: tuple[int, ...],
    ) -> BoolArray:
        """Take the good rows into the tables (``codes``: the tables ``table`` names)."""
        ok = (
            plausible(power, ts, limit, now_s, self.rules)
            & (now_s - ts <= self.max_age_s)
            & (table >= 0)
        )
        all_ok = bool(ok.all())
        if not all_ok:
            for k in np.flatnonzero(~ok):
                self._explain(sample_at(int(k)), now_s, float(limit[k]), int(table[k]))
        # A reading dated (within the allowed skew) in the future counts as taken now: it must
        # not stay "fresh" longer, nor shadow the next true reading.
        ts = np.minimum(ts, now_s)
        order = np.argsort(ts, kind="stable")  # newest last: it wins the assignment below
        good = order if all_ok else order[ok[order]]
        server_rack = self.inv.server_rack
        for code in codes:
            if code < 0:
                continue
            values, times = self._tables[code]
            pick = good if len(codes) == 1 else good[table[good] == code]
            pick = pick[ts[pick] >= times[index[pick]]]
            if pick.size == 0:
                continue
            idx = index[pick]
            values[idx], times[idx] = power[pick], ts[pick]
            if code in (_PDU, _MQTT_RACK):
                self.ever_read[idx] = True  # only plausible (finite) readings get here
                if code == _PDU:
                    self.meter_seen[idx] = True
                continue
            racks = server_rack[idx]
            self.ever_read[racks] = True
            self._dirty[racks] = True
            if code == _SERVER:
                free = ~self._held(idx, ts[pick], power[pick])
                self.uncapped_w[idx[free]] = power[pick][free]
                self.guessed[idx[free]] = False
        return ok

    def _targets(
        self, samples: Sequence[PowerSample]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]:
        """Per sample: which table it updates (-1: unknown), the row, the plausible maximum."""
        return sample_targets(
            self.inv,
            self._outlet_server,
            samples,
            self.max_power_w,
            self.rack_rating_w,
            self._memo,
        )

    def _explain(self, s: PowerSample, now_s: float, limit: float, table: int) -> None:
        problem = check_sample(s, now_s, self.max_age_s, limit, self.rules.max_future_s)
        if problem is not None:
            self._reject(problem.code, problem.message)
        elif table < 0:
            self._reject("unknown", f"{s.source}: rack {s.rack_id!r} / {s.server_id!r} unknown")

    def _reject(self, code: str, message: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1
        if code not in self._logged_codes:
            log.warning(
                "telemetry rejected (%s): %s (further ones counted, logged at debug)", code, message
            )
            self._logged_codes.add(code)
            self._notices.append(f"telemetry rejected ({code}): {message}")
        else:
            log.debug("telemetry rejected (%s): %s", code, message)

    def assume_uncapped(self, capped: BoolArray, demand_w: FloatArray) -> None:
        """For capped servers whose uncapped demand was never read, take ``demand_w``."""
        unknown = np.flatnonzero(capped & np.isnan(self.uncapped_w))
        if unknown.size:
            self.uncapped_w[unknown] = demand_w[unknown]
            self.guessed[unknown] = True
            self._dirty[self.inv.server_rack[unknown]] = True

    def demand_guessed(self) -> BoolArray:
        """Per server: is its demand estimate a guess, never read below a cap?"""
        guessed: BoolArray = self.guessed | np.isnan(self.uncapped_w)
        return guessed

    def set_caps(self, caps_w: FloatArray, now_s: float) -> None:
        """Caps applied per server from ``now_s`` (NaN: uncapped), for the demand-behind-the-
        cap estimates; earlier caps are remembered for readings taken around a change."""
        same = (caps_w == self.caps_w) | (np.isnan(caps_w) & np.isnan(self.caps_w))
        rows = np.flatnonzero(~same)
        if rows.size == 0:
            return
        self.caps_prev_w[rows] = self.caps_w[rows]
        self.caps_changed_s[rows] = now_s
        self.caps_hist_w[rows, 1:] = self.caps_hist_w[rows, :-1]
        self.caps_replaced_s[rows, 1:] = self.caps_replaced_s[rows, :-1]
        self.caps_hist_w[rows, 0] = self.caps_w[rows]
        self.caps_replaced_s[rows, 0] = now_s
        latest = self._cap_replaced_latest_s
        latest[rows] = np.maximum(latest[rows], now_s)
        self.caps_w[rows] = caps_w[rows]
        racks = self.inv.server_rack[rows]
        self._dirty[racks] = True
        self._rack_cap_changed_s[racks] = np.maximum(self._rack_cap_changed_s[racks], now_s)

    def _held(self, idx: NDArray[np.int64], ts: FloatArray, power: FloatArray) -> BoolArray:
        """Per server reading: was it held by a cap? A reading shows demand only if no cap that
        may have been in force when it was taken holds it: the current cap, or one replaced
        less than ``max_age_s`` before (changes in quick succession may reach a BMC late). A
        reading well above an earlier cap shows that this cap was not the one in force, and
        one well above the current cap while an earlier one may hold, that the current one
        has not reached the BMC yet. Only servers with a cap now or lately are looked at."""
        out = np.zeros(idx.size, dtype=bool)
        current = self.caps_w[idx]
        maybe = np.isfinite(current) | (ts - self._cap_replaced_latest_s[idx] < self.max_age_s)
        k = np.flatnonzero(maybe)
        if k.size == 0:
            return out
        idx, ts, power, current = idx[k], ts[k], power[k], current[k]
        recent = ts[:, None] - self.caps_replaced_s[idx] < self.max_age_s
        earlier = self.caps_hist_w[idx]
        held_earlier = (
            recent
            & np.isfinite(earlier)
            & (power[:, None] >= AT_CAP_FRACTION * earlier)
            & (power[:, None] <= ABOVE_CAP_FRACTION * earlier)
        ).any(axis=1)
        not_yet = recent.any(axis=1) & (power > ABOVE_CAP_FRACTION * current)
        held_current = np.isfinite(current) & (power >= AT_CAP_FRACTION * current) & ~not_yet
        out[k] = held_current | held_earlier
        return out

    def _caps_at(self, t_s: FloatArray) -> FloatArray:
        """Per server, the cap in force at ``t_s`` (per server; NaN: none)."""
        return np.where(self.caps_changed_s <= t_s, self.caps_w, self.caps_prev_w)

    # ---- per tick ----
    def _servers_of(
        self, racks: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The servers of ``racks`` (each with at least one server), rack after rack: their
        indices, where each rack's run starts (for ``reduceat``) and each rack's count."""
        n = self._rack_n[racks]
        runs = np.cumsum(n) - n
        pos = np.arange(int(n.sum())) + np.repeat(self._rack_start[racks] - runs, n)
        return self._by_rack[pos], runs, n

    def _server_est(self, idx: NDArray[np.int64]) -> FloatArray:
        """Per server: its demand estimate (the reading, or above it what a cap holds back)."""
        free, read = self.uncapped_w[idx], self.server_w[idx]
        est: FloatArray = np.where(np.isnan(free), read, np.fmax(free, read))
        return est

    def _aggregate(self) -> None:
        """Bring the per-rack sums up to date for the racks whose server rows changed since
        the last call (readings, caps, demand estimates): the work follows what changed."""
        racks = np.flatnonzero(self._dirty & self._has_servers)
        self._dirty[:] = False
        if racks.size == 0:
            return
        idx, runs, _ = self._servers_of(racks)
        est = self._server_est(idx)
        known = _zero_nan(est)
        agg = self._agg

        def total(x: FloatArray) -> FloatArray:
            out: FloatArray = np.add.reduceat(x, runs)
            return out

        def oldest(values_w: FloatArray, times_s: FloatArray) -> FloatArray:
            t = np.where(np.isfinite(values_w[idx]), times_s[idx], -math.inf)
            out: FloatArray = np.minimum.reduceat(t, runs)
            return out

        agg.est_w[racks] = total(known)
        agg.held_w[racks] = total(_zero_nan(np.maximum(est - self.caps_w[idx], 0.0)))
        agg.read_w[racks] = total(_zero_nan(self.server_w[idx]))
        agg.critical_w[racks] = total(known * self.inv.critical[idx])
        agg.server_oldest_s[racks] = oldest(self.server_w, self.server_t)
        agg.outlet_w[racks] = total(_zero_nan(self.outlet_w[idx]))
        agg.outlet_oldest_s[racks] = oldest(self.outlet_w, self.outlet_t)
        agg.mqtt_w[racks] = total(_zero_nan(self.mqtt_server_w[idx]))
        agg.mqtt_oldest_s[racks] = oldest(self.mqtt_server_w, self.mqtt_server_t)

    def _held_at_meters(self) -> FloatArray:
        """Per rack, what our caps hold back from its meter's reading: each server's demand
        above the cap that was in force when that meter read (the PDU may read before a new
        cap binds). Only racks with a cap changed after their meter's reading need their
        servers' rows; the others hold back what the current caps do."""
        held = self._agg.held_w.copy()
        racks = np.flatnonzero(self._rack_cap_changed_s > self.pdu_t)
        if racks.size:
            idx, runs, n = self._servers_of(racks)
            cap = np.where(
                self.caps_changed_s[idx] <= np.repeat(self.pdu_t[racks], n),
                self.caps_w[idx],
                self.caps_prev_w[idx],
            )
            over = _zero_nan(np.maximum(self._server_est(idx) - cap, 0.0))
            held[racks] = np.add.reduceat(over, runs)
        return held

    def demand(self, now_s: float) -> DemandView:
        inv = self.inv
        self._aggregate()
        agg, has = self._agg, self._has_servers
        cutoff = now_s - self.max_age_s
        srv_complete = (agg.server_oldest_s >= cutoff) & has
        srv_sum = agg.est_w
        pdu_fresh = (self.pdu_t >= cutoff) & np.isfinite(self.pdu_w)
        held = self._held_at_meters()
        out_sum = np.where((agg.outlet_oldest_s >= cutoff) & has, agg.outlet_w, np.nan)
        meter = np.where(pdu_fresh, self.pdu_w, np.nan)
        mqtt = np.where(
            (self.mqtt_rack_t >= cutoff) & np.isfinite(self.mqtt_rack_w),
            self.mqtt_rack_w,
            np.where((agg.mqtt_oldest_s >= cutoff) & has, agg.mqtt_w, np.nan),
        )
        self._cross_check(
            meter,
            {"bmc": np.where(srv_complete, agg.read_w, np.nan), "outlets": out_sum, "mqtt": mqtt},
        )
        # The PDU meters the whole rack (plus what our caps hold back); with no fresh meter,
        # the highest complete source (servers, outlets; MQTT only where no meter was ever
        # read) stands in for it.
        mqtt_stand_in = np.where(self.meter_seen, np.nan, mqtt)
        rack_w = rack_demand_w(
            meter + held,
            np.stack(
                [np.where(srv_complete, srv_sum, np.nan), out_sum + held, mqtt_stand_in + held]
            ),
        )
        fresh = np.isfinite(rack_w)
        rack_w = np.where(fresh, rack_w, self.last_good_rack_w)
        self.last_good_rack_w = rack_w.copy()
        frac = self.critical_fraction[inv.rack_domain]
        rack_crit = np.where(srv_complete, agg.critical_w, rack_w * frac)
        d = inv.n_domains
        demand_kw = np.bincount(inv.rack_domain, weights=rack_w, minlength=d) / 1000.0
        critical_kw = np.bincount(inv.rack_domain, weights=rack_crit, minlength=d) / 1000.0
        stale = np.bincount(inv.rack_domain, weights=(~fresh).astype(float), minlength=d) > 0
        unread = np.bincount(inv.rack_domain, weights=(~self.ever_read).astype(float), minlength=d)
        return DemandView(
            demand_kw, np.minimum(critical_kw, demand_kw), stale, rack_w, fresh, unread == 0
        )

    def _cross_check(self, meter_w: FloatArray, others_w: dict[str, FloatArray]) -> None:
        """Count the racks where a source disagrees with the meter. A source's episode of
        disagreement is noted once when it starts (how many racks, the worst three) and once
        when it has agreed everywhere for ``QUIET_CHECKS`` checks: a flapping source on 1,000
        racks must not write an event per rack and tick."""
        for name, other_w in others_w.items():
            now = disagrees(meter_w, other_w, self.rules)
            n = int(now.sum())
            self.disagreements[name] += n
            if n:
                self._quiet[name] = 0
                if not self._episode[name]:
                    self._episode[name] = True
                    self._notices.append(self._disagreement(name, now, meter_w, other_w))
            elif self._episode[name]:
                self._quiet[name] += 1
                if self._quiet[name] >= QUIET_CHECKS:
                    self._episode[name] = False
                    self._notices.append(f"{name} agrees with the rack meters again")

    def _disagreement(
        self, name: str, where: BoolArray, meter_w: FloatArray, other_w: FloatArray
    ) -> str:
        racks = np.flatnonzero(where)
        worst = racks[np.argsort(-np.abs(other_w[racks] - meter_w[racks]))[:3]]
        detail = ", ".join(
            f"{self.inv.rack_ids[i]} {other_w[i]:.0f} W vs {meter_w[i]:.0f} W" for i in worst
        )
        return (
            f"{name} disagrees with the meter on {len(racks)} rack(s) ({detail}): ignored, "
            "the meters are used"
        )

    def take_notices(self) -> list[str]:
        """What changed since the last call (first rejection of a kind, a source starting or
        stopping to disagree with a meter), for the event log."""
        notices, self._notices = self._notices, []
        return notices

    def server_demand_w(self) -> FloatArray:
        """Best estimate of each server's uncapped demand (W). A server never read uncapped
        gets an equal share of what its rack's other servers leave of the rack's power: a cap
        computed from "0 W, unknown" would pin it at its minimum and hide its demand for good."""
        est = np.where(
            np.isnan(self.uncapped_w), self.server_w, np.fmax(self.uncapped_w, self.server_w)
        )
        unknown = np.isnan(self.uncapped_w)
        if unknown.any():
            r = self.inv.n_racks
            known_w = np.bincount(
                self.inv.server_rack, weights=_zero_nan(est) * ~unknown, minlength=r
            )
            n_unknown = np.bincount(
                self.inv.server_rack, weights=unknown.astype(float), minlength=r
            )
            share = np.maximum(self.last_good_rack_w - known_w, 0.0) / np.maximum(n_unknown, 1)
            est = np.where(unknown, np.fmax(_zero_nan(est), share[self.inv.server_rack]), est)
        return _zero_nan(est)
