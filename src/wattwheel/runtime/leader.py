"""Leader election per power-domain shard, with fencing (DESIGN §5 "Redundancy and scale").

Several controller instances run side by side. For each *shard* (a set of power domains) and for
the *site coordinator* (shared reserve, cross-domain shifts) there is one election key in a lease
store (etcd): ``/wattwheel/<site>/leader/<shard>`` and ``/wattwheel/<site>/coordinator``. An
instance campaigns by creating the key bound to its lease *only if the key is absent*; the key
disappears when the lease expires, and only then can another instance take it.

Fencing ("a leader that loses its lease stops commanding before another can start"): the
instance measures its lease on its OWN monotonic clock from the *send time* of the last request
that renewed it (grant or keep-alive). etcd renews the lease when the request arrives, which is
later, so ``sent + ttl`` is a lower bound on when etcd can expire the lease and hand the key to
someone else. The instance may command only while ``now < sent + ttl - margin``; a watchdog calls
``on_demote`` at that deadline if no renewal came, strictly before the lease can expire. The
runtime checks :meth:`Elector.may_command` immediately before every actuator write, so even a
process that was paused past its deadline cannot write late. The key's create revision is a
fencing token that actuators able to check it can attach to commands.

The timing rules (:class:`LeaseTiming`) are pure: every function takes ``now_s`` as an argument.
:class:`Elector` drives them over a :class:`LeaseStore` (``adapters/etcd`` implements it) and an
injected :class:`~wattwheel.runtime.clock.Clock`. :class:`FakeElector` is always leader (tests and
single-instance use); :class:`MemoryLeaseStore` is an in-memory lease store for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wattwheel.runtime.clock import Clock

log = logging.getLogger(__name__)

#: Role name of the site coordinator (shards may not use it).
COORDINATOR = "coordinator"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

PromoteCallback = Callable[[str, int], None]
"""``(role, fencing_token)``: this instance now leads ``role`` (a shard or :data:`COORDINATOR`)."""
DemoteCallback = Callable[[str, str], None]
"""``(role, reason)``: this instance must stop commanding ``role`` now."""


def leader_key(site: str, shard: str) -> str:
    """The election key of one shard of a site."""
    return f"/wattwheel/{_checked_name('site', site)}/leader/{_checked_name('shard', shard)}"


def coordinator_key(site: str) -> str:
    """The election key of the site coordinator."""
    return f"/wattwheel/{_checked_name('site', site)}/coordinator"


def _checked_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} name {name!r} must be letters, digits, '_', '.', '-'")
    return name


# --- pure timing rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseTiming:
    """Lease TTL and the fencing margin, in seconds.

    ``ttl_s``: the lease TTL granted by the store (whole seconds, as etcd grants them).
    ``margin_s``: how long before the earliest possible expiry the leader stops commanding; it
    must cover clock-rate differences and the latency of the demotion itself (default ttl/3).
    ``keepalive_every_s``: renewal period (default ttl/3), so two renewals can fail before the
    command deadline.
    """

    ttl_s: int = 3
    margin_s: float | None = None
    keepalive_every_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int) or self.ttl_s < 1:
            raise ValueError(
                f"lease ttl_s must be a whole number of seconds >= 1, not {self.ttl_s}"
            )
        if not 0 < self.margin < self.ttl_s:
            raise ValueError(f"lease margin_s={self.margin} must be in (0, ttl_s={self.ttl_s})")
        if not 0 < self.keepalive_period < self.ttl_s - self.margin:
            raise ValueError(
                f"lease keepalive_every_s={self.keepalive_period} must be in "
                f"(0, ttl_s - margin_s = {self.ttl_s - self.margin})"
            )

    @property
    def margin(self) -> float:
        """Fencing margin (s)."""
        return self.ttl_s / 3 if self.margin_s is None else self.margin_s

    @property
    def keepalive_period(self) -> float:
        """Time between renewals (s)."""
        return self.ttl_s / 3 if self.keepalive_every_s is None else self.keepalive_every_s

    def earliest_expiry_s(self, renewed_sent_s: float) -> float:
        """The earliest the store can expire a lease renewed by a request sent at
        ``renewed_sent_s`` (monotonic s): the store renews on arrival, which is later."""
        return renewed_sent_s + self.ttl_s

    def command_deadline_s(self, renewed_sent_s: float) -> float:
        """Until when (monotonic s) the holder may command: ``margin_s`` before expiry."""
        return self.earliest_expiry_s(renewed_sent_s) - self.margin

    def may_command(self, renewed_sent_s: float | None, now_s: float) -> bool:
        """Whether a leader whose lease was last renewed at ``renewed_sent_s`` may command now."""
        return renewed_sent_s is not None and now_s < self.command_deadline_s(renewed_sent_s)

    def max_command_gap_s(self, campaign_every_s: float, expiry_lag_s: float = 0.5) -> float:
        """Upper bound (s) on the time between the last command of a leader that vanished and
        the first command of its successor: the margin it stops early, the TTL it waits for, the
        store's expiry-check lag (etcd checks about every 0.5 s) and one campaign period. A device
        revert timer longer than this does not revert during a normal failover."""
        return self.ttl_s + expiry_lag_s + campaign_every_s


# --- I/O concerns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyOwner:
    """Who holds an election key after a campaign: ``created`` if this campaign created it;
    ``create_revision`` is the fencing token (it changes whenever the key is re-created)."""

    created: bool
    create_revision: int
    lease_id: int
    holder: str


@dataclass(frozen=True)
class RoleStatus:
    """One role as an instance sees it: ``holder`` is the last holder seen (None: unknown),
    ``command_left_s`` how long the current lease still lets this instance command (s)."""

    role: str
    key: str
    leading: bool
    holder: str | None
    fencing_token: int | None
    command_left_s: float | None
    #: how often this instance resigned the role because it could not command its devices
    resignations: int = 0
    #: until when (s from now) it does not campaign for the role after resigning
    holding_off_s: float | None = None


class LeaseStore(Protocol):
    """A store of leases and keys bound to them (etcd). Each method returns None when the store
    did not answer (unreachable, timeout) instead of raising."""

    async def grant(self, ttl_s: int) -> int | None:
        """A new lease of ``ttl_s`` seconds; its id."""
        ...

    async def keep_alive(self, lease_id: int) -> int | None:
        """Renew the lease; its TTL (s) from now, 0 if the lease no longer exists."""
        ...

    async def revoke(self, lease_id: int) -> bool:
        """Drop the lease and its keys now (a clean hand-over). False if it did not answer."""
        ...

    async def create_if_absent(self, key: str, holder: str, lease_id: int) -> KeyOwner | None:
        """Atomically: create ``key`` = ``holder`` bound to the lease if it does not exist; in
        either case report who holds it now."""
        ...

    async def delete_if_owned(self, key: str, lease_id: int) -> bool:
        """Atomically: delete ``key`` if it is bound to the lease (a resignation). False if the
        store did not answer."""
        ...


class KeyWatcher(Protocol):
    """Tells an elector at once when an election key goes (etcd watch), so a follower campaigns
    when the key is free instead of at its next poll."""

    def deletions(self, prefix: str, retry_s: float) -> AsyncIterator[str]:
        """Each key under ``prefix`` as it is deleted or expires, for ever (a broken watch is
        re-opened after ``retry_s``)."""
        ...


class LeaderElector(Protocol):
    """What the runtime asks of an elector. ``role`` is a shard name or :data:`COORDINATOR`;
    times are the runtime clock's monotonic seconds."""

    async def run(self) -> None:
        """Campaign and keep leases until cancelled (then resign)."""
        ...

    def is_leader(self, role: str) -> bool:
        """Whether this instance holds ``role`` and may command it now."""
        ...

    def may_command(self, role: str, now_s: float) -> bool:
        """Check this right before each command write for ``role``."""
        ...

    def fencing_token(self, role: str) -> int | None:
        """The held key's create revision (None when not leading)."""
        ...

    def status(self, now_s: float) -> list[RoleStatus]:
        """Every role as this instance sees it at ``now_s`` (for the API)."""
        ...

    def command_deadline_s(self, role: str) -> float | None:
        """Until when the current lease lets this instance command ``role`` (None: not leading).
        Device revert timers can be set from it."""
        ...


