"""The `llmsm` command. Each command group lives in its own module and registers itself here.

Only `llmsm proxy` imports mitmproxy (inside the command), so every other command starts fast.
"""

from __future__ import annotations

import typer

from llmsm import __version__

app = typer.Typer(
    name="llmsm",
    help="LLM Session Manager: exact usage, health and cost of your AI coding sessions, read from the wire.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"llmsm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def _register() -> None:
    from llmsm.cli import certs, cost, dashboard, handoff, imports, mcp, memory, proxy, report, run, sessions, sql, team

    for module in (proxy, run, sessions, dashboard, handoff, cost, report, imports, sql, certs, team, mcp, memory):
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
