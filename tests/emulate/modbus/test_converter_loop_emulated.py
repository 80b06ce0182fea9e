"""The emulated bank's converter loop: with model 64220 enabled and a load to measure, the
converter (not model 124's setpoint) decides the bank's power, and the feed ramps at the limit."""

from __future__ import annotations

import itertools

from wattwheel.adapters.modbus.codec import walk_models
from wattwheel.adapters.modbus.converter_map import (
    CONVERTER,
    ConverterParams,
    encode_converter_params,
)
from wattwheel.domain.converter import ConverterSpec
from wattwheel.emulate.modbus import FlywheelBankConfig, FlywheelController

CONFIG = FlywheelBankConfig(
    modules=1,
    module_power_w=50_000.0,
    module_energy_wh=1000.0,
    standby_loss_fraction=0.0,
    initial_soc=0.5,
    converter=ConverterSpec(measurement_latency_s=0.02),
)
RAMP_W_PER_S = 1000.0


class ManualClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _enable(controller: FlywheelController, params: ConverterParams) -> None:
    loc = next(
        x for x in walk_models(controller.image, controller.base_address) if x.model_id == CONVERTER
    )
    start = loc.address - controller.base_address
    block = controller.image[start : start + loc.length + 2]
    for address, registers in encode_converter_params(params, loc, block):
        assert controller.write(address, registers)


def _feed_w(load_w: list[float], controller: FlywheelController, clock: ManualClock) -> list[float]:
    feed = []
    for w in load_w:
        controller.load_w = lambda w=w: w
        clock.now_s += 1.0
        controller.tick()
        feed.append(w - controller.bank.power_w)
    return feed


def test_enabled_loop_ramps_the_feed_where_the_setpoint_would_not() -> None:
    clock = ManualClock()
    controller = FlywheelController(CONFIG, clock)
    _enable(controller, ConverterParams(True, RAMP_W_PER_S, 0.0, 100_000.0, 0.3, 0.7, 30.0))
    load = [20_000.0] * 3 + [45_000.0] * 10
    feed = _feed_w(load, controller, clock)
    steps = [abs(b - a) for a, b in itertools.pairwise(feed)]
    assert max(steps) <= RAMP_W_PER_S * 1.0 + 1.0  # 1 s ticks
    assert controller.bank.power_w > 15_000.0  # the bank carries the jump


def test_disabled_loop_follows_model_124() -> None:
    clock = ManualClock()
    controller = FlywheelController(CONFIG, clock)
    feed = _feed_w([20_000.0, 45_000.0], controller, clock)
    assert controller.bank.power_w == 0.0  # no setpoint written: hold
    assert feed == [20_000.0, 45_000.0]
