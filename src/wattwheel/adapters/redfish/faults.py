"""Log a failing device once, not once per tick (STYLE: Home Assistant's ModbusHub habit)."""

from __future__ import annotations

import logging

DEVICE = "device"  # the key for faults of the whole device (unreachable, timing out)


class FaultLog:
    """Per fault key: first failure at WARNING, repeats at DEBUG, recovery at INFO.

    Keys separate a device that is down (one key, `DEVICE`) from one resource of a working
    device that keeps failing (its URI), so neither's log hides or floods the other.
    """

    def __init__(self, logger: logging.Logger, device: str) -> None:
        self._logger = logger
        self._device = device
        self._failures: dict[str, int] = {}

    @property
    def failing(self) -> bool:
        """True while any key is failing."""
        return bool(self._failures)

    def failed(self, key: str, what: str, error: BaseException | str) -> None:
        """Record one failed exchange about `key`."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        level = logging.DEBUG if count else logging.WARNING
        self._logger.log(
            level, "Redfish device %s: %s failed: %s", self._device, what, _describe(error)
        )

    def succeeded(self, *keys: str) -> None:
        """Record a good exchange about `keys`; logs each recovery once."""
        for key in keys:
            count = self._failures.pop(key, 0)
            if count:
                self._logger.info(
                    "Redfish device %s: %s answers again after %d failures",
                    self._device,
                    key,
                    count,
                )


def _describe(error: BaseException | str) -> str:
    """Exception type and text: httpx timeouts have an empty str(), so name the type too."""
    if isinstance(error, str):
        return error
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
