"""Errors that name what is wrong, where, and why."""

from __future__ import annotations


class WattwheelError(Exception):
    """Base class for every error wattwheel raises on purpose."""


class ConfigError(WattwheelError):
    """A site file or option is invalid. Names the key, the value and the rule."""

    def __init__(self, key: str, value: object, why: str) -> None:
        self.key = key
        self.value = value
        self.why = why
        super().__init__(f"{key} = {value!r}: {why}")


class TraceError(WattwheelError):
    """A power trace is unusable (NaN, negative, duplicate or out-of-order timestamps...)."""
