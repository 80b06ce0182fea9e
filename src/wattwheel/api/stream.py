"""Server-sent events at ``/api/v1/stream``: a ``snapshot`` first, then every state change.

Event names: ``snapshot``, ``domains``, ``racks``, ``decisions``, ``event``, ``mode``; the data
is JSON. A comment line goes out every ``keepalive_s`` so proxies keep the connection open and a
closed client is noticed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from wattwheel.api.auth import require_viewer
from wattwheel.api.context import ApiContext
from wattwheel.runtime.state import jsonable


def sse_message(event: str, data: Any) -> str:
    """One SSE message: ``event:`` line, single-line JSON ``data:``, blank line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def snapshot(ctx: ApiContext) -> dict[str, Any]:
    state = ctx.state
    return {
        "mode": state.mode,
        "policy": state.policy,
        "domains": [jsonable(s) for s in state.domains()],
        "history": {d: [jsonable(s) for s in state.history(d, 300)] for d in state.domain_ids},
        "racks": [jsonable(r) for r in state.racks()],
        "decisions": [jsonable(d) for d in state.recent_decisions(50)],
        "events": [jsonable(e) for e in state.recent_events(50)],
    }


async def _events(ctx: ApiContext, request: Request, keepalive_s: float) -> AsyncIterator[str]:
    sub = ctx.state.subscribe()
    try:
        yield "retry: 2000\n\n"
        yield sse_message("snapshot", snapshot(ctx))
        while not await request.is_disconnected():
            try:
                kind, payload = await asyncio.wait_for(sub.queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield sse_message(kind, payload)
    finally:
        ctx.state.unsubscribe(sub)


def build_stream_router(ctx: ApiContext, keepalive_s: float = 15.0) -> APIRouter:
    r = APIRouter(tags=["stream"], dependencies=[Depends(require_viewer)])

    @r.get("/stream", summary="Live updates (text/event-stream)", response_class=StreamingResponse)
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _events(ctx, request, keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return r