def commandable_domains(
    elector: LeaderElector, shard_of: Mapping[str, str], now_s: float
) -> frozenset[str]:
    """The power domains this instance may command at ``now_s`` (monotonic s), given which shard
    each domain belongs to: call it right before writing a tick's commands."""
    leading = {shard for shard in set(shard_of.values()) if elector.may_command(shard, now_s)}
    return frozenset(dom for dom, shard in shard_of.items() if shard in leading)


# --- the elector ----------------------------------------------------------------------------


def _ignore_promote(role: str, token: int) -> None:
    return None


def _ignore_demote(role: str, reason: str) -> None:
    return None


class Elector:
    """Campaigns for the shards (and optionally the coordinator) of one site over a
    :class:`LeaseStore`, with one lease per instance covering all its keys.

    Three loops run concurrently in :meth:`run`: renewals, campaigns, and a watchdog that demotes
    at the command deadline even while a renewal request hangs. With a ``watcher``, a fourth
    campaigns for every role at once when an election key of the site is deleted (the lease of
    its holder expired or was revoked): the hand-over waits for the store, not for a poll.
    """

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        *,
        site: str,
        shards: Iterable[str],
        instance_id: str,
        coordinator: bool = True,
        timing: LeaseTiming | None = None,
        campaign_every_s: float | None = None,
        on_promote: PromoteCallback = _ignore_promote,
        on_demote: DemoteCallback = _ignore_demote,
        watcher: KeyWatcher | None = None,
    ) -> None:
        self._store, self._clock = store, clock
        self._watcher = watcher
        self._prefix = f"/wattwheel/{_checked_name('site', site)}/"
        self.timing = timing or LeaseTiming()
        self.campaign_every_s = (
            self.timing.keepalive_period / 2 if campaign_every_s is None else campaign_every_s
        )
        if self.campaign_every_s <= 0:
            raise ValueError(f"campaign_every_s must be > 0, not {self.campaign_every_s}")
        if not instance_id.strip():
            raise ValueError("instance_id must name this controller (e.g. 'host:pid')")
        self.instance_id = instance_id
        self._keys = _role_keys(site, shards, coordinator)
        self._on_promote, self._on_demote = on_promote, on_demote
        self._lease_id: int | None = None
        self._renewed_sent_s: float | None = None
        self._held: dict[str, int] = {}
        self._holders: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._hold_off_until: dict[str, float] = {}
        self.resignations: dict[str, int] = {}

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this instance campaigns for."""
        return tuple(self._keys)

    def is_leader(self, role: str) -> bool:
        return self.may_command(role, self._clock.monotonic_s())

    def may_command(self, role: str, now_s: float) -> bool:
        return role in self._held and self.timing.may_command(self._renewed_sent_s, now_s)

    def fencing_token(self, role: str) -> int | None:
        return self._held.get(role)

    def command_deadline_s(self, role: str) -> float | None:
        if role not in self._held or self._renewed_sent_s is None:
            return None
        return self.timing.command_deadline_s(self._renewed_sent_s)

    def holder(self, role: str) -> str | None:
        """Who holds ``role`` as last seen (this instance's id when leading)."""
        return self.instance_id if role in self._held else self._holders.get(role)

    def status(self, now_s: float) -> list[RoleStatus]:
        """Every role as this instance sees it at ``now_s`` (monotonic s), for the API."""
        return [
            RoleStatus(
                role=role,
                key=key,
                leading=self.may_command(role, now_s),
                holder=self.holder(role),
                fencing_token=self.fencing_token(role),
                command_left_s=_left_s(self.command_deadline_s(role), now_s),
                resignations=self.resignations.get(role, 0),
                holding_off_s=_left_s(self._hold_off_until.get(role), now_s) or None,
            )
            for role, key in self._keys.items()
        ]

    async def resign(self, role: str, hold_off_s: float, reason: str) -> bool:
        """Stop leading ``role`` and hand it over: demote now (nothing more is written), wait
        the fencing margin (a write that passed its check lands or times out first), then
        delete the key so another instance can take it at once; do not campaign for the role
        for ``hold_off_s`` (hysteresis: no ping-pong between instances that both fail).
        False if this instance did not lead ``role``."""
        if role not in self._held:
            return False
        key, lease_id = self._keys[role], self._lease_id
        self._hold_off_until[role] = self._clock.monotonic_s() + hold_off_s
        self.resignations[role] = self.resignations.get(role, 0) + 1
        self._demote(role, f"resigned: {reason}")
        await self._clock.sleep(self.timing.margin)
        if lease_id is None or lease_id != self._lease_id:
            return True  # the lease went meanwhile: the key went with it
        if not await self._store.delete_if_owned(key, lease_id):
            log.warning("%s: could not delete %s; it goes with the lease", self.instance_id, key)
        return True

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._lease_loop())
                tasks.create_task(self._campaign_loop())
                tasks.create_task(self._watchdog())
                if self._watcher is not None:
                    tasks.create_task(self._watch_loop(self._watcher))
        finally:
            self._demote_all("elector stopped")
            await self._resign()

    # lease

    async def _lease_loop(self) -> None:
        while True:
            sent_s = self._clock.monotonic_s()
            if self._lease_id is None:
                await self._grant(sent_s)
            else:
                await self._renew(self._lease_id, sent_s)
                if self._lease_id is None:
                    continue  # the lease is gone: ask for a new one at once
            elapsed_s = self._clock.monotonic_s() - sent_s
            await self._clock.sleep(self.timing.keepalive_period - elapsed_s)

    async def _grant(self, sent_s: float) -> None:
        lease_id = await self._store.grant(self.timing.ttl_s)
        if lease_id is not None:
            self._lease_id, self._renewed_sent_s = lease_id, sent_s
            log.info(
                "%s: lease %x granted (ttl %d s)", self.instance_id, lease_id, self.timing.ttl_s
            )

    async def _renew(self, lease_id: int, sent_s: float) -> None:
        ttl_s = await self._store.keep_alive(lease_id)
        if ttl_s is None or lease_id != self._lease_id:
            return  # no answer: the watchdog demotes at the deadline if this goes on
        if ttl_s <= 0:
            log.warning("%s: lease %x expired in the store", self.instance_id, lease_id)
            self._demote_all("lease expired")
            self._lease_id, self._renewed_sent_s = None, None
            return
        if self._renewed_sent_s is None or sent_s > self._renewed_sent_s:
            self._renewed_sent_s = sent_s

    async def _resign(self) -> None:
        lease_id, self._lease_id, self._renewed_sent_s = self._lease_id, None, None
        if lease_id is not None:
            # Revoking hands the keys over now instead of after the TTL; best effort.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._store.revoke(lease_id), self.timing.margin)

    # campaigns

    async def _campaign_loop(self) -> None:
        while True:
            await self._campaign_round(concurrently=False)
            await self._clock.sleep(self.campaign_every_s)

    async def _campaign_round(self, concurrently: bool) -> None:
        now_s = self._clock.monotonic_s()
        if not self.timing.may_command(self._renewed_sent_s, now_s):
            return
        roles = [r for r in self._keys if self._hold_off_until.get(r, -1.0) <= now_s]
        if concurrently:  # a follower takes every free key in one round trip's time
            await asyncio.gather(*(self._campaign(r, self._keys[r]) for r in roles))
            return
        for role in roles:
            if self.timing.may_command(self._renewed_sent_s, self._clock.monotonic_s()):
                await self._campaign(role, self._keys[role])

    async def _watch_loop(self, watcher: KeyWatcher) -> None:
        # Campaigns here run beside the polling ones; both are safe to overlap: a key is created
        # once, and a promotion happens once per create revision.
        mine = set(self._keys.values())
        async for key in watcher.deletions(self._prefix, self.timing.keepalive_period):
            if key in mine:
                log.info("%s: election key %s is free: campaigning now", self.instance_id, key)
                await self._campaign_round(concurrently=True)

    async def _campaign(self, role: str, key: str) -> None:
        lease_id = self._lease_id
        if lease_id is None:
            return
        owner = await self._store.create_if_absent(key, self.instance_id, lease_id)
        if owner is None or lease_id != self._lease_id:
            return
        self._holders[role] = owner.holder
        ours = owner.lease_id == lease_id
        if not ours:
            if role in self._held:  # someone removed our key and took it: never lead both
                self._demote(role, f"key taken by {owner.holder}")
            return
        if self._held.get(role) != owner.create_revision:
            self._promote(role, owner.create_revision)

    def _promote(self, role: str, token: int) -> None:
        now_s = self._clock.monotonic_s()
        if not self.timing.may_command(self._renewed_sent_s, now_s):
            return  # the lease ran out while the request was in flight
        if self._hold_off_until.get(role, -1.0) > now_s:
            return  # resigned while this campaign was in flight: the key is being handed over
        self._held[role] = token
        self._wake.set()
        log.info("%s: leader of %s (fencing token %d)", self.instance_id, role, token)
        _call(self._on_promote, role, token)

    def _demote(self, role: str, reason: str) -> None:
        if self._held.pop(role, None) is not None:
            log.warning("%s: no longer leader of %s: %s", self.instance_id, role, reason)
            _call(self._on_demote, role, reason)

    def _demote_all(self, reason: str) -> None:
        for role in list(self._held):
            self._demote(role, reason)

    # watchdog

    async def _watchdog(self) -> None:
        while True:
            now_s = self._clock.monotonic_s()
            if self._held and not self.timing.may_command(self._renewed_sent_s, now_s):
                self._demote_all("lease not renewed in time")
            await self._sleep_or_wake(self._watchdog_wait_s(now_s))

    async def _sleep_or_wake(self, wait_s: float) -> None:
        # A promotion wakes the watchdog so it sleeps until the new deadline, whatever the
        # timing settings, instead of finishing a sleep computed while nothing was held.
        self._wake.clear()
        await _sleep_or(self._clock.sleep(wait_s), self._wake)

    def _watchdog_wait_s(self, now_s: float) -> float:
        wait_s = self.timing.keepalive_period
        if self._held and self._renewed_sent_s is not None:
            wait_s = min(wait_s, self.timing.command_deadline_s(self._renewed_sent_s) - now_s)
        return max(wait_s, 0.001)


