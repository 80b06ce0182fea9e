"""Alembic environment: run with the connection :func:`wattwheel.adapters.store.migrate.upgrade`
passes in ``config.attributes["connection"]`` (or, from the alembic CLI, ``sqlalchemy.url``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from wattwheel.adapters.store.schema import Base


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("alembic: set sqlalchemy.url or pass a connection")
        with create_engine(url).begin() as conn:
            _migrate(conn)
    else:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode recreates tables
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
