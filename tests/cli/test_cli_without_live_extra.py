"""``make demo`` installs only the core: the CLI must work without the live extra and say
clearly what is missing when a live command is asked for."""

from __future__ import annotations

import subprocess
import sys

# Hide one live dependency from the import system, then run the CLI as a user would.
PROBE = """
import sys
sys.modules["uvicorn"] = None  # import uvicorn -> ModuleNotFoundError
sys.argv = ["wattwheel", *sys.argv[1:]]
from wattwheel.cli import main
main()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )


def test_help_and_simulation_commands_work_without_the_live_extra() -> None:
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    for command in ("demo", "bench", "simulate", "train", "import", "serve"):
        assert command in res.stdout


def test_a_live_command_says_what_to_install() -> None:
    res = _run("serve", "--site", "x.toml")
    assert res.returncode == 2
    assert "wattwheel[live]" in res.stderr and "uvicorn" in res.stderr
