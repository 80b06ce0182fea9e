"""Thin async Redfish client: HTTP in, typed values out; never raises into the control loop.

All decoding and encoding lives in `codec`; this module only moves JSON over httpx. A device
that fails (timeout, refused connection, HTTP error, malformed JSON) is logged once through
`FaultLog` and yields its last reading marked `stale`, or a reading with `power_w=None`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

import httpx

from wattwheel.adapters.redfish.auth import RedfishSessionAuth
from wattwheel.adapters.redfish.codec import (
    SERVICE_ROOT_URI,
    encode_outlet_power,
    encode_power_limit,
    parse_error_message,
    parse_outlet,
    parse_reading,
)
from wattwheel.adapters.redfish.discovery import discover_resources
from wattwheel.adapters.redfish.faults import DEVICE, FaultLog
from wattwheel.adapters.redfish.samples import outlet_samples, server_samples
from wattwheel.adapters.redfish.values import (
    DiscoveredServer,
    JsonObject,
    OutletReading,
    PowerLimitTarget,
    RedfishInventory,
    RedfishPayloadError,
    RequestBody,
    ServerPowerReading,
)
from wattwheel.domain.telemetry import PowerSample

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
_HEADERS = {"Accept": "application/json", "OData-Version": "4.0"}


class RedfishRequestError(Exception):
    """An HTTP exchange with the device did not produce the expected answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RedfishClient:
    """One Redfish service (a BMC or a PDU, or an emulator serving many chassis)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_tls: bool | str = True,
        session_auth: bool = False,
        rack_id: str | None = None,
        include_outlets: bool = False,
        clock: Callable[[], float] = time.time,
        racks: Collection[str] | None = None,
    ) -> None:
        """`timeout_s` bounds each request (seconds), so one slow BMC cannot stall a tick.

        With credentials: HTTP Basic on every request, or with `session_auth` one Redfish
        session (X-Auth-Token), renewed when it expires and deleted by `aclose()`.
        `verify_tls`: check the BMC's certificate (True), against a CA file (path), or not.
        `rack_id` is the rack of servers (and PDUs) that do not state Location.Placement.Rack;
        `include_outlets` adds PDU outlet readings to `read()` (kind "outlet");
        `clock` (epoch seconds) stamps readings the device does not time itself.
        `racks`: read only the servers of these racks (one shard's process; a server whose
        rack is not known is read); None: every server.
        """
        if timeout_s <= 0 or not math.isfinite(timeout_s):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        auth: httpx.Auth | None = None
        self._session: RedfishSessionAuth | None = None
        if username is not None and session_auth:
            auth = self._session = RedfishSessionAuth(username, password or "")
        elif username is not None:
            auth = httpx.BasicAuth(username, password or "")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            headers=_HEADERS,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            verify=_tls_context(verify_tls),
        )
        self._faults = FaultLog(logger, self.base_url)
        self._last: dict[str, ServerPowerReading] = {}
        self._last_outlets: dict[str, OutletReading] = {}
        self.inventory: RedfishInventory | None = None
        self._rack_id = rack_id
        self._include_outlets = include_outlets
        self._racks = None if racks is None else frozenset(racks)
        self._clock = clock
        self._unplaced: set[str] = set()

    @property
    def failing(self) -> bool:
        """True while the device is not answering."""
        return self._faults.failing

    async def __aenter__(self) -> RedfishClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Log out of the Redfish session, if any (best effort), and close connections."""
        if self._session is not None and self._session.session_uri is not None:
            try:
                await self._http.delete(self._session.session_uri)
            except httpx.HTTPError as error:
                logger.debug("Redfish logout from %s failed: %s", self.base_url, error)
        await self._http.aclose()

    # ------------------------------------------------------------ faults

    def _failed(self, key: str, what: str, error: BaseException | str) -> None:
        # An unreachable device is one fault, whatever was being asked of it.
        device_down = isinstance(error, httpx.TransportError)
        self._faults.failed(DEVICE if device_down else key, what, error)

    def _ok(self, key: str) -> None:
        self._faults.succeeded(DEVICE, key)

    # ------------------------------------------------------------ HTTP

    async def _get(self, uri: str, *, missing_ok: bool = False) -> JsonObject | None:
        response = await self._http.get(uri)
        if missing_ok and response.status_code in (404, 405, 501):
            return None
        if response.status_code != 200:
            raise RedfishRequestError(
                f"GET {uri} -> HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        try:
            payload = response.json()
        except ValueError as error:
            raise RedfishPayloadError(uri, "", f"response is not JSON ({error})") from error
        if not isinstance(payload, Mapping):
            raise RedfishPayloadError(uri, "", "response is not a JSON object")
        return payload

    async def _send(self, request: RequestBody) -> None:
        response = await self._http.request(request.method, request.uri, json=request.body)
        if response.status_code not in (200, 202, 204):
            raise RedfishRequestError(
                f"{request.method} {request.uri} -> HTTP {response.status_code}: "
                f"{_error_text(response)}",
                response.status_code,
            )

    # ------------------------------------------------------------ discovery

    async def discover(self) -> RedfishInventory | None:
        """Find the power resources under the service root; None if the device fails."""
        walk = discover_resources(SERVICE_ROOT_URI)
        try:
            uri = next(walk)
            while True:
                # The root must answer; other resources are optional and vendors omit many.
                payload = await self._get(uri, missing_ok=uri != SERVICE_ROOT_URI)
                uri = walk.send(payload)
        except StopIteration as done:
            self.inventory = done.value
            self._ok("discovery")
            return self.inventory
        except (httpx.HTTPError, RedfishRequestError, RedfishPayloadError) as error:
            self._failed("discovery", "discovery", error)
            return None

    async def _inventory(self) -> RedfishInventory | None:
        return self.inventory if self.inventory is not None else await self.discover()

    # ------------------------------------------------------------ server power

    async def read_power(self) -> list[ServerPowerReading]:
        """One reading per discovered server (watts); stale or None readings when failing."""
        inventory = await self._inventory()
        if inventory is None:
            return [replace(r, stale=True) for r in self._last.values()]
        servers = inventory.servers
        if self._racks is not None:
            racks = self._racks
            servers = tuple(
                s for s in servers if (rack := s.rack or self._rack_id) is None or rack in racks
            )
        readings = await asyncio.gather(*(self._read_server(s) for s in servers))
        return list(readings)

    async def _read_server(self, server: DiscoveredServer) -> ServerPowerReading:
        last_error: BaseException | str = "no reading source answered"
        for source in server.reading_sources:
            try:
                payload = await self._get(source.uri)
                reading = parse_reading(source, payload, server.chassis_uri)
            except httpx.TransportError as error:
                last_error = error
                break  # unreachable: another source of the same device would only time out too
            except (httpx.HTTPError, RedfishRequestError, RedfishPayloadError) as error:
                last_error = error  # this resource is broken; the next source may do
                continue
            if reading is not None:
                self._ok(server.chassis_uri)
                self._last[server.chassis_uri] = reading
                return reading
        self._failed(server.chassis_uri, f"reading power of {server.chassis_uri}", last_error)
        if isinstance(last_error, RedfishRequestError) and last_error.status == 404:
            # The resource went away (firmware update, chassis replaced): rediscover next time.
            self.inventory = None
        previous = self._last.get(server.chassis_uri)
        if previous is not None:
            return replace(previous, stale=True)
        return ServerPowerReading(server.chassis_uri, server.chassis_uri, None, stale=True)

    async def read(self) -> list[PowerSample]:
        """TelemetrySource: fresh readings as PowerSamples, `source="redfish:<url>"`.

        Servers as `kind="server"` (server_id = chassis Id), and with `include_outlets` PDU
        outlets as `kind="outlet"`; stale or empty readings are left out (see `samples`).
        """
        readings = await self.read_power()
        outlets = await self.read_outlets() if self._include_outlets else []
        inventory = self.inventory or RedfishInventory()
        servers = {s.chassis_uri: s for s in inventory.servers}
        source, now_s = f"redfish:{self.base_url}", self._clock()
        batch = server_samples(readings, servers, source, self._rack_id, now_s)
        outlet_batch = outlet_samples(outlets, source, self._rack_id, now_s)
        for uri in batch.unplaced + outlet_batch.unplaced:
            self._warn_unplaced(uri)
        return batch.samples + outlet_batch.samples

    def _warn_unplaced(self, uri: str) -> None:
        if uri not in self._unplaced:
            self._unplaced.add(uri)
            logger.warning(
                "Redfish %s%s states no rack (Location.Placement.Rack) and the client has no "
                "rack_id: its readings are not used",
                self.base_url,
                uri,
            )

    async def set_power_limit(self, watts: float, chassis_uri: str | None = None) -> float | None:
        """Cap one server (or every discovered server when `chassis_uri` is None), in watts.

        Uses `Controls/PowerLimit` SetPoint when the BMC offers it, else
        `PowerControl[].PowerLimit.LimitInWatts`. A request outside the advertised range is
        clamped to it (the nearest achievable cap). Returns the watts written, or None if the
        device refused, failed or offers no limit.
        """
        inventory = await self._inventory()
        if inventory is None:
            return None
        servers = [s for s in inventory.servers if chassis_uri in (None, s.chassis_uri)]
        if not servers:
            self._failed("set_power_limit", "set_power_limit", f"no server {chassis_uri!r}")
            return None
        results = await asyncio.gather(*(self._write_limit(s, watts) for s in servers))
        return None if any(r is None for r in results) else results[0]

    async def set_power_limits(self, limits_w: Mapping[str, float]) -> dict[str, float | None]:
        """Cap many servers at once (concurrently): {server id or chassis URI: watts}.

        Server ids are the chassis `Id`s, as in the `server_id` of the PowerSamples from
        `read()`. Returns, per key, the watts written or None (unknown server, refused, failed).
        """
        inventory = await self._inventory()
        if inventory is None:
            return dict.fromkeys(limits_w)
        by_key = {s.chassis_id: s for s in inventory.servers}
        by_key.update({s.chassis_uri: s for s in inventory.servers})
        unknown = sorted(k for k in limits_w if k not in by_key)
        if unknown:
            self._failed("set_power_limits", "set_power_limits", f"no servers {unknown}")
        keys = [k for k in limits_w if k in by_key]
        written = await asyncio.gather(*(self._write_limit(by_key[k], limits_w[k]) for k in keys))
        results: dict[str, float | None] = dict.fromkeys(limits_w)
        results.update(zip(keys, written, strict=True))
        return results

    async def _write_limit(self, server: DiscoveredServer, watts: float) -> float | None:
        target = server.preferred_limit
        if target is None:
            key = f"limit:{server.chassis_uri}"
            self._failed(key, f"capping {server.chassis_uri}", "the BMC offers no power limit")
            return None
        if not math.isfinite(watts):
            # A NaN/inf cap is a bug upstream; writing "no cap" instead would be unsafe.
            key = f"limit:{server.chassis_uri}"
            self._failed(key, f"capping {server.chassis_uri}", f"refused limit {watts!r} W")
            return None
        value = _clamp(watts, target)
        try:
            await self._send(encode_power_limit(target, value))
        except (httpx.HTTPError, RedfishRequestError, ValueError) as error:
            what = f"capping {server.chassis_uri} at {value:.0f} W"
            self._failed(f"limit:{server.chassis_uri}", what, error)
            return None
        self._ok(f"limit:{server.chassis_uri}")
        return float(round(value))

    # ------------------------------------------------------------ PDU outlets

    async def read_outlets(self) -> list[OutletReading]:
        """Every discovered PDU outlet's power (watts) and state; stale when failing."""
        inventory = await self._inventory()
        if inventory is None:
            return [replace(o, stale=True) for o in self._last_outlets.values()]
        return list(await asyncio.gather(*(self._read_outlet(o) for o in inventory.outlets)))

    async def _read_outlet(self, known: OutletReading) -> OutletReading:
        try:
            outlet = replace(parse_outlet(await self._get(known.uri), known.uri), rack=known.rack)
        except (httpx.HTTPError, RedfishRequestError, RedfishPayloadError) as error:
            self._failed(known.uri, f"reading outlet {known.uri}", error)
            return replace(self._last_outlets.get(known.uri, known), stale=True)
        self._ok(known.uri)
        self._last_outlets[known.uri] = outlet
        return outlet

    async def set_outlet(self, outlet_uri: str, on: bool) -> bool:
        """Switch a PDU outlet through `#Outlet.PowerControl` (shed non-critical load only)."""
        inventory = await self._inventory()
        if inventory is None:
            return False  # discovery failed, and said so
        outlet = {o.uri: o for o in inventory.outlets}.get(outlet_uri)
        if outlet is None:
            self._failed("set_outlet", "set_outlet", f"no outlet {outlet_uri!r} discovered")
            return False
        try:
            await self._send(encode_outlet_power(outlet, on))
        except (httpx.HTTPError, RedfishRequestError, RedfishPayloadError) as error:
            self._failed(f"switch:{outlet_uri}", f"switching outlet {outlet_uri}", error)
            return False
        self._ok(f"switch:{outlet_uri}")
        return True


def _clamp(watts: float, target: PowerLimitTarget) -> float:
    low = target.min_w if target.min_w is not None else 1.0
    high = target.max_w if target.max_w is not None else math.inf
    return min(max(watts, low), high)


def _tls_context(verify_tls: bool | str) -> ssl.SSLContext | bool:
    # BMCs usually carry a certificate from the site's own CA: accept its file as a trust root.
    if isinstance(verify_tls, str):
        return ssl.create_default_context(cafile=verify_tls)
    return verify_tls


def _error_text(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    return parse_error_message(body)