async def _sleep_or(sleeping: Coroutine[Any, Any, None], wake: asyncio.Event) -> None:
    """Until ``sleeping`` is done or ``wake`` is set, whichever comes first."""
    sleep = asyncio.ensure_future(sleeping)
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleep.cancel()
        woken.cancel()


def _left_s(deadline_s: float | None, now_s: float) -> float | None:
    return None if deadline_s is None else max(deadline_s - now_s, 0.0)


def _role_keys(site: str, shards: Iterable[str], coordinator: bool) -> dict[str, str]:
    keys: dict[str, str] = {}
    for shard in shards:
        if shard == COORDINATOR:
            raise ValueError(f"shard name {shard!r} is reserved for the site coordinator")
        if shard in keys:
            raise ValueError(f"shard {shard!r} listed twice")
        keys[shard] = leader_key(site, shard)
    if coordinator:
        keys[COORDINATOR] = coordinator_key(site)
    if not keys:
        raise ValueError("an elector needs at least one shard or the coordinator role")
    return keys


def _call(callback: Callable[..., None], *args: object) -> None:
    # A failing callback must not stop elections (or skip a demotion of another role).
    try:
        callback(*args)
    except Exception:
        log.exception("leader callback %r failed", callback)


# --- fakes ------------------------------------------------------------------------------------


