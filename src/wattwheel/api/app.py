"""The FastAPI app factory: ``create_app(state, store, overrides, tokens)``.

Routes live under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/v1/docs``),
Prometheus metrics at ``/metrics``, the dashboard at ``/`` (static files, no build step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import wattwheel
from wattwheel.adapters.store.base import Store
from wattwheel.api.auth import AuthConfig, Principal, require_viewer
from wattwheel.api.context import ApiContext
from wattwheel.api.metrics import StateCollector, make_registry, render
from wattwheel.api.overrides import build_override_router
from wattwheel.api.routes import build_read_router
from wattwheel.api.stream import build_stream_router
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
    metrics_need_token: bool = False,
    clock: Callable[[], float] = time.time,
    site_name: str = "",
    keepalive_s: float = 15.0,
) -> FastAPI:
    """Build the app.

    Args:
        state / overrides: shared with the runtime loop (it writes state, reads overrides).
        store: the audit log and history (a ``BufferedStore`` in production).
        tokens: bearer token -> :class:`Principal` (see ``auth.parse_tokens``).
        anonymous_read: allow reads without a token (writes always need an operator token).
        metrics_need_token: protect ``/metrics`` like the other reads (Prometheus can send a
            bearer token); open by default, as scrapers usually sit on a private network.
        clock: epoch seconds, for override timestamps and expiry.
    """
    ctx = ApiContext(state, store, overrides, clock, site_name)
    app = FastAPI(
        title="wattwheel",
        version=wattwheel.__version__ if hasattr(wattwheel, "__version__") else "0",
        description="Live power management: status, audit log, operator overrides, live stream.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.auth = AuthConfig(dict(tokens), anonymous_read)
    app.state.ctx = ctx
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(build_read_router(ctx))
    api.include_router(build_override_router(ctx))
    api.include_router(build_stream_router(ctx, keepalive_s))
    app.include_router(api)
    _mount_metrics(app, ctx, metrics_need_token)
    _mount_dashboard(app)
    return app


def _mount_metrics(app: FastAPI, ctx: ApiContext, need_token: bool) -> None:
    registry = make_registry(StateCollector(ctx.state, ctx.overrides, ctx.store_health, ctx.clock))
    deps = [Depends(require_viewer)] if need_token else []

    @app.get("/metrics", include_in_schema=False, dependencies=deps)
    def metrics() -> Response:
        return Response(render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")


def _mount_dashboard(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
