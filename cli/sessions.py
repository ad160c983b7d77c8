"""`llmsm sessions`: one row per assistant session."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer

from llmsm.cli.common import DbOption, JsonOption, console, fail, print_json, resolve_db, rows_as_dicts
from llmsm.cli.format import human_tokens, human_usd, short_path

# Every column of the view, so `--json` shows a new one by itself; the table picks what fits.
QUERY = """
SELECT * FROM sessions
{where}
ORDER BY last_seen DESC
LIMIT {limit}
"""


def register(app: typer.Typer) -> None:
    app.command("sessions", help="List sessions: project, client, status, age, requests, errors, tokens.")(sessions)


def sessions(
    db: DbOption = None,
    active: Annotated[bool, typer.Option("--active", help="Only sessions active in the last 5 minutes.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many sessions, newest first.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    from llmsm.analytics.store import StoreError, open_for_query, run_query

    where = "WHERE status = 'active'" if active else ""
    try:
        con = open_for_query(resolve_db(db))
        try:
            columns, rows = run_query(con, QUERY.format(where=where, limit=int(limit)))
        finally:
            con.close()
    except StoreError as exc:
        fail(str(exc))
    records = rows_as_dicts(columns, rows)
    if as_json:
        print_json(records)
        return
    render(records)


def _age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return ""
    secs = max(0, int((now - ts).total_seconds()))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"{secs // 86400}d"


STATUS_STYLE = {"active": "green", "idle": "yellow", "ended": "dim"}


def render(records: list[dict]) -> None:
    from rich.table import Table

    if not records:
        console.print("no sessions yet: run `llmsm proxy` and point an assistant at it")
        return
    now = datetime.now(timezone.utc)
    wide = console.width >= 120  # at 80 columns: the columns that decide, nothing else
    columns = ["session", "project", "client", "status", "age", "last", "req", "err", "in", "out"]
    if wide:
        columns += ["cache r/w", "model"]
    else:
        columns.remove("age")
    columns.append("cost")
    # One space between columns: at 80 columns every cell fits whole.
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for col in columns:
        left = col in ("session", "project", "client", "status", "model")
        narrow_width = {"session": 14, "project": 14}.get(col)
        table.add_column(col, justify="left" if left else "right", no_wrap=True, overflow="ellipsis",
                         max_width=None if wide else narrow_width)
    for r in records:
        client = r["client"] or ""
        if wide and r.get("client_version"):
            client += f" {r['client_version']}"
        cost = r.get("cost_usd")
        cells = {
            "session": r["label"] or (r["session_id"] or "")[:13],
            "project": short_path(r.get("project")),
            "client": client,
            "status": f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
            "age": _age(r["first_seen"], now),
            "last": _age(r["last_seen"], now),
            "req": str(r["requests"]),
            "err": f"[red]{r['errors']}[/]" if r["errors"] else "0",
            "in": human_tokens(r["input_tokens"]),
            "out": human_tokens(r["output_tokens"]),
            "cache r/w": f"{human_tokens(r['cache_read_tokens'])}/{human_tokens(r['cache_write_tokens'])}",
            "model": ", ".join(m for m in (r.get("models") or []) if m),
            "cost": human_usd(cost),
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
