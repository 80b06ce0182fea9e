"""Bearer-token auth with two roles: ``viewer`` reads, ``operator`` reads and writes.

Tokens come from configuration or the environment (``WATTWHEEL_TOKENS``, see
:func:`parse_tokens`). Writes always need an operator token. Reads need a token unless the app is
created with ``anonymous_read=True``. Read routes also accept a *viewer* token as
``?access_token=`` (for clients that cannot set headers); an operator token is never taken from a
URL, and write routes never read the query. :mod:`.gate` applies the same rules before a request's
body is read; the dependencies here declare each route's role and check it again.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
ENV_VAR = "WATTWHEEL_TOKENS"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token owner's name and role (``anonymous`` for open reads)."""

    name: str
    role: Role | Literal["anonymous"]


def parse_tokens(spec: str) -> dict[str, Principal]:
    """Parse ``"name:role:token,name:role:token"`` (whitespace ignored) into token -> Principal.

    Raises ValueError naming the bad entry (unknown role, missing part, short or duplicate token).
    """
    tokens: dict[str, Principal] = {}
    for n, entry in enumerate(e.strip() for e in spec.split(",")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{ENV_VAR} entry {n + 1} {entry!r}: expected name:role:token")
        name, role, token = parts
        if role not in ROLES:
            raise ValueError(f"{ENV_VAR} entry {n + 1} ({name}): role {role!r} not in {ROLES}")
        if len(token) < 8:
            raise ValueError(f"{ENV_VAR} entry {n + 1} ({name}): token shorter than 8 characters")
        if token in tokens:
            raise ValueError(f"{ENV_VAR} entry {n + 1} ({name}): token already used")
        tokens[token] = Principal(name, role)
    return tokens


def tokens_from_env(environ: Mapping[str, str]) -> dict[str, Principal]:
    """Tokens from ``WATTWHEEL_TOKENS`` in ``environ`` (empty when unset)."""
    return parse_tokens(environ.get(ENV_VAR, ""))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def open_bind_refusal(
    host: str, tokens: Mapping[str, Principal], insecure_read: bool
) -> str | None:
    """Why ``serve`` must not start with these settings (None: it may).

    Without tokens every read is anonymous; that is only acceptable on a loopback address, or when
    the operator says so with ``--insecure-read``.
    """
    if tokens or insecure_read or is_loopback(host):
        return None
    return (
        f"--host {host} is not a loopback address and no API tokens are configured, so anyone "
        f"who can reach it could read the site's live state: give --token-file or {ENV_VAR}, "
        "or pass --insecure-read to serve open reads anyway"
    )


def _bearer(request: Request, allow_query: bool) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token") if allow_query else None


def lookup_token(tokens: Mapping[str, Principal], presented: str) -> Principal | None:
    # Compare against every token in constant time so timing does not reveal a prefix match.
    found = None
    for token, principal in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = principal
    return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class AuthConfig:
    """Stored on ``app.state.auth`` by ``create_app``; read by the dependencies below."""

    tokens: Mapping[str, Principal]
    anonymous_read: bool = False


def _config(request: Request) -> AuthConfig:
    cfg = getattr(request.app.state, "auth", None)
    if not isinstance(cfg, AuthConfig):
        raise RuntimeError("app.state.auth is not configured (use wattwheel.api.create_app)")
    return cfg


def require_viewer(request: Request) -> Principal:
    """Any valid token; no token only when anonymous reads are enabled."""
    cfg = _config(request)
    presented = _bearer(request, allow_query=True)
    if presented is None:
        if cfg.anonymous_read:
            return Principal("anonymous", "anonymous")
        raise _unauthorized("a bearer token is required")
    principal = lookup_token(cfg.tokens, presented)
    if principal is None:
        raise _unauthorized("unknown token")
    if principal.role == "operator" and _bearer(request, allow_query=False) is None:
        raise _unauthorized(
            "operator tokens are not accepted in URLs (they end up in logs): "
            "send them in the Authorization header"
        )
    return principal


def require_operator(request: Request) -> Principal:
    """An operator token in the Authorization header (never anonymous, never in the URL)."""
    cfg = _config(request)
    presented = _bearer(request, allow_query=False)
    if presented is None:
        raise _unauthorized("an operator bearer token is required to change anything")
    principal = lookup_token(cfg.tokens, presented)
    if principal is None:
        raise _unauthorized("unknown token")
    if principal.role != "operator":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"{principal.name} is a {principal.role}, not an operator"
        )
    return principal


Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
