"""DMTF's redfish-service-validator against the emulator: 0 FAIL, offline schemas."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wattwheel.emulate.redfish import StaticPowerSource, build_redfish_app, serve_in_thread

# The DMTF CSDL schemas (Redfish 2025.4) of every type the emulator serves, in the repository so
# the validator runs offline; WATTWHEEL_REDFISH_CSDL may point at the full DSP8010 set instead.
DEFAULT_CSDL = Path(__file__).resolve().parents[2] / "data" / "redfish" / "csdl"
CSDL = Path(os.environ.get("WATTWHEEL_REDFISH_CSDL", DEFAULT_CSDL))
SUMMARY = re.compile(r"\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|")


@pytest.mark.service
@pytest.mark.timeout(180)
@pytest.mark.skipif(not CSDL.is_dir(), reason=f"DMTF CSDL schemas not found at {CSDL}")
def test_service_validator_reports_no_failure(tmp_path: Path) -> None:
    source = StaticPowerSource({"srv-1": 420.0, "srv-2": 0.0, "srv-3": 1500.0})
    racks = {"r1": ["srv-1", "srv-2"], "r2": ["srv-3"]}
    servers = ["srv-1", "srv-2", "srv-3"]
    app = build_redfish_app(servers, source, username="rf", password="pw", racks=racks)
    with serve_in_thread(app) as emulator:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from redfish_service_validator.console_scripts import main; main()",
                "--ip", emulator.url,
                "-u", "rf",
                "-p", "pw",
                "--authtype", "Session",
                "--nooemcheck",
                "--skipschema",
                "--schema_directory", str(CSDL),
                "--logdir", str(tmp_path),
                "--timeout", "10",
            ],
            capture_output=True,
            text=True,
            timeout=150,
        )  # fmt: skip
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout[-2000:] + result.stderr[-2000:]
    passed, warned, failed, _ = (int(n) for n in summary.groups())
    print(f"redfish-service-validator: PASS {passed} WARN {warned} FAIL {failed}")
    assert failed == 0, result.stdout[-4000:]
    assert result.returncode == 0
    assert passed > 300  # it really walked the tree: chassis, controls, sensors, PDU, sessions
