"""Store fixtures: a SQLite file per test and a real PostgreSQL server per module (a fresh
database per test)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from services_pg import SKIP_REASON, PgServer, fresh_pg_database, pg_bin_dir, postgres_server


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    if pg_bin_dir() is None:
        pytest.skip(SKIP_REASON)
    yield from postgres_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wattwheel.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return fresh_pg_database(server)