class FakeElector:
    """Always leader of every role it is given, from the moment :meth:`run` starts (or at once
    with ``lead_at_start``): the single-instance setup and the runtime's tests. :meth:`demote`
    and :meth:`promote` let a test play a failover."""

    def __init__(
        self,
        roles: Iterable[str] = (COORDINATOR,),
        *,
        lead_at_start: bool = True,
        on_promote: PromoteCallback = _ignore_promote,
        on_demote: DemoteCallback = _ignore_demote,
    ) -> None:
        self.roles = tuple(roles)
        self._on_promote, self._on_demote = on_promote, on_demote
        self._token = 0
        self._held: dict[str, int] = {}
        if lead_at_start:
            for role in self.roles:
                self.promote(role)

    async def run(self) -> None:
        for role in self.roles:
            if role not in self._held:
                self.promote(role)
        try:
            await asyncio.Event().wait()
        finally:
            for role in list(self._held):
                self.demote(role, "elector stopped")

    def promote(self, role: str) -> None:
        """Lead ``role`` with a new fencing token."""
        self._token += 1
        self._held[role] = self._token
        _call(self._on_promote, role, self._token)

    def demote(self, role: str, reason: str = "demoted by test") -> None:
        """Stop leading ``role``."""
        if self._held.pop(role, None) is not None:
            _call(self._on_demote, role, reason)

    def is_leader(self, role: str) -> bool:
        return role in self._held

    def may_command(self, role: str, now_s: float) -> bool:
        return role in self._held

    def fencing_token(self, role: str) -> int | None:
        return self._held.get(role)

    def command_deadline_s(self, role: str) -> float | None:
        return float("inf") if role in self._held else None

    def status(self, now_s: float) -> list[RoleStatus]:
        """Every role, led by this (single) instance while held; no lease, no deadline."""
        return [
            RoleStatus(
                role=role,
                key="(no election: single instance)",
                leading=role in self._held,
                holder="this instance" if role in self._held else None,
                fencing_token=self._held.get(role),
                command_left_s=None,
            )
            for role in self.roles
        ]


