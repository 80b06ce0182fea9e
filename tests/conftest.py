"""Shared fixtures. Keep minimal: import fixtures from their modules."""

from services import mosquitto, persistent_mosquitto, snmpsim_factory  # noqa: F401
