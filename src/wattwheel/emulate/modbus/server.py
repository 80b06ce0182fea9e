"""A SunSpec flywheel controller served over Modbus TCP (pymodbus server).

The holding registers from ``base_address`` are the SunSpec map of one emulated flywheel bank
(models 1, 124, 802, 713; see :mod:`wattwheel.adapters.modbus.flywheel_map`). Every tick applies
the last setpoint written to model 124 through the flywheel physics for the elapsed time, then
refreshes the read-only registers; the writable ones keep what the client wrote. Writes to
read-only registers are refused with ILLEGAL_ADDRESS, as a real controller does. A setpoint not
renewed within ``InOutWRte_RvrtTms`` seconds (when non-zero) reverts to hold: the fail-safe KES
float when the controller that commanded it has gone.

With a ``write_log``, every accepted write is recorded at the moment the emulated controller
applies it: wall time, unit, address, whether it is a setpoint (model 124), and the client's
TCP address (``host:port``), so a benchmark can tell which controller process commanded a bank
and when (``wattwheel emulate --write-log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from wattwheel.adapters.modbus.codec import (
    SUNSPEC_BASE_ADDRESS,
    ModelLocation,
    decode_raw,
    encode_raw,
    walk_models,
)
from wattwheel.adapters.modbus.converter_map import CONVERTER, ConverterParams, decode_converter
from wattwheel.adapters.modbus.flywheel_map import (
    STORAGE_CONTROL,
    build_flywheel_image,
    carry_writable,
    decode_setpoint,
)
from wattwheel.adapters.modbus.models import load_layout
from wattwheel.domain import converter
from wattwheel.domain.converter import ConverterSpec, ConverterState
from wattwheel.emulate.modbus.bank import FlywheelBank, FlywheelBankConfig

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_WRITE_CODES = {6, 16, 23}
#: The client (``host:port``) whose request is being handled (set per request task).
_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("modbus_peer", default="?")

WriteLog = Callable[[dict[str, object]], None]
"""Called with one record per accepted write (see :class:`JsonLinesWriteLog`)."""


class JsonLinesWriteLog:
    """Appends each write record as one JSON line to ``path`` (flushed per line, so a reader
    sees it at once and nothing is lost when the emulator is killed)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def __call__(self, record: dict[str, object]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


class _PeerHandler(ServerRequestHandler):
    """pymodbus' per-connection handler, with two changes: the request's action is told who
    the client is (noted when data arrives: a request handled after its connection closed still
    has it), and every complete request in the receive buffer is answered, in order. (pymodbus
    3.16 decodes one frame per arrival and leaves a second one, sent by a client that timed out
    and asked again, in the buffer until more data comes: the answers then lag one behind.)"""

    peer = "?"
    _queue: asyncio.Queue[tuple[Any, Any]] | None = None
    _worker: asyncio.Task[None] | None = None

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        if self.peer == "?" and self.transport is not None:
            name = self.transport.get_extra_info("peername")
            self.peer = f"{name[0]}:{name[1]}" if name else "?"
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.ensure_future(self._answer_in_order(self._queue))
        used = 0
        while used < len(data):
            try:
                n = int(TransactionManager.callback_data(self, data[used:], addr))
            except ModbusIOException:
                return int(super().callback_data(data[used:], addr)) + used
            if n <= 0:
                break
            used += n
            if self.last_pdu:
                self._queue.put_nowait((self.last_pdu, self.last_addr))
        return used

    async def _answer_in_order(self, queue: asyncio.Queue[tuple[Any, Any]]) -> None:
        while True:
            pdu, addr = await queue.get()
            self.last_pdu, self.last_addr = pdu, addr
            token = _PEER.set(self.peer)
            try:
                await self.handle_request()  # type: ignore[no-untyped-call]
            except Exception:
                log.exception("flywheel emulator: request failed")
            finally:
                _PEER.reset(token)

    def callback_disconnected(self, exc: Exception | None) -> None:
        if self._worker is not None:
            self._worker.cancel()
        super().callback_disconnected(exc)


class _PeerTcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _PeerHandler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class FlywheelController:
    """The register image of one emulated bank and its evolution. No sockets: testable alone."""

    def __init__(
        self,
        config: FlywheelBankConfig,
        clock: Clock,
        base_address: int = SUNSPEC_BASE_ADDRESS,
        control_period_s: float = 1.0,
        unit_id: int = 1,
        write_log: WriteLog | None = None,
    ) -> None:
        self.bank = FlywheelBank(config, control_period_s)
        #: The load the bank's converter measures (W; set by the site emulator): with it and
        #: ``Ena`` = 1 in model 64220 the converter's own loop decides the bank's power.
        self.load_w: Callable[[], float] | None = None
        self._loop: ConverterState | None = None
        self.unit_id = unit_id
        self.write_log = write_log
        self.base_address = base_address
        self._clock = clock
        self._last_tick_s = clock()
        self._last_setpoint_write_s = self._last_tick_s
        self._heartbeat = 0
        self.image = build_flywheel_image(config.nameplate(), self.bank.status())
        self.locations = walk_models(self.image, base_address)
        self._control = next(loc for loc in self.locations if loc.model_id == STORAGE_CONTROL)
        self._writable = _writable_addresses(self.locations)

    @property
    def setpoint_w(self) -> float:
        """The setpoint the image commands now (W, + discharge / − charge)."""
        return decode_setpoint(load_layout(STORAGE_CONTROL), self._block(self._control))

    def _power_w(self, dt_s: float) -> float:
        """The bank's power for the coming interval: model 124's setpoint, or, with the
        converter's loop enabled and a load to measure, what the loop sets on that load (held
        over the interval: the emulator ticks coarser than the loop's control period)."""
        conv = self.converter
        if conv is None or not conv[1].enabled or self.load_w is None:
            self._loop = None
            return self.setpoint_w
        spec, params = conv
        load_kw = np.array([self.load_w() / 1000.0])
        if self._loop is None:
            self._loop = ConverterState.start(spec, load_kw)
        status = self.bank.status()
        cfg = self.bank.config
        out = converter.run(
            spec,
            params.settings(),
            self._loop,
            load_kw,
            max(int(round(dt_s / spec.control_period_s)), 1),
            np.array([status.soc]),
            np.array([cfg.modules * cfg.module_power_w / 1000.0]),
            np.array([status.max_discharge_w / 1000.0]),
            np.array([status.max_charge_w / 1000.0]),
        )
        return float(out.kes_kw[0]) * 1000.0

    @property
    def converter(self) -> tuple[ConverterSpec, ConverterParams] | None:
        """The converter loop's nameplate and the parameters a client last wrote (model
        64220), or None when the bank publishes none."""
        loc = next((x for x in self.locations if x.model_id == CONVERTER), None)
        return None if loc is None else decode_converter(self._block(loc))

    def _block(self, loc: ModelLocation) -> list[int]:
        start = loc.address - self.base_address
        return self.image[start : start + loc.length + 2]

    def _revert_if_expired(self, now_s: float) -> None:
        layout = load_layout(STORAGE_CONTROL)
        revert_point = layout.point("InOutWRte_RvrtTms")
        start = self._control.address - self.base_address
        raw = decode_raw(revert_point, self.image[start + revert_point.offset :][:1])
        if isinstance(raw, int) and raw > 0 and now_s - self._last_setpoint_write_s > raw:
            mode = layout.point("StorCtl_Mod")
            self.image[start + mode.offset] = encode_raw(mode, 0)[0]
            log.info("flywheel emulator: setpoint not renewed within %d s, holding", raw)

    def tick(self) -> None:
        """Advance the bank to the clock's now under the current setpoint; refresh registers."""
        now_s = self._clock()
        dt_s = now_s - self._last_tick_s
        if dt_s <= 0:
            return
        self._revert_if_expired(now_s)
        self.bank.advance(self._power_w(dt_s), dt_s)
        self._last_tick_s = now_s
        self._heartbeat += 1
        fresh = build_flywheel_image(
            self.bank.config.nameplate(), self.bank.status(), self._heartbeat
        )
        self.image = carry_writable(self.image, fresh, self.locations, self.base_address)

    def write(self, address: int, values: list[int]) -> bool:
        """Apply a client write; False (and nothing written) if it touches a read-only register."""
        addresses = range(address, address + len(values))
        if not all(a in self._writable for a in addresses):
            return False
        start = address - self.base_address
        self.image[start : start + len(values)] = values
        control = self._control.address
        setpoint = control <= address < control + self._control.length + 2
        if setpoint:
            self._last_setpoint_write_s = self._clock()
        if self.write_log is not None:
            self.write_log(
                {
                    "t_s": time.time(),
                    "unit": self.unit_id,
                    "address": address,
                    "setpoint": setpoint,
                    "peer": _PEER.get(),
                }
            )
        return True


def _writable_addresses(locations: list[ModelLocation]) -> frozenset[int]:
    found: set[int] = set()
    for loc in locations:
        for point in load_layout(loc.model_id).points.values():
            if point.writable:
                found.update(
                    range(loc.address + point.offset, loc.address + point.offset + point.size)
                )
    return frozenset(found)


@dataclass
class FlywheelEmulatorHandle:
    """A running emulator: its controllers (image + bank) by unit id, bound port, and stop()."""

    controllers: dict[int, FlywheelController]
    host: str
    port: int
    _server: ModbusTcpServer
    _answering: asyncio.Event
    _ticker: asyncio.Task[None] | None = field(default=None)

    @property
    def controller(self) -> FlywheelController:
        """The bank with the lowest unit id (the only one for a single-bank emulator)."""
        return self.controllers[min(self.controllers)]

    def hang(self) -> None:
        """Fault injection: keep connections open but answer no request until :meth:`answer`."""
        self._answering.clear()

    def answer(self) -> None:
        """Answer requests again (those held while hung are answered now)."""
        self._answering.set()

    async def stop(self) -> None:
        """Stop ticking and close the listening socket and its connections."""
        self._answering.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._server.shutdown()  # type: ignore[no-untyped-call]


def _make_action(controller: FlywheelController, answering: asyncio.Event) -> Callable[..., object]:
    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        await answering.wait()  # a hung controller holds the request (fault injection)
        # The controller owns the image: mirror it into pymodbus' registers on every access.
        writing = function_code in _WRITE_CODES and set_values is not None
        if writing and not controller.write(address, [int(v) for v in set_values or []]):
            return ExcCodes.ILLEGAL_ADDRESS
        current_registers[: len(controller.image)] = controller.image
        return None

    return action


async def _tick_forever(controllers: list[FlywheelController], period_s: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(period_s)
        try:
            for controller in controllers:
                controller.tick()
        except Exception:  # the emulator must keep serving: log once, then at debug
            log.log(
                logging.DEBUG if failing else logging.ERROR,
                "flywheel emulator tick failed",
                exc_info=True,
            )
            failing = True
        else:
            failing = False


def _bound_port(server: ModbusTcpServer, requested: int) -> int:
    sockets = getattr(server.transport, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return requested


def _device(unit_id: int, controller: FlywheelController, answering: asyncio.Event) -> SimDevice:
    registers = SimData(
        controller.base_address, values=list(controller.image), datatype=DataType.REGISTERS
    )
    action = _make_action(controller, answering)
    return SimDevice(id=unit_id, simdata=[registers], action=action)  # type: ignore[arg-type]


async def start_flywheel_emulator(
    config: FlywheelBankConfig | Mapping[int, FlywheelBankConfig] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 5020,
    unit_id: int = 1,
    tick_s: float | None = 1.0,
    clock: Clock | None = None,
    base_address: int = SUNSPEC_BASE_ADDRESS,
    write_log: WriteLog | None = None,
) -> FlywheelEmulatorHandle:
    """Serve emulated SunSpec flywheel banks on ``host:port`` (``port=0`` picks a free one).

    ``config`` is one bank (served as ``unit_id``) or a mapping unit id -> bank, e.g. one bank per
    power domain behind one gateway. ``tick_s`` is the wall-clock period of the physics tick
    (None: the caller ticks ``handle.controllers`` itself, e.g. with a manual clock in tests).
    ``clock`` returns seconds (the event loop's monotonic clock by default). ``write_log`` gets
    one record per accepted write, with the client's address.
    """
    banks = (
        dict(config) if isinstance(config, Mapping) else {unit_id: config or FlywheelBankConfig()}
    )
    if not banks or not all(1 <= unit <= 247 for unit in banks):
        raise ValueError(f"flywheel emulator unit ids {sorted(banks)}: need 1..247, at least one")
    time_source = clock or asyncio.get_running_loop().time
    controllers = {
        unit: FlywheelController(bank, time_source, base_address, unit_id=unit, write_log=write_log)
        for unit, bank in banks.items()
    }
    answering = asyncio.Event()
    answering.set()
    devices = [_device(unit, ctrl, answering) for unit, ctrl in sorted(controllers.items())]
    server = _PeerTcpServer(devices, address=(host, port))
    await server.serve_forever(background=True)
    ticker = (
        asyncio.create_task(_tick_forever(list(controllers.values()), tick_s)) if tick_s else None
    )
    port = _bound_port(server, port)
    return FlywheelEmulatorHandle(controllers, host, port, server, answering, ticker)
