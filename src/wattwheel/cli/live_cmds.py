"""CLI commands (registered on wattwheel.cli.app)."""

from __future__ import annotations

from wattwheel.cli import app as _app  # noqa: F401
