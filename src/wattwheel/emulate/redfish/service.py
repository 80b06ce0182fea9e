"""The emulated Redfish service: routing, authentication, sessions, PATCH and actions.

One chassis per server (`/redfish/v1/Chassis/{server}`) with `Power`, `PowerSubsystem`,
`Sensors/TotalPower`, `EnvironmentMetrics` and `Controls/PowerLimit`, and one rack PDU with an
outlet per server. A power limit written through either `Controls/PowerLimit` `SetPoint` or
`Power` `PowerControl[0].PowerLimit.LimitInWatts` caps what the server draws.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wattwheel.emulate.redfish import resources as rf
from wattwheel.emulate.redfish.errors import RedfishHTTPError, error_body
from wattwheel.emulate.redfish.metadata import metadata_xml, service_document
from wattwheel.emulate.redfish.source import PowerSource
from wattwheel.emulate.redfish.state import LimitRange, SiteState

Payload = dict[str, Any]
SESSION_TIMEOUT_S = 1800
MAX_SESSIONS = 64  # like a BMC: a client that leaks sessions gets refused, not the service
_PUBLIC_GETS = frozenset({"/redfish", "/redfish/v1/", "/redfish/v1/odata", "/redfish/v1/$metadata"})
_METHODS = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]


@dataclass
class _Resource:
    """What one URI answers to; a None handler means the method is not allowed there."""

    get: Callable[[], Payload] | None = None
    patch: Callable[[Mapping[str, Any]], None] | None = None
    post: Callable[[Mapping[str, Any]], Response] | None = None
    delete: Callable[[], None] | None = None

    @property
    def allow(self) -> str:
        methods = ["GET", "HEAD"] if self.get else []
        methods += [m for m, h in (("PATCH", self.patch), ("POST", self.post)) if h]
        methods += ["DELETE"] if self.delete else []
        return ", ".join(methods)


@dataclass
class _Session:
    session_id: str
    user_name: str
    last_used_s: float = field(default_factory=time.monotonic)


class RedfishService:
    """State and request handling behind the ASGI app."""

    def __init__(
        self,
        state: SiteState,
        *,
        username: str,
        password: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.state = state
        self._username = username
        self._password = password
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sessions: dict[str, _Session] = {}  # token -> session
        self._uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "wattwheel:" + ",".join(state.server_ids)))

    # ------------------------------------------------------------ HTTP entry points

    async def version(self, request: Request) -> Response:
        return _json({"v1": "/redfish/v1/"}, allow="GET, HEAD")

    async def dispatch(self, request: Request) -> Response:
        uri = _normalise(request.url.path)
        try:
            return await self._handle(request, uri)
        except RedfishHTTPError as error:
            headers = {"WWW-Authenticate": 'Basic realm="Redfish"'} if error.status == 401 else {}
            return _json(error_body(error), status=error.status, headers=headers)

    async def _handle(self, request: Request, uri: str) -> Response:
        method = request.method
        if uri == "/redfish/v1/$metadata" and method in ("GET", "HEAD"):
            return Response(metadata_xml(), media_type="application/xml", headers=_odata_headers())
        is_login = method == "POST" and uri == f"{rf.ROOT}/SessionService/Sessions"
        if not (is_login or (method in ("GET", "HEAD") and uri in _PUBLIC_GETS)):
            self._authenticate(request)
        resource = self._resolve(uri)
        if resource is None:
            raise RedfishHTTPError(404, "ResourceMissingAtURI", uri)
        if method in ("GET", "HEAD") and resource.get is not None:
            return _json(resource.get(), allow=resource.allow, head=method == "HEAD")
        if method == "PATCH" and resource.patch is not None and resource.get is not None:
            _check_if_match(request, resource.get())
            resource.patch(await _json_body(request))
            return _json(resource.get(), allow=resource.allow)
        if method == "POST" and resource.post is not None:
            return resource.post(await _json_body(request))
        if method == "DELETE" and resource.delete is not None:
            resource.delete()
            return Response(status_code=204, headers=_odata_headers())
        response = _json(error_body(RedfishHTTPError(405, "OperationNotAllowed")), status=405)
        response.headers["Allow"] = resource.allow
        return response

    # ------------------------------------------------------------ authentication and sessions

    def _authenticate(self, request: Request) -> None:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            session = self._sessions.get(token)
            if session is not None and time.monotonic() - session.last_used_s < SESSION_TIMEOUT_S:
                session.last_used_s = time.monotonic()
                return
            self._sessions.pop(token, None)
            raise RedfishHTTPError(401, "NoValidSession")
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise RedfishHTTPError(401, "NoValidSession") from None
            if self._valid(user, password):
                return
        raise RedfishHTTPError(401, "NoValidSession")

    def _valid(self, user: str, password: str) -> bool:
        user_ok = secrets.compare_digest(user.encode(), self._username.encode())
        return user_ok & secrets.compare_digest(password.encode(), self._password.encode())

    def _login(self, body: Mapping[str, Any]) -> Response:
        for name in ("UserName", "Password"):
            if not isinstance(body.get(name), str):
                raise RedfishHTTPError(400, "PropertyMissing", name)
        if not self._valid(body["UserName"], body["Password"]):
            raise RedfishHTTPError(401, "NoValidSession")
        self._prune_sessions()
        if len(self._sessions) >= MAX_SESSIONS:
            raise RedfishHTTPError(503, "SessionLimitExceeded")
        token = secrets.token_hex(16)
        session = _Session(secrets.token_hex(8), body["UserName"])
        self._sessions[token] = session
        payload = rf.session(session.session_id, session.user_name)
        headers = {"X-Auth-Token": token, "Location": payload["@odata.id"]}
        return _json(payload, status=201, headers=headers)

    def _prune_sessions(self) -> None:
        now_s = time.monotonic()
        expired = [
            t for t, s in self._sessions.items() if now_s - s.last_used_s >= SESSION_TIMEOUT_S
        ]
        for token in expired:
            del self._sessions[token]

    def _session_resource(self, session_id: str) -> _Resource | None:
        token = next((t for t, s in self._sessions.items() if s.session_id == session_id), None)
        if token is None:
            return None
        user_name = self._sessions[token].user_name
        return _Resource(
            get=lambda: rf.session(session_id, user_name), delete=lambda: self._logout(token)
        )

    def _logout(self, token: str) -> None:
        self._sessions.pop(token, None)

    # ------------------------------------------------------------ routing

    def _resolve(self, uri: str) -> _Resource | None:
        if uri == "/redfish/v1/":
            return _Resource(get=lambda: rf.service_root(self._uuid))
        if uri == "/redfish/v1/odata":
            return _Resource(get=service_document)
        parts = uri.removeprefix(f"{rf.ROOT}/").split("/")
        match parts:
            case ["Chassis"]:
                members = [rf.chassis_uri(s) for s in self.state.server_ids]
                return _Resource(
                    get=lambda: rf.collection(uri, "ChassisCollection", "Chassis", members)
                )
            case ["Chassis", server_id, *rest] if server_id in self.state:
                return self._chassis_resource(server_id, rest)
            case ["PowerEquipment", *rest]:
                return self._power_equipment_resource(uri, rest)
            case ["SessionService"]:
                return _Resource(get=lambda: rf.session_service(SESSION_TIMEOUT_S))
            case ["SessionService", "Sessions"]:
                return _Resource(get=self._sessions_collection, post=self._login)
            case ["SessionService", "Sessions", session_id]:
                return self._session_resource(session_id)
        return None

    def _sessions_collection(self) -> Payload:
        members = [
            f"{rf.ROOT}/SessionService/Sessions/{s.session_id}" for s in self._sessions.values()
        ]
        uri = f"{rf.ROOT}/SessionService/Sessions"
        return rf.collection(uri, "SessionCollection", "Sessions", members)

    def _chassis_resource(self, server_id: str, rest: list[str]) -> _Resource | None:
        def view(build: Callable[..., Payload], *extra: Any) -> Callable[[], Payload]:
            return lambda: build(self.state.snapshot(server_id), *extra)

        match rest:
            case []:
                return _Resource(get=view(rf.chassis))
            case ["Power"]:
                return _Resource(
                    get=view(rf.power), patch=lambda b: self._patch_power(server_id, b)
                )
            case ["PowerSubsystem"]:
                return _Resource(get=view(rf.power_subsystem))
            case ["Sensors"]:
                return _Resource(get=view(rf.sensors))
            case ["Sensors", rf.SENSOR_ID]:
                reading_time = self._clock().isoformat(timespec="seconds")
                return _Resource(get=view(rf.total_power_sensor, reading_time))
            case ["EnvironmentMetrics"]:
                return _Resource(get=view(rf.environment_metrics))
            case ["Controls"]:
                return _Resource(get=view(rf.controls))
            case ["Controls", rf.CONTROL_ID]:
                return _Resource(
                    get=view(rf.power_limit_control),
                    patch=lambda b: self._patch_control(server_id, b),
                )
        return None

    def _power_equipment_resource(self, uri: str, rest: list[str]) -> _Resource | None:
        racks = self.state.racks
        match rest:
            case []:
                return _Resource(get=rf.power_equipment)
            case ["RackPDUs"]:
                pdus = [rf.rack_pdu_uri(r) for r in racks]
                kind = "PowerDistributionCollection"
                return _Resource(get=lambda: rf.collection(uri, kind, "Rack PDUs", pdus))
            case ["RackPDUs", rack_id] if rack_id in racks:
                return _Resource(get=lambda: rf.rack_pdu(rack_id))
            case ["RackPDUs", rack_id, "Outlets"] if rack_id in racks:
                members = [rf.outlet_uri(rack_id, s) for s in racks[rack_id]]
                return _Resource(
                    get=lambda: rf.collection(uri, "OutletCollection", "Outlets", members)
                )
            case ["RackPDUs", rack_id, "Outlets", server_id] if server_id in racks.get(rack_id, ()):
                return _Resource(get=lambda: rf.outlet(self.state.snapshot(server_id)))
            case ["RackPDUs", rack_id, "Outlets", server_id, "Actions", rf.OUTLET_ACTION] if (
                server_id in racks.get(rack_id, ())
            ):
                return _Resource(post=lambda b: self._outlet_power_control(server_id, b))
        return None

    # ------------------------------------------------------------ writes

    def _patch_control(self, server_id: str, body: Mapping[str, Any]) -> None:
        _only_writable(body, {"SetPoint"}, rf.power_limit_control(self.state.snapshot(server_id)))
        if "SetPoint" not in body:
            raise RedfishHTTPError(400, "PropertyMissing", "SetPoint")
        self.state.set_limit(server_id, self._checked_limit(body["SetPoint"], "SetPoint"))

    def _patch_power(self, server_id: str, body: Mapping[str, Any]) -> None:
        _only_writable(body, {"PowerControl"}, rf.power(self.state.snapshot(server_id)))
        members = body.get("PowerControl")
        if not isinstance(members, list) or len(members) != 1:
            raise RedfishHTTPError(
                400, "PropertyValueTypeError", json.dumps(members), "PowerControl"
            )
        member = members[0]
        if not isinstance(member, Mapping):
            raise RedfishHTTPError(
                400, "PropertyValueTypeError", json.dumps(member), "PowerControl/0"
            )
        if not member:
            return  # `{}` leaves the member unchanged (DSP0266 PATCH on arrays)
        limit = member.get("PowerLimit")
        if set(member) != {"PowerLimit"} or not isinstance(limit, Mapping):
            extra = sorted(set(member) - {"PowerLimit"}) or ["PowerLimit"]
            raise RedfishHTTPError(400, "PropertyNotWritable", f"PowerControl/0/{extra[0]}")
        if set(limit) != {"LimitInWatts"}:
            raise RedfishHTTPError(400, "PropertyNotWritable", "PowerControl/0/PowerLimit")
        value = limit["LimitInWatts"]
        watts = None if value is None else self._checked_limit(value, "LimitInWatts")
        self.state.set_limit(server_id, watts)

    def _checked_limit(self, value: object, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RedfishHTTPError(400, "PropertyValueTypeError", json.dumps(value), name)
        limits: LimitRange = self.state.limits
        if not limits.min_w <= value <= limits.max_w:
            raise RedfishHTTPError(400, "PropertyValueOutOfRange", value, name)
        return float(value)

    def _outlet_power_control(self, server_id: str, body: Mapping[str, Any]) -> Response:
        state = body.get("PowerState")
        if state is None:
            raise RedfishHTTPError(400, "PropertyMissing", "PowerState")
        if state not in ("On", "Off"):
            raise RedfishHTTPError(
                400, "ActionParameterValueNotInList", state, "PowerState", rf.OUTLET_ACTION
            )
        self.state.set_outlet(server_id, state == "On")
        return Response(status_code=204, headers=_odata_headers())


# ---------------------------------------------------------------- helpers


def _normalise(path: str) -> str:
    if path in ("/redfish/v1", "/redfish/v1/"):
        return "/redfish/v1/"
    return path.rstrip("/") or "/"


def _odata_headers() -> dict[str, str]:
    return {"OData-Version": "4.0", "Cache-Control": "no-cache"}


def _etag(payload: Payload) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:20]}"'


def _json(
    payload: Payload,
    *,
    status: int = 200,
    allow: str | None = None,
    headers: Mapping[str, str] | None = None,
    head: bool = False,
) -> Response:
    all_headers = _odata_headers() | dict(headers or {})
    if allow is not None:
        all_headers["Allow"] = allow
    if status == 200 and "@odata.id" in payload:
        all_headers["ETag"] = _etag(payload)
    content = b"" if head else json.dumps(payload).encode()
    return Response(content, status, all_headers, media_type="application/json; charset=utf-8")


async def _json_body(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise RedfishHTTPError(400, "MalformedJSON") from None
    if not isinstance(body, dict):
        raise RedfishHTTPError(400, "MalformedJSON")
    return body


def _check_if_match(request: Request, current: Payload) -> None:
    expected = request.headers.get("If-Match")
    if expected not in (None, "*") and expected != _etag(current):
        raise RedfishHTTPError(412, "PreconditionFailed")


def _only_writable(body: Mapping[str, Any], writable: set[str], current: Payload) -> None:
    """Reject the whole PATCH if it names a property that cannot be written (atomic update)."""
    for name in body:
        if name in writable or name.startswith("@odata."):
            continue
        if name in current:
            raise RedfishHTTPError(400, "PropertyNotWritable", name)
        raise RedfishHTTPError(400, "PropertyUnknown", name)


def build_redfish_app(
    servers: Sequence[str],
    source: PowerSource,
    *,
    username: str = "admin",
    password: str = "wattwheel",
    limits: LimitRange | None = None,
    racks: Mapping[str, Sequence[str]] | None = None,
    cap_delay_s: float = 0.0,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    """An ASGI app serving a Redfish service for `servers` whose demand comes from `source`.

    Consumed power = min(demand, power limit) in watts; limits accepted within `limits`.
    `racks` (rack id -> server ids) gives each rack its own PDU; default: one PDU "1".
    A written limit binds `cap_delay_s` seconds later (reported as `CorrectionInMs`).
    `app.state.redfish` is the `RedfishService` (its `.state` is the `SiteState`).
    """
    service = RedfishService(
        SiteState(servers, source, limits or LimitRange(), racks, cap_delay_s),
        username=username,
        password=password,
        clock=clock,
    )
    app = Starlette(
        routes=[
            Route("/redfish", service.version, methods=["GET", "HEAD"]),
            Route("/redfish/{path:path}", service.dispatch, methods=_METHODS),
        ]
    )
    app.state.redfish = service
    return app
