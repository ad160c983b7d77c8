"""The `llmsm` command. Each command group lives in its own module and registers itself here.

Only `llmsm proxy` imports mitmproxy (inside the command), so every other command starts fast.
"""

from __future__ import annotations

import typer

from llmsm import __version__

_app = typer.Typer(
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


@_app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


# The modules that register commands, in the order `llmsm --help` lists them, and the top-level
# names each registers: `llmsm NAME ...` imports only NAME's module (each costs start-up: rich
# tables, SQL, analytics), `llmsm`, `llmsm --help` and any other word import them all.
# tests/test_cli.py checks this table against what the modules really register.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "proxy": ("proxy", "stop"),
    "run": ("run",),
    "sessions": ("sessions",),
    "dashboard": ("watch", "top", "show", "health", "statusline"),
    "handoff": ("handoff",),
    "cost": ("cost", "quota", "budget"),
    "report": ("export", "reconcile", "prune", "report"),
    "imports": ("import",),
    "sql": ("sql",),
    "certs": ("certs",),
    "team": ("team",),
    "mcp": ("mcp",),
    "memory": ("memory",),
}
_MODULE_OF = {name: module for module, names in COMMAND_MODULES.items() for name in names}


_registered: set[str] = set()


def _register(modules) -> typer.Typer:
    """The app with the commands of `modules` registered (each module once)."""
    for module in modules:
        if module not in _registered:
            _registered.add(module)
            # __import__, not importlib.import_module: `python -X importtime` sees only the former
            __import__(f"llmsm.cli.{module}", fromlist=["register"]).register(_app)
    return _app


def main(argv: list[str] | None = None) -> None:
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    module = _MODULE_OF.get(args[0]) if args else None
    if module is not None and not _registered:
        _register((module,))
    elif args != ["--version"]:
        _register(COMMAND_MODULES)
    _app(args=args, prog_name="llmsm")


def __getattr__(name: str):
    # `from llmsm.cli.main import app`: the app with every command (the tests, embedders).
    if name == "app":
        return _register(COMMAND_MODULES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
