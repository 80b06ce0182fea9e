"""FastAPI app, routes, auth, Prometheus metrics and the dashboard."""

from __future__ import annotations

from wattwheel.api.app import API_PREFIX, create_app
from wattwheel.api.auth import Principal, parse_tokens, tokens_from_env

__all__ = [
    "API_PREFIX",
    "Principal",
    "create_app",
    "parse_tokens",
    "tokens_from_env",
]
