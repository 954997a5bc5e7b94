"""The `stagewatch` command. Each group of commands lives in its own module and registers here."""

from __future__ import annotations

import inspect

import typer

from stagewatch import __version__

app = typer.Typer(
    name="stagewatch",
    help="Stage-change history for applications sent through Kombo's unified ATS API.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stagewatch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """stagewatch keeps the history Kombo does not: every stage move, hire and decline."""


def _register() -> None:
    from stagewatch.cli import admin, demo, imports, query, simulator, store, sync, webhooks
    from stagewatch.cli import analytics as stage_analytics
    from stagewatch.cli import stack as stack_cli

    simulator.register(app)
    query.register(app)
    sync.register(app)
    app.command("demo")(demo.demo)
    webhooks.register(app)
    admin.register(app)
    store.register(app)
    stage_analytics.register(app)
    stack_cli.register(app)
    imports.register(app)


def _reflow_help() -> None:
    """Typer keeps a docstring's line breaks in places (the commands list, later paragraphs), which
    broke sentences mid-line at every width: each paragraph becomes one line the terminal wraps."""
    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        paragraphs = [" ".join(part.split()) for part in doc.split("\n\n")]
        info.help = "\n\n".join(paragraphs)
        info.short_help = info.short_help or paragraphs[0]


_register()
_reflow_help()
