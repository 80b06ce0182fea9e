"""The ``wattwheel`` command line. Each command group lives in its own module and registers
itself on :data:`app`; this module only assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="wattwheel",
    help="Predictive power management for data centers: simulate, forecast, run live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from wattwheel.cli import (  # noqa: F401
        forecast_cmds,
        import_cmds,
        live_cmds,
        sim_cmds,
    )


def main() -> None:
    _register()
    app()
