"""An independent SunSpec client (pysunspec2's own scanner) against the emulated controller.

pysunspec2 finds the map, walks the models and decodes points with its own code, so this checks
that the emulator speaks SunSpec as others read it, not only as our codec does.
"""

from __future__ import annotations

import asyncio

import pytest
import sunspec2.modbus.client as sunspec_client

from wattwheel.emulate.modbus import FlywheelBankConfig, start_flywheel_emulator

BANK = FlywheelBankConfig(modules=4, module_power_w=100_000.0, module_energy_wh=710.0)


def _scan_and_command(port: int) -> dict[str, object]:
    device = sunspec_client.SunSpecModbusClientDeviceTCP(
        slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2
    )
    try:
        device.scan()
        storage, battery, capacity = (device.models[m][0] for m in (124, 802, 713))
        seen = {
            "models": sorted(k for k in device.models if isinstance(k, int)),
            "manufacturer": device.common[0].Mn.value,
            "soc_pct": capacity.SoC.cvalue,
            "rated_wh": capacity.WHRtg.cvalue,
            "battery_soc_pct": battery.SoC.cvalue,
            "type": battery.Typ.value,
            "w_cha_max": storage.WChaMax.cvalue,
        }
        storage.OutWRte.cvalue = 25.0  # % of WChaMax
        storage.StorCtl_Mod.value = 0b10  # DISCHARGE
        storage.write()
        return seen
    finally:
        device.close()


async def test_pysunspec2_scans_reads_and_commands_the_emulator() -> None:
    handle = await start_flywheel_emulator(BANK, port=0, tick_s=None)
    try:
        seen = await asyncio.to_thread(_scan_and_command, handle.port)
    finally:
        await handle.stop()
    assert seen == {
        "models": [1, 124, 713, 802, 64220],
        "manufacturer": "wattwheel",
        "soc_pct": pytest.approx(80.0),
        "rated_wh": pytest.approx(4 * 710.0),
        "battery_soc_pct": pytest.approx(80.0),
        "type": 99,
        "w_cha_max": pytest.approx(400_000.0),
    }
    assert handle.controller.setpoint_w == pytest.approx(100_000.0)  # 25 % of 400 kW
