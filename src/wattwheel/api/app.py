"""The FastAPI app factory: ``create_app(state, store, overrides, tokens)``.

Routes live under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/v1/docs``),
Prometheus metrics at ``/metrics``, the dashboard at ``/`` (static files, no build step). Every
request passes :class:`~wattwheel.api.gate.RequestGate` first: tokens and body size are checked
before a route reads the body, with the same rules for the API, its OpenAPI docs and ``/metrics``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import wattwheel
from wattwheel.adapters.store.base import Store
from wattwheel.api.auth import AuthConfig, Principal, require_viewer
from wattwheel.api.context import ApiContext
from wattwheel.api.desk import Desk, LocalDesk
from wattwheel.api.gate import DEFAULT_MAX_BODY_BYTES, RequestGate
from wattwheel.api.metrics import StateCollector, make_registry, render
from wattwheel.api.overrides import build_override_router
from wattwheel.api.pins import PinGuard
from wattwheel.api.routes import build_read_router
from wattwheel.api.stream import build_stream_router
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.state import LiveState, Overrides

API_PREFIX = "/api/v1"
STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(
    state: LiveState,
    store: Store,
    overrides: Overrides,
    tokens: Mapping[str, Principal],
    *,
    anonymous_read: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    site_name: str = "",
    keepalive_s: float = 15.0,
    inventory: Inventory | None = None,
    desk: Desk | None = None,
    store_health: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        state / overrides: shared with the runtime loop (it writes state, reads overrides).
        store: the audit log and history (a ``BufferedStore`` in production).
        tokens: bearer token -> :class:`Principal` (see ``auth.parse_tokens``).
        anonymous_read: allow reads without a token (writes always need an operator token).
            Reads are the ``/api/v1`` routes, the OpenAPI document and docs, and ``/metrics``
            (Prometheus sends a bearer token with ``authorization: {credentials: ...}``).
        max_body_bytes: a longer request body is refused with 413 before it is read.
        clock: epoch seconds, for override timestamps and expiry.
        inventory: the servers the runtime controls; with it a cap pin below the critical load
            of its rack or domain is refused (409), see :mod:`.pins`.
        desk: applies override commands (default: a :class:`LocalDesk` on this app's state,
            overrides and store; ``serve``'s API process forwards them to the controller).
        store_health: the store's health as reported from elsewhere (default: read ``store``).
    """
    pins = PinGuard(inventory, state) if inventory is not None else None
    ctx = ApiContext(state, store, overrides, clock, site_name, pins, store_health)
    app = FastAPI(
        title="wattwheel",
        version=wattwheel.__version__ if hasattr(wattwheel, "__version__") else "0",
        description="Live power management: status, audit log, operator overrides, live stream.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    auth = AuthConfig(dict(tokens), anonymous_read)
    app.state.auth = auth
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.ctx = ctx
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(build_read_router(ctx))
    api.include_router(build_override_router(desk or LocalDesk(ctx)))
    api.include_router(build_stream_router(ctx, keepalive_s))
    app.include_router(api)
    _mount_metrics(app, ctx)
    _mount_dashboard(app)
    app.add_middleware(RequestGate, auth=auth, api_prefix=API_PREFIX, max_body_bytes=max_body_bytes)
    return app


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with the validation errors, made JSON-safe: the offending input is echoed, and a
    NaN or infinity in it (which ``json`` parses but cannot write) must not turn a 422 into a 500.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": _finite_json(jsonable_encoder(errors))}, status_code=422)


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


def _mount_metrics(app: FastAPI, ctx: ApiContext) -> None:
    registry = make_registry(StateCollector(ctx.state, ctx.overrides, ctx.store_health, ctx.clock))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_viewer)])
    def metrics() -> Response:
        return Response(render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")


def _mount_dashboard(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
