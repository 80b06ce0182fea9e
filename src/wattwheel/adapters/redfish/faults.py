"""Log a failing device once, not once per tick (STYLE: Home Assistant's ModbusHub habit)."""

from __future__ import annotations

import logging


class FaultLog:
    """First failure at WARNING, repeats at DEBUG, recovery at INFO; counts failures."""

    def __init__(self, logger: logging.Logger, device: str) -> None:
        self._logger = logger
        self._device = device
        self.failing = False
        self.failures = 0

    def failed(self, what: str, error: BaseException | str) -> None:
        """Record one failed exchange with the device."""
        self.failures += 1
        level = logging.DEBUG if self.failing else logging.WARNING
        self._logger.log(
            level, "Redfish device %s: %s failed: %s", self._device, what, _describe(error)
        )
        self.failing = True

    def succeeded(self) -> None:
        """Record a good exchange; logs the recovery once."""
        if self.failing:
            self._logger.info(
                "Redfish device %s answers again after %d failures", self._device, self.failures
            )
        self.failing = False
        self.failures = 0


def _describe(error: BaseException | str) -> str:
    """Exception type and text: httpx timeouts have an empty str(), so name the type too."""
    if isinstance(error, str):
        return error
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
