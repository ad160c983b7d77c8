"""What every command shares: the database option, consoles, errors, JSON output."""

from __future__ import annotations

import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="LLMSM_DB",
        # No square brackets here: rich would read them as markup and drop them.
        help="DuckDB database file (default: llmsm.duckdb in your user data directory, e.g. ~/.local/share/llmsm/).",
        show_default=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

# Colour and decoration only on a terminal; rich also honours NO_COLOR and FORCE_COLOR.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def resolve_db(db: Path | None) -> Path:
    if db is not None:
        return db.expanduser()
    from llmsm.analytics.store import default_db_path

    return default_db_path()


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: no traceback for the user's mistakes."""
    if err_console.is_terminal:
        err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def to_json(value: Any) -> str:
    """`value` as indented JSON (orjson, in C: a team report's 18k rows in milliseconds); what
    JSON lacks (dates, Decimals, sets, bytes) as `_json_default` says. A float that is not a
    number (NaN, infinity) is written as null, which a JSON parser reads."""
    import orjson

    return orjson.dumps(
        value, default=_json_default,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS,
    ).decode()


def print_json(value: Any) -> None:
    sys.stdout.write(to_json(value) + "\n")


def rows_as_dicts(columns: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row)) for row in rows]
