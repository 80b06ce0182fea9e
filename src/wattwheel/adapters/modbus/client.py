"""Thin Modbus TCP client for a SunSpec flywheel controller (pymodbus).

Finds the SunSpec map by probing the usual base addresses for "SunS", then walks the model chain
(``ID``, ``L``, skip ``L``) to locate models 124, 802 and 713: no offset is hard-coded. Reads and
writes are bounded by ``timeout_s``. A controller that stops answering is logged once at WARNING
(then at DEBUG until it recovers) and yields a stale :class:`FlywheelReading`, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from wattwheel.adapters.modbus.codec import (
    END_MODEL_ID,
    SUNSPEC_BASE_ADDRESS,
    ModelLocation,
    SunSpecValueError,
    is_sunspec_marker,
)
from wattwheel.adapters.modbus.converter_map import (
    CONVERTER,
    ConverterParams,
    decode_converter,
    encode_converter_params,
)
from wattwheel.adapters.modbus.flywheel_map import (
    BATTERY_BASE,
    STORAGE_CAPACITY,
    STORAGE_CONTROL,
    SetpointContext,
    decode_status,
    encode_setpoint,
)
from wattwheel.adapters.modbus.link import FlywheelReading
from wattwheel.adapters.modbus.models import SunSpecModelError
from wattwheel.domain.converter import ConverterSpec

log = logging.getLogger(__name__)
# pymodbus logs every failed request at ERROR/WARNING, which would defeat "log a failing device
# once". Quiet it unless the application configured the "pymodbus" logger itself.
_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)

# Where SunSpec devices put the map (the spec allows these three).
BASE_CANDIDATES = (SUNSPEC_BASE_ADDRESS, 0, 50000)
_MAX_MODELS = 64  # a chain longer than this is a corrupt map, not a device
_MAX_READ = 125  # Modbus limit of registers per read
_FAULTS = (ModbusException, OSError, TimeoutError, SunSpecValueError, SunSpecModelError)


class SunSpecDiscoveryError(RuntimeError):
    """The device has no usable SunSpec map (no marker, or a required model is missing)."""


class SunSpecFlywheelClient:
    """A :class:`~wattwheel.adapters.modbus.link.FlywheelLink` over Modbus TCP."""

    def __init__(
        self,
        host: str,
        port: int = 502,
        *,
        unit_id: int = 1,
        timeout_s: float = 1.0,
        revert_s: int = 0,
        clock: Callable[[], float] = time.monotonic,
        base_candidates: Sequence[int] = BASE_CANDIDATES,
    ) -> None:
        self.name = f"modbus://{host}:{port}/{unit_id}"
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        self._unit_id = unit_id
        self._timeout_s = timeout_s
        self._revert_s = revert_s
        self._clock = clock
        self._base_candidates = tuple(base_candidates)
        self.models: dict[int, ModelLocation] = {}
        self._setpoint: SetpointContext | None = None
        self._last: FlywheelReading = FlywheelReading(None, True, None)
        self._failing = False

    # --- wire helpers ----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        ok = await asyncio.wait_for(self._client.connect(), self._timeout_s * 2)
        if not ok:
            raise ConnectionError(f"{self.name}: cannot connect")

    async def _read(self, address: int, count: int) -> list[int]:
        registers: list[int] = []
        while count > 0:
            chunk = min(count, _MAX_READ)
            reply = await asyncio.wait_for(
                self._client.read_holding_registers(address, count=chunk, device_id=self._unit_id),
                self._timeout_s * 2,
            )
            if reply.isError():
                raise ModbusException(f"{self.name}: read {address}+{chunk} refused: {reply}")
            registers.extend(reply.registers)
            address, count = address + chunk, count - chunk
        return registers

    async def _write(self, address: int, values: list[int]) -> None:
        reply = await asyncio.wait_for(
            self._client.write_registers(address, values, device_id=self._unit_id),
            self._timeout_s * 2,
        )
        if reply.isError():
            raise ModbusException(f"{self.name}: write {address} {values} refused: {reply}")

    async def _read_block(self, model_id: int) -> list[int]:
        loc = self.models[model_id]
        return await self._read(loc.address, loc.length + 2)

    # --- discovery -------------------------------------------------------------------------

    async def _find_base(self) -> int:
        for base in self._base_candidates:
            try:
                if is_sunspec_marker(await self._read(base, 2)):
                    return base
            except ModbusException:
                continue  # an exception reply: nothing mapped there, try the next candidate
        raise SunSpecDiscoveryError(
            f"{self.name}: no SunSpec marker at any of {list(self._base_candidates)}"
        )

    async def discover(self) -> dict[int, ModelLocation]:
        """Locate every model by walking the chain from the SunSpec marker."""
        await self._ensure_connected()
        address = await self._find_base() + 2
        models: dict[int, ModelLocation] = {}
        for _ in range(_MAX_MODELS):
            model_id, length = await self._read(address, 2)
            if model_id == END_MODEL_ID:
                break
            models.setdefault(model_id, ModelLocation(model_id, address, length))
            address += 2 + length
        else:
            raise SunSpecDiscoveryError(f"{self.name}: SunSpec chain has no end model")
        missing = {STORAGE_CONTROL, BATTERY_BASE} - set(models)
        if missing:
            raise SunSpecDiscoveryError(f"{self.name}: missing SunSpec model(s) {sorted(missing)}")
        self.models = models
        self._setpoint = SetpointContext.from_block(
            models[STORAGE_CONTROL], await self._read_block(STORAGE_CONTROL)
        )
        return models

    # --- FlywheelLink ----------------------------------------------------------------------

    def _fault(self, what: str, exc: BaseException) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(level, "%s: %s failed: %s", self.name, what, exc or type(exc).__name__)
        self._failing = True
        # Reconnect and rediscover next time: the device may have restarted with a new map.
        self.models, self._setpoint = {}, None
        self._client.close()

    def _recovered(self) -> None:
        if self._failing:
            log.info("%s: flywheel controller answers again", self.name)
            self._failing = False

    async def _read_status(self) -> FlywheelReading:
        if not self.models:
            await self.discover()
        blocks = {BATTERY_BASE: await self._read_block(BATTERY_BASE)}
        for model_id in (STORAGE_CAPACITY, STORAGE_CONTROL):
            if model_id in self.models:
                blocks[model_id] = await self._read_block(model_id)
        return FlywheelReading(decode_status(blocks), False, self._clock())

    async def read(self) -> FlywheelReading:
        """The bank's status; on any fault the last good status marked stale."""
        try:
            self._last = await self._read_status()
        except (*_FAULTS, SunSpecDiscoveryError) as exc:
            self._fault("read", exc)
            return FlywheelReading(self._last.status, True, self._last.read_at_s)
        self._recovered()
        return self._last

    async def write_setpoint(self, power_w: float) -> bool:
        """Command ``power_w`` (+ discharge / − charge), clamped to ±WChaMax; False on a fault."""
        if not math.isfinite(power_w):
            log.warning("%s: refusing non-finite setpoint %r W", self.name, power_w)
            return False
        try:
            if self._setpoint is None:
                await self.discover()
            assert self._setpoint is not None
            limit = self._setpoint.w_cha_max
            clamped = min(max(power_w, -limit), limit)
            for address, registers in encode_setpoint(clamped, self._setpoint, self._revert_s):
                await self._write(address, registers)
        except (*_FAULTS, SunSpecDiscoveryError) as exc:
            self._fault("setpoint write", exc)
            return False
        self._recovered()
        return True

    # --- the converter's own loop (vendor model 64220) ----------------------------------

    async def read_converter(self) -> tuple[ConverterSpec, ConverterParams] | None:
        """The converter loop's nameplate and parameters; None when the controller publishes
        no model 64220 or does not answer (logged as any read fault)."""
        try:
            if not self.models:
                await self.discover()
            if CONVERTER not in self.models:
                return None
            out = decode_converter(await self._read_block(CONVERTER))
        except (*_FAULTS, SunSpecDiscoveryError) as exc:
            self._fault("converter read", exc)
            return None
        self._recovered()
        return out

    async def write_converter(self, params: ConverterParams) -> bool:
        """Set the converter loop's parameters (``Ena`` written last); False on a fault or
        when the controller has no model 64220. Invalid parameters raise
        :class:`SunSpecValueError` naming the point (a caller's bug, not a device fault)."""
        try:
            if not self.models:
                await self.discover()
            if CONVERTER not in self.models:
                log.warning("%s: no converter model 64220: parameters not written", self.name)
                return False
            block = await self._read_block(CONVERTER)
        except (*_FAULTS, SunSpecDiscoveryError) as exc:
            self._fault("converter read", exc)
            return False
        writes = encode_converter_params(params, self.models[CONVERTER], block)
        try:
            for address, registers in writes:
                await self._write(address, registers)
        except (*_FAULTS, SunSpecDiscoveryError) as exc:
            self._fault("converter write", exc)
            return False
        self._recovered()
        return True

    async def close(self) -> None:
        """Close the TCP connection."""
        self._client.close()
