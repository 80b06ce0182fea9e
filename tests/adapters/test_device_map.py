"""The device map schema: a missing or mistyped key is one error naming it (and ``serve``
exits 2 with that one line, never a traceback)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wattwheel.adapters.device_map import check_device_map
from wattwheel.domain.errors import ConfigError

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
GOOD: dict[str, Any] = {
    "format": "wattwheel-device-map",
    "domains": {"A": ["a1"]},
    "inventory": [
        {"server_id": "a1-s01", "rack_id": "a1", "critical": True, "priority": 10,
         "min_cap_w": 100.0, "max_cap_w": 2000.0, "outlet": "a1/1"},
    ],
    "redfish": {"url": "http://127.0.0.1:1"},
    "snmp": {"host": "127.0.0.1", "port": 161, "poll_s": 5.0},
    "mqtt": {"host": "127.0.0.1", "port": 1883, "site": "s"},
    "modbus": {"host": "127.0.0.1", "port": 502, "units": {"A": 1}},
    "reserve_url": "http://127.0.0.1:2/reserve",
    "something_newer": {"kept": True},
}  # fmt: skip


def broken(path: str, value: object = KeyError) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


def test_a_good_map_passes_with_unknown_keys_kept() -> None:
    assert check_device_map(GOOD)["something_newer"] == {"kept": True}


@pytest.mark.parametrize(
    ("path", "value", "named", "why"),
    [
        ("snmp.port", KeyError, "devices.snmp.port", "missing"),
        ("inventory", KeyError, "devices.inventory", "missing"),
        ("inventory.0.max_cap_w", KeyError, "devices.inventory.0.max_cap_w", "missing"),
        ("mqtt.port", "eighteen", "devices.mqtt.port", "integer"),
        ("modbus.port", 70000, "devices.modbus.port", "less than or equal to 65535"),
        ("redfish.poll_s", float("nan"), "devices.redfish.poll_s", "finite"),
        ("modbus.units", ["A"], "devices.modbus.units", "dictionary"),
    ],
)
def test_a_bad_key_is_one_error_naming_it(path: str, value: object, named: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_device_map(broken(path, value))
    assert err.value.key == named and why in str(err.value)
    assert "\n" not in str(err.value)


def test_serve_with_a_map_missing_a_key_exits_2_with_one_line(tmp_path: Path) -> None:
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps(broken("snmp.port")))
    res = subprocess.run(
        [*WATTWHEEL, "serve", "--devices", str(devices), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 2
    assert "devices.snmp.port" in res.stderr and "missing" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