class MemoryLeaseStore:
    """An in-memory :class:`LeaseStore` whose leases expire on ``clock.monotonic_s()``, exactly
    at renewal + TTL (etcd is a little later). Set ``reachable = False`` to play a partition:
    every call then returns None (or False) and changes nothing."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.reachable = True
        self._revision = 0
        self._leases: dict[int, tuple[int, float]] = {}  # id -> (ttl_s, expires_at_s)
        self._keys: dict[str, KeyOwner] = {}
        self._next_id = 0x1000

    def _expire(self) -> None:
        now_s = self._clock.monotonic_s()
        for lease_id, (_, expires_s) in list(self._leases.items()):
            if expires_s <= now_s:
                self._drop(lease_id)

    def _drop(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)
        for key in [k for k, o in self._keys.items() if o.lease_id == lease_id]:
            del self._keys[key]
            self._revision += 1

    async def grant(self, ttl_s: int) -> int | None:
        if not self.reachable:
            return None
        self._next_id += 1
        self._leases[self._next_id] = (ttl_s, self._clock.monotonic_s() + ttl_s)
        return self._next_id

    async def keep_alive(self, lease_id: int) -> int | None:
        if not self.reachable:
            return None
        self._expire()
        if lease_id not in self._leases:
            return 0
        ttl_s = self._leases[lease_id][0]
        self._leases[lease_id] = (ttl_s, self._clock.monotonic_s() + ttl_s)
        return ttl_s

    async def revoke(self, lease_id: int) -> bool:
        if not self.reachable:
            return False
        self._drop(lease_id)
        return True

    async def create_if_absent(self, key: str, holder: str, lease_id: int) -> KeyOwner | None:
        if not self.reachable:
            return None
        self._expire()
        if key in self._keys:
            return KeyOwner(False, *_owner_fields(self._keys[key]))
        if lease_id not in self._leases:
            return None  # etcd refuses a put on an unknown lease with an error
        self._revision += 1
        self._keys[key] = KeyOwner(True, self._revision, lease_id, holder)
        return self._keys[key]

    async def delete_if_owned(self, key: str, lease_id: int) -> bool:
        if not self.reachable:
            return False
        self._expire()
        owner = self._keys.get(key)
        if owner is not None and owner.lease_id == lease_id:
            del self._keys[key]
            self._revision += 1
        return True

    def holder(self, key: str) -> str | None:
        """Who holds ``key`` now (None: nobody)."""
        self._expire()
        owner = self._keys.get(key)
        return owner.holder if owner else None


def _owner_fields(owner: KeyOwner) -> tuple[int, int, str]:
    return owner.create_revision, owner.lease_id, owner.holder
