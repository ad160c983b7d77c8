"""`llmsm report ...`, `llmsm export`, `llmsm reconcile`, `llmsm prune`.

The work is in `llmsm.analytics.reports` and `.retention` (export, prune), times are read by
`.timespec`; this module parses options, opens the database and renders (rich tables on a
terminal, JSON with --json).
See docs/reports.md for the counting rules and the JSON schemas.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone, tzinfo
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from llmsm.analytics import timespec
from llmsm.cli.common import DbOption, JsonOption, console, fail, print_json, resolve_db
from llmsm.cli.format import human_tokens, human_usd

# --------------------------------------------------------------------------------------------
# Shared options
# --------------------------------------------------------------------------------------------

SinceOption = Annotated[str | None, typer.Option("--since", help=timespec.SINCE_HELP, show_default=False)]
UntilOption = Annotated[str | None, typer.Option("--until", help=timespec.UNTIL_HELP, show_default=False)]
ClientOption = Annotated[
    str | None, typer.Option("--client", help="Only this client (claude-code, codex, gemini-cli, ...).", show_default=False)
]
BreakdownOption = Annotated[bool, typer.Option("--breakdown", help="One sub-row per model.")]
UtcOption = Annotated[bool, typer.Option("--utc", help="Day boundaries and times in UTC instead of the local time zone.")]
TzOption = Annotated[
    str | None,
    typer.Option("--tz", help="Day boundaries and times in this IANA time zone (e.g. Europe/Paris).", show_default=False),
]


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(
        name="report",
        help="Usage reports: tokens by kind, requests, errors and cost per day, week, month, session or model.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for kind, help_text in (
        ("daily", "Usage per day."),
        ("weekly", "Usage per week (weeks start on Monday)."),
        ("monthly", "Usage per month."),
        ("sessions", "Usage per session, most recent first."),
        ("models", "Usage per provider and model, most expensive first."),
    ):
        report_app.command(kind, help=help_text)(_report_command(kind))
    app.add_typer(report_app, name="report")

    app.command("export", help="Export every request row (the `requests` view) as Parquet, CSV or JSON lines.")(export)
    app.command(
        "reconcile",
        help="For sessions seen both on the wire and in transcripts: the gap per token kind (wire minus transcript).",
    )(reconcile)
    app.command("prune", help="Delete events older than a cutoff (e.g. --older-than 90d), then compact the database file.")(prune)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _zone(con, utc: bool, tz: str | None) -> tuple[str, tzinfo | None]:
    """The report's time zone: its name (period boundaries, in DuckDB) and the zone that times
    given on the command line are read in (None: the local zone, the one DuckDB reads too)."""
    from llmsm.analytics.reports import check_timezone, local_timezone

    if utc and tz:
        fail("give either --utc or --tz, not both")
    if utc:
        return "UTC", timezone.utc
    if tz:
        name = check_timezone(con, tz)
        return name, timespec.zone_named(name)
    return local_timezone(con), None


def _cost(value: float | None, unpriced: int = 0) -> str:
    if value is None:
        return "—" if unpriced else ""
    text = human_usd(value)
    return text + ("*" if unpriced else "")


def _local(iso: str | None, tz: str) -> str:
    """A UTC ISO time as "YYYY-MM-DD HH:MM" in zone tz (in UTC if Python does not know the zone)."""
    if not iso:
        return ""
    dt = datetime.fromisoformat(iso)
    try:
        from zoneinfo import ZoneInfo

        dt = dt.astimezone(ZoneInfo(tz))
    except Exception:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------------------
# llmsm report
# --------------------------------------------------------------------------------------------


def _report_command(kind: str):
    def command(
        since: SinceOption = None,
        until: UntilOption = None,
        client: ClientOption = None,
        breakdown: BreakdownOption = False,
        utc: UtcOption = False,
        tz: TzOption = None,
        as_json: JsonOption = False,
        db: DbOption = None,
    ) -> None:
        run_report(kind, since=since, until=until, client=client, breakdown=breakdown, utc=utc, tz=tz, as_json=as_json, db=db)

    command.__name__ = f"report_{kind}"
    return command


def run_report(kind: str, *, since, until, client, breakdown, utc, tz, as_json, db) -> None:
    from llmsm.analytics.reports import build_report
    from llmsm.analytics.store import StoreError, open_db

    try:
        with open_db(resolve_db(db)) as con:
            name, zone = _zone(con, utc, tz)
            s, u = timespec.parse_period(since, until, zone=zone)
            data = build_report(con, kind, tz=name, since=s, until=u, client=client, breakdown=breakdown)
    except (StoreError, timespec.BadTime) as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        return
    render_report(data)


_TOKEN_COLS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache wr", "cache_write_tokens"),
    ("cache rd", "cache_read_tokens"),
    ("reason", "reasoning_tokens"),
)

Cell = str | tuple[str, str]  # text, or (text, rich style)


class Grid:
    """A plain aligned table, much faster than rich.Table on hundreds of rows (a year of days).

    Columns are separated by one space; the first column (the name) shrinks with an ellipsis
    when the table would be wider than the terminal. Styles only on a terminal.
    """

    def __init__(self, columns: list[tuple[str, str]], max_first: int | None = None) -> None:
        self.columns = columns  # (header, 'l' | 'r')
        self.max_first = max_first
        self.rows: list[tuple[list[Cell], str]] = []

    def add(self, cells: list[Cell], style: str = "") -> None:
        self.rows.append((cells, style))

    def rule(self) -> None:
        self.rows.append(([], "rule"))

    def print(self) -> None:
        from rich.text import Text

        def text(c: Cell) -> str:
            return c if isinstance(c, str) else c[0]

        widths = [len(h) for h, _ in self.columns]
        for cells, _ in self.rows:
            for i, c in enumerate(cells):
                widths[i] = max(widths[i], len(text(c)))
        if self.max_first is not None:
            widths[0] = min(widths[0], max(self.max_first, len(self.columns[0][0])))
        over = sum(widths) + len(widths) - 1 - console.width
        if over > 0:
            widths[0] = max(8, widths[0] - over)

        def fit(value: str, i: int) -> str:
            w = widths[i]
            if len(value) > w:
                value = value[: max(0, w - 1)] + "…"
            return value.ljust(w) if self.columns[i][1] == "l" else value.rjust(w)

        out = Text(no_wrap=True, overflow="ignore")
        out.append(" ".join(fit(h, i) for i, (h, _) in enumerate(self.columns)).rstrip() + "\n", style="bold")
        total = sum(widths) + len(widths) - 1
        for cells, row_style in self.rows:
            if row_style == "rule":
                out.append("─" * total + "\n", style="dim")
                continue
            last = len(cells) - 1
            for i, c in enumerate(cells):
                value = fit(text(c), i)
                if i == last:
                    value = value.rstrip()
                out.append(value, style=(c[1] if not isinstance(c, str) else row_style) or None)
                out.append("\n" if i == last else " ")
        console.print(out, end="", soft_wrap=True, highlight=False)


def render_report(data: dict[str, Any]) -> None:
    kind = data["report"]
    tz = data["timezone"]
    rows = data["rows"]
    if not rows:
        console.print("no usage in this period" + (f" for client {data['client']}" if data["client"] else ""))
        return
    wide = console.width >= 110
    first = {"daily": "date", "weekly": "week of", "monthly": "month", "sessions": "session", "models": "model"}[kind]
    extra: list[str] = []
    if kind == "sessions":
        extra = ["client", "last seen"] if wide else ["last seen"]
    elif kind == "models" and wide:
        extra = ["provider"]
    token_cols = [c for c in _TOKEN_COLS if wide or kind != "sessions" or c[1] != "reasoning_tokens"]
    columns = [(first, "l"), *((name, "l") for name in extra), ("req", "r"), ("err", "r")]
    columns += [(label, "r") for label, _ in token_cols]
    if wide:
        columns.append(("total", "r"))
    columns.append(("cost", "r"))
    grid = Grid(columns)

    def cells(r: dict[str, Any], name: str, extras: list[str]) -> list[Cell]:
        req = str(r["requests"]) + ("~" if r["estimated_requests"] else "")
        out: list[Cell] = [name, *extras, req, (str(r["errors"]), "red") if r["errors"] else "0"]
        out += [human_tokens(r[key]) for _, key in token_cols]
        if wide:
            out.append(human_tokens(r["total_tokens"]))
        out.append(_cost(r["cost_usd"], r["unpriced_requests"]))
        return out

    for r in rows:
        if kind in _PERIOD_KEY:
            name = r[_PERIOD_KEY[kind]]
        elif kind == "sessions":
            name = r["label"] or r["session_id"] or "(no session)"
        else:
            name = r["model"] or "(unknown)"
        extras: list[str] = []
        if kind == "sessions":
            extras = ([r["client"] or ""] if wide else []) + [_local(r["last_seen"], tz)[0 if wide else 5:]]
        elif kind == "models" and wide:
            extras = [r["provider"] or ""]
        breakdown = r.get("breakdown")
        grid.add(cells(r, name, extras), "bold" if breakdown else "")
        for b in breakdown or []:
            grid.add(cells(b, f"  {b['model'] or '(unknown)'}", [""] * len(extras)), "dim")
    t = data["totals"]
    grid.rule()
    grid.add(cells(t, "total", [""] * len(extras)), "bold")
    grid.print()

    notes = []
    if t["estimated_requests"]:
        notes.append(f"~ {t['estimated_requests']} request(s) without provider usage: tokens estimated by llmsm")
    if t["transcript_requests"]:
        notes.append(f"{t['transcript_requests']} request(s) from imported transcripts (wire data wins where both exist)")
    if t["unpriced_requests"]:
        notes.append(f"* cost leaves out {t['unpriced_requests']} request(s) of models without a known price")
    if kind in ("daily", "weekly", "monthly", "sessions"):
        notes.append(f"times in {tz}")
    for n in notes:
        console.print(n, style="dim", highlight=False, markup=False)
    if kind in _PERIOD_KEY and console.is_terminal and not console.is_dumb_terminal:
        render_chart(rows, _PERIOD_KEY[kind])


def render_chart(rows: list[dict[str, Any]], key: str, height: int = 4) -> None:
    """Cost and tokens per period as two small bar charts under the table: one column per
    period (two when they fit), the newest that fit the terminal. Only on a terminal: never
    in --json or a pipe; with NO_COLOR the same bars without colour."""
    from rich.text import Text

    from llmsm.cli.format import bar_columns

    rows = sorted(rows, key=lambda r: r[key])
    label_w = 7
    room = max(8, console.width - label_w - 12)
    width = 2 if 2 * len(rows) <= room else 1
    rows = rows[-(room // width):]
    out = Text(no_wrap=True, overflow="ignore")
    for name, field, style, fmt in (("cost", "cost_usd", "green", human_usd), ("tokens", "total_tokens", "cyan", human_tokens)):
        values = [float(r[field] or 0) for r in rows]
        lines = bar_columns(values, height)
        for i, line in enumerate(lines):
            out.append((name if i == 0 else "").ljust(label_w), style="bold")
            out.append("".join(c * width for c in line), style=style)
            if i == 0:
                out.append(" max " + fmt(max(values) if values else 0), style="dim")
            out.append("\n")
    first, last = str(rows[0][key]), str(rows[-1][key])
    span = len(rows) * width
    axis = first + " " * max(1, span - len(first) - len(last)) + last if span >= len(first) + len(last) + 1 else first
    out.append(" " * label_w + axis + "\n", style="dim")
    console.print(out, end="", soft_wrap=True, highlight=False)


_PERIOD_KEY = {"daily": "date", "weekly": "week", "monthly": "month"}


# --------------------------------------------------------------------------------------------
# llmsm export
# --------------------------------------------------------------------------------------------


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format (Parquet for a warehouse).")] = ExportFormat.csv,
    since: SinceOption = None,
    until: UntilOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (required for parquet; csv/jsonl go to standard output without it).",
                     show_default=False, dir_okay=False),
    ] = None,
    utc: UtcOption = False,
    tz: TzOption = None,
    db: DbOption = None,
) -> None:
    from llmsm.analytics.retention import export as do_export
    from llmsm.analytics.store import StoreError, open_db

    to_stdout = output is None or str(output) == "-"
    if fmt is ExportFormat.parquet and to_stdout:
        fail("parquet is a binary format: give --output FILE.parquet")
    path = resolve_db(db)
    try:
        with open_db(path) as con:
            _, zone = _zone(con, utc, tz)
        s, u = timespec.parse_period(since, until, zone=zone)
        if to_stdout:
            with tempfile.TemporaryDirectory(prefix="llmsm-export-") as tmpdir:
                target = Path(tmpdir) / f"export.{fmt.value}"
                do_export(path, fmt.value, target, since=s, until=u)
                sys.stdout.flush()
                with open(target, "rb") as fh:
                    try:
                        shutil.copyfileobj(fh, sys.stdout.buffer)
                        sys.stdout.buffer.flush()
                    except BrokenPipeError:
                        _quiet_broken_pipe()
            return
        assert output is not None
        n = do_export(path, fmt.value, output, since=s, until=u)
    except (StoreError, timespec.BadTime) as exc:
        fail(str(exc))
    print(f"wrote {n} request row{'s' if n != 1 else ''} to {output}", file=sys.stderr)


def _quiet_broken_pipe() -> None:
    # The reader went away (`llmsm export | head`): not an error. Point stdout at /dev/null so
    # Python's final flush does not complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# llmsm reconcile
# --------------------------------------------------------------------------------------------


def reconcile(
    session: Annotated[str | None, typer.Argument(help="Only this session id.", show_default=False)] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    from llmsm.analytics.reports import TOKEN_KINDS, reconcile as do_reconcile
    from llmsm.analytics.store import StoreError, open_db

    try:
        with open_db(resolve_db(db)) as con:
            data = do_reconcile(con, session)
    except StoreError as exc:
        fail(str(exc))
    if session is not None and not data["sessions"]:
        fail(f"session {session} is not seen both on the wire and in imported transcripts")
    if as_json:
        print_json(data)
        return
    if not data["sessions"]:
        console.print("no session is seen both on the wire and in imported transcripts "
                      "(run `llmsm import claude-code` for sessions that went through llmsm)")
        return
    labels = {"input_tokens": "Δ input", "output_tokens": "Δ output", "cache_write_tokens": "Δ cache wr",
              "cache_read_tokens": "Δ cache rd", "reasoning_tokens": "Δ reason"}
    grid = Grid([("session", "l"), ("wire", "r"), ("trans", "r"), ("both", "r"), *((labels[k], "r") for k in TOKEN_KINDS)],
                )

    def signed(n: int) -> str:
        if n == 0:
            return "0"
        return ("+" if n > 0 else "-") + human_tokens(abs(n))

    def add(name: str, item: dict[str, Any], style: str = "") -> None:
        grid.add([name, str(item["wire_requests"]), str(item["transcript_requests"]), str(item["matched_requests"]),
                  *(signed(item["gap"][k]) for k in TOKEN_KINDS)], style)

    for item in data["sessions"]:
        add(item["session_id"], item)
    if len(data["sessions"]) > 1:
        grid.rule()
        add("total", data["totals"], "bold")
    grid.print()
    console.print("requests seen on the wire / in transcripts / both; Δ = wire minus transcript (whole session)",
                  style="dim", highlight=False, markup=False)


# --------------------------------------------------------------------------------------------
# llmsm prune
# --------------------------------------------------------------------------------------------


def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Delete events older than this: an age (90d, 12w, 48h) or a date / ISO time "
                     "(the forms of --since).", show_default=False),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    db: DbOption = None,
) -> None:
    from llmsm.analytics.retention import prune as do_prune
    from llmsm.analytics.store import StoreError

    if older_than is None:
        fail("give --older-than, e.g. llmsm prune --older-than 90d")
    now = datetime.now(timezone.utc)
    try:
        cutoff = timespec.parse_time(older_than, option="--older-than", now=now)
        if cutoff >= now:
            fail(f"--older-than {older_than!r} is not in the past: that would delete every event; give an age such as 90d")
        result = do_prune(resolve_db(db), cutoff, dry_run=dry_run)
    except (StoreError, timespec.BadTime) as exc:
        fail(str(exc))
    when = result.cutoff.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    n = result.matched
    if result.dry_run:
        console.print(f"would delete {n} event{'s' if n != 1 else ''} older than {when} ({result.remaining} would remain); nothing changed")
        return
    console.print(f"deleted {n} event{'s' if n != 1 else ''} older than {when} ({result.remaining} remain)")
    mb = 1024 * 1024
    console.print(f"database file: {result.size_before / mb:.1f} MiB before, {result.size_after / mb:.1f} MiB after compaction")
