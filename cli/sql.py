"""`llmsm sql`: read-only SQL over the event log (views `requests`, `sessions`, ...)."""

from __future__ import annotations

import csv
import sys
from enum import Enum
from typing import Annotated

import typer

from llmsm.cli.common import DbOption, console, fail, print_json, resolve_db, rows_as_dicts


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def register(app: typer.Typer) -> None:
    app.command(
        "sql",
        help="Run a read-only SQL query over the event log (views: requests, sessions, daily; counted_events(since, until)). "
        "Reads the query from standard input when QUERY is '-' or omitted.",
    )(sql)


def sql(
    query: Annotated[str | None, typer.Argument(help="The SQL query, e.g. \"SELECT * FROM sessions\".", show_default=False)] = None,
    db: DbOption = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    from llmsm.analytics.store import StoreError, open_db, run_query

    if query is None or query == "-":
        if sys.stdin.isatty():
            fail('no query given: llmsm sql "SELECT ..." (or pipe one on standard input)')
        query = sys.stdin.read()
    if not query.strip():
        fail("the query is empty")
    try:
        with open_db(resolve_db(db)) as con:
            columns, rows = run_query(con, query)
    except StoreError as exc:
        fail(str(exc))
    if fmt is Format.json:
        print_json(rows_as_dicts(columns, rows))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(columns, rows)


def print_table(columns: list[str], rows: list[tuple]) -> None:
    from rich.table import Table

    table = Table(*columns, header_style="bold", show_lines=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if console.is_terminal:
        console.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/]")
