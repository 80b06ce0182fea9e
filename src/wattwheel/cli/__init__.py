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

#: Commands that need the ``live`` extra (device protocols, database, web server).
LIVE_COMMANDS = ("emulate", "serve")
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    # Imported for their side effect of adding commands to ``app``.
    from wattwheel.cli import capacity_cmds, forecast_cmds, import_cmds, sim_cmds  # noqa: F401

    try:
        from wattwheel.cli import live_cmds  # noqa: F401
    except ModuleNotFoundError as exc:
        # The simulator and the forecaster work without the live extra (``make demo``
        # installs only the core); say what is missing when a live command is asked for.
        _register_missing_live(exc.name or "a live dependency")


def _register_missing_live(missing: str) -> None:
    def command_for(name: str) -> None:
        @app.command(
            name=name,
            help=f"(needs the live extra: pip install 'wattwheel[live]'; missing {missing})",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )
        def _unavailable(ctx: typer.Context) -> None:
            typer.echo(
                f"error: `wattwheel {name}` needs the live extra, which is not installed "
                f"(missing module {missing!r}): pip install 'wattwheel[live]'",
                err=True,
            )
            raise typer.Exit(2)

    for name in LIVE_COMMANDS:
        command_for(name)


def main() -> None:
    _register()
    app()
