"""Shifts of non-critical work between power domains: which are in force, and how a
controller's per-domain levels become orders (DESIGN §8, "Scheduler hook"). Pure: time is
passed in.

A shift order names a (source, target) pair — target None: the scheduler picks the
destination — a power, and a window ``[start_s, end_s)`` (start = issue time + the shift lead
time, length = the plan period in force). **A newer order for a pair replaces the previous one
from its start on**; orders never add up. An order with 0 kW ends the pair's shift. Orders are
ordered by ``revision`` (the issue time in ms): an order not newer than the last one placed for
its pair is a duplicate or out of order and is ignored.

The simulator's plant, the live runtime's ledger and the emulated scheduler all keep their
shifts in a :class:`ShiftBook`, so the three agree on what is in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Pair = tuple[int, int | None]

#: Levels closer than this (kW) are the same level: no new order is needed.
LEVEL_TOLERANCE_KW = 0.05


@dataclass(frozen=True)
class ShiftOrder:
    """Move ``kw`` of non-critical work from domain ``source`` to ``target`` in [start, end)."""

    source: int
    target: int | None
    kw: float
    start_s: float
    end_s: float
    revision: int

    @property
    def pair(self) -> Pair:
        return (self.source, self.target)


def revision_at(issued_at_s: float) -> int:
    """The revision of an order issued at ``issued_at_s`` (epoch ms: newer is larger, also
    across a controller restart or a leader change)."""
    return int(round(issued_at_s * 1000.0))


def pair_levels(out_kw: FloatArray, in_kw: FloatArray, tol_kw: float = 1e-9) -> dict[Pair, float]:
    """Per-domain shift levels as (source, target) levels.

    Work moves only where it can leave *and* be received: the total is the smaller of what
    leaves and what is taken in, split over sources and destinations in proportion. With no
    destination named, each source's level goes to (source, None): the scheduler picks."""
    out = np.where(np.isfinite(out_kw), np.maximum(out_kw, 0.0), 0.0)
    inn = np.where(np.isfinite(in_kw), np.maximum(in_kw, 0.0), 0.0)
    total_out, total_in = float(out.sum()), float(inn.sum())
    levels: dict[Pair, float] = {}
    if total_out <= tol_kw:
        return levels
    if total_in <= tol_kw:
        return {(int(s), None): float(out[s]) for s in np.flatnonzero(out > tol_kw)}
    moved = min(total_out, total_in)
    for s in np.flatnonzero(out > tol_kw):
        takers = [int(t) for t in np.flatnonzero(inn > tol_kw) if t != s]
        share_in = sum(float(inn[t]) for t in takers)
        for t in takers:
            kw = moved * float(out[s]) / total_out * float(inn[t]) / share_in
            if kw > tol_kw:
                levels[(int(s), t)] = kw
    return levels


@dataclass
class ShiftBook:
    """The shift orders placed, per pair, and what is in force at a time."""

    n_domains: int
    _orders: dict[Pair, list[ShiftOrder]] = field(default_factory=dict)
    _revision: dict[Pair, int] = field(default_factory=dict)

    def place(self, order: ShiftOrder) -> bool:
        """Place ``order``: it replaces its pair's previous order from ``order.start_s`` on.
        False (nothing changes) if it is not newer than the last order of its pair."""
        if order.revision <= self._revision.get(order.pair, -1):
            return False
        self._revision[order.pair] = order.revision
        kept = []
        for old in self._orders.get(order.pair, []):
            if old.start_s >= order.start_s:
                continue  # superseded before it began
            end = min(old.end_s, order.start_s)
            kept.append(ShiftOrder(old.source, old.target, old.kw, old.start_s, end, old.revision))
        if order.kw > 0 and order.end_s > order.start_s:
            kept.append(order)
        self._orders[order.pair] = kept
        return True

    def in_force(self, now_s: float) -> list[ShiftOrder]:
        """Orders whose window contains ``now_s`` (at most one per pair)."""
        return [
            o for orders in self._orders.values() for o in orders if o.start_s <= now_s < o.end_s
        ]

    def latest(self, pair: Pair) -> ShiftOrder | None:
        """The last order placed for ``pair`` that is still pending or in force."""
        orders = self._orders.get(pair, [])
        return orders[-1] if orders else None

    def levels(self, now_s: float) -> tuple[FloatArray, FloatArray]:
        """(out_kw, in_kw) per domain of the orders in force at ``now_s``."""
        out, inn = np.zeros(self.n_domains), np.zeros(self.n_domains)
        for o in self.in_force(now_s):
            out[o.source] += o.kw
            if o.target is not None:
                inn[o.target] += o.kw
        return out, inn

    def moved(self, now_s: float, noncritical_kw: FloatArray) -> tuple[FloatArray, FloatArray]:
        """What really moves at ``now_s`` (out_kw, in_kw): a source releases no more than its
        non-critical load (its pairs scaled down in proportion) and a pair without a named
        destination moves nothing here (no receiver to put it on), so work is never lost nor
        created."""
        orders = [o for o in self.in_force(now_s) if o.target is not None]
        wanted = np.zeros(self.n_domains)
        for o in orders:
            wanted[o.source] += o.kw
        free = np.maximum(np.where(np.isfinite(noncritical_kw), noncritical_kw, 0.0), 0.0)
        scale = np.where(wanted > free, free / np.where(wanted > 0, wanted, 1.0), 1.0)
        out, inn = np.zeros(self.n_domains), np.zeros(self.n_domains)
        for o in orders:
            kw = o.kw * float(scale[o.source])
            out[o.source] += kw
            inn[int(o.target or 0)] += kw
        return out, inn

    def prune(self, now_s: float) -> None:
        """Forget orders that ended before ``now_s``."""
        for pair, orders in list(self._orders.items()):
            self._orders[pair] = [o for o in orders if o.end_s > now_s]

    def orders_due(
        self,
        now_s: float,
        levels: Mapping[Pair, float],
        lead_s: float,
        period_s: float,
        tol_kw: float = LEVEL_TOLERANCE_KW,
    ) -> list[ShiftOrder]:
        """The orders to issue at ``now_s`` for the wanted pair ``levels``: a pair whose level
        changed, a pair whose order would run out before the next one could start (renewal:
        the window is one plan period), and a 0 kW order for a pair no longer wanted."""
        start, rev = now_s + lead_s, revision_at(now_s)
        pairs = set(levels) | {p for p, orders in self._orders.items() if orders}
        due = []
        for pair in sorted(pairs, key=lambda p: (p[0], -1 if p[1] is None else p[1])):
            kw = float(levels.get(pair, 0.0))
            held = self.latest(pair)
            if held is not None and held.end_s <= now_s:
                held = None  # ran out already: nothing to replace or cancel
            held_kw = 0.0 if held is None else held.kw
            changed = abs(kw - held_kw) > tol_kw
            # Renew once less than half a period would be left after the new start.
            renew = kw > tol_kw and held is not None and held.end_s - start < period_s / 2
            if changed or renew:
                due.append(ShiftOrder(pair[0], pair[1], max(kw, 0.0), start, start + period_s, rev))
        return due
