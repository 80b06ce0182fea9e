"""DESIGN §1: domain <- forecast, control <- runtime <- adapters, sim, emulate, api, cli.

The pure core (domain, forecast, control) does no I/O, reads no clock and imports no network,
database or web library. Checked on the AST of every module, so a violation fails the build.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wattwheel"

# Which wattwheel layers each layer may import.
ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "forecast": {"domain", "forecast"},
    "control": {"domain", "forecast", "control"},
    "runtime": {"domain", "forecast", "control", "runtime"},
}
CORE = ("domain", "forecast", "control")
FORBIDDEN_IN_CORE = {
    "time",
    "socket",
    "asyncio",
    "subprocess",
    "threading",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "sqlite3",
    "urllib",
    "http",
    "httpx",
    "requests",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiomqtt",
    "paho",
    "pymodbus",
    "pysnmp",
    "sunspec2",
    "typer",
    "rich",
    "plotly",
    "logging",
}
FORBIDDEN_CALLS_IN_CORE = {"open", "print", "input"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(path: Path) -> list[str]:
    layer = _layer(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for name in _imports(tree):
        top = name.split(".")[0]
        if top == "wattwheel" and layer in ALLOWED:
            target = name.split(".")[1] if "." in name else ""
            if target and target not in ALLOWED[layer]:
                found.append(f"{layer} imports wattwheel.{target}")
        if layer in CORE and top in FORBIDDEN_IN_CORE:
            found.append(f"pure core module imports {name}")
    if layer in CORE:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS_IN_CORE
            ):
                found.append(f"pure core module calls {node.func.id}() at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_layers(path: Path) -> None:
    assert _violations(path) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = PACKAGE / "domain" / "_layering_probe.py"
    try:
        bad.write_text("import httpx\nfrom wattwheel.sim import plant\nopen('x')\n")
        found = _violations(bad)
    finally:
        bad.unlink()
    assert "pure core module imports httpx" in found
    assert "domain imports wattwheel.sim" in found
    assert any("calls open()" in f for f in found)
