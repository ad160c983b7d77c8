"""`llmsm watch` (alias `top`), `llmsm show`, `llmsm health` and `llmsm statusline`.

The data comes from llmsm.analytics.dashboard (queries, health per session) and, for the status
line, llmsm.analytics.statusline; numbers and reasons are written by llmsm.cli.format. This module
parses options, draws with rich and runs the live loop. Heavy modules (rich.live, the health
model, genai-prices) are imported inside the commands.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmsm.analytics.apis import TURN_APIS
from llmsm.analytics.health_rules import fill_verdict
from llmsm.cli.format import human_tokens, human_usd, quota_level, short_path, short_reason
from llmsm.cli.common import DbOption, JsonOption, console, err_console, fail, print_json, resolve_db
from llmsm.cli.sessions import _age

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import RenderableType
    from rich.text import Text

    from llmsm.analytics.dashboard import Frame, SessionDetail, SessionRow

UTC = timezone.utc

AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="TIME",
        help="Evaluate as of TIME instead of now: an ISO time (2026-11-25T14:30, local time unless it has an "
        "offset) or relative to now (+10m, -1h, -90s, +2d). Only requests started by then count; ages, "
        "activity and cache idleness are measured at that moment.",
        show_default=False,
    ),
]
AllOption = Annotated[
    bool, typer.Option("--all", "-a", help="Every session, not only those seen within the last 60 minutes.")
]

STATUS_STYLE = {"critical": "bold red", "degraded": "yellow", "healthy": "green"}
STATE_STYLE = {"active": "bold", "idle": "", "ended": "dim"}
SEVERITY_STYLE = {"critical": "bold red", "warn": "yellow", "info": "cyan"}
BUDGET_STYLE = {"exceeded": "bold red", "warn": "yellow", "ok": "green"}
QUOTA_ACCOUNTS = 3  # quota lines under the totals (the most used accounts); `llmsm quota` has all

# --------------------------------------------------------------------------------------------
# --at
# --------------------------------------------------------------------------------------------

def parse_at(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--at`: None (now), or a moment in the one time grammar (analytics/timespec.py: now, an
    ISO time, naive = local time, a date, today...); an offset needs its sign, +10m or -1h.
    Raises ValueError with a message for users."""
    if text is None:
        return None
    from llmsm.analytics.timespec import parse_time

    return parse_time(text, option="--at", now=now, ago=False)


def _at_or_fail(text: str | None) -> datetime | None:
    try:
        return parse_at(text)
    except ValueError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------------------------
# Small formatters
# --------------------------------------------------------------------------------------------


def _cost(value: float | None) -> str:
    # The dashboard's cost column is narrow: tiny costs say so in five characters.
    if value is not None and 0 < value < 0.01:
        return "<$.01"
    return human_usd(value)


def _burn(per_min: float) -> str:
    if per_min <= 0:
        return "0"
    return f"{human_tokens(int(per_min))}/m"


def _local(ts: datetime | None, ref: datetime, *, seconds: bool = True) -> str:
    if ts is None:
        return ""
    loc = ts.astimezone()
    if loc.date() == ref.astimezone().date():
        return loc.strftime("%H:%M:%S" if seconds else "%H:%M")
    return loc.strftime("%m-%d %H:%M")


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 10_000:
        return f"{value / 1000:.0f}s"
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


_FILL_STYLE = {"critical": "bold red", "warn": "yellow", "info": ""}


def fill_style(fill: float | None) -> str:
    """The colour of a context fill: that of its severity in the health model."""
    if fill is None:
        return "dim"
    verdict = fill_verdict(fill)
    return _FILL_STYLE[verdict[0]] if verdict is not None else "green"


def fill_bar(fill: float | None, width: int) -> Text:
    """A context-fill bar `█████░░░░░ 52%` of `width` cells, or just `52%` when narrow."""
    from rich.text import Text

    if fill is None:
        return Text("-".rjust(min(width, 4)), style="dim")
    pct = f"{fill:.0%}".rjust(4)
    style = fill_style(fill)
    bar_cells = width - 5
    if bar_cells < 3:
        return Text(pct, style=style)
    eighths = max(0, min(bar_cells * 8, round(fill * bar_cells * 8)))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part and full < bar_cells else "")
    bar = bar.ljust(bar_cells, "·")
    text = Text(bar, style=style)
    text.append(" " + pct, style=style)
    return text


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int | None = None) -> str:
    """Unicode blocks for 0..1 values (clamped); the last `width` values."""
    if width is not None and len(values) > width:
        values = values[-width:]
    out = []
    for v in values:
        v = max(0.0, min(1.0, v))
        out.append(SPARK[min(len(SPARK) - 1, int(v * len(SPARK)))])
    return "".join(out)


_DATE_SUFFIX = re.compile(r"-(20\d{6}|\d{4}-\d{2}-\d{2})$")


def short_model(model: str | None) -> str:
    """A model name without its date suffix (claude-sonnet-4-5-20250929 -> claude-sonnet-4-5)."""
    return _DATE_SUFFIX.sub("", model) if model else ""


def quota_style(pct: float | None) -> str:
    if pct is None:
        return "dim"
    return {"critical": "bold red", "warn": "yellow"}.get(quota_level(pct) or "", "")


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}%" if value < 1e6 else "∞"


def _reason_cell(row: SessionRow, wide: bool) -> Text:
    """The why column: the top health reason, and a budget past its warning threshold in front
    of it when the reason is something else ("$92% context 87%"; "budget 92% · ..." when wide)."""
    from rich.text import Text

    status = row.status
    text = _reason_text(row, full=wide)
    style = STATUS_STYLE.get(status, "") if status != "healthy" else "dim"
    b = row.budget
    if b is None or b["state"] not in ("warn", "exceeded"):
        return Text(text, style=style)
    b_style = BUDGET_STYLE[b["state"]]
    h = row.health
    top = h.reasons[0].factor if h is not None and h.reasons else None
    if top == "budget":
        return Text(text, style=style if status != "healthy" else b_style)
    if not text:
        return Text(f"budget {_pct(b['pct'])}", style=b_style)
    cell = Text(f"budget {_pct(b['pct'])} · " if wide else f"${_pct(b['pct'])} ", style=b_style)
    cell.append(text, style=style)
    return cell


def _quota_lines(frame: Frame, width: int) -> list[Text]:
    """Under the totals: the most used quota window of each account ("5h window 72% used,
    resets 14:05"), windows that have reset since they were seen left out."""
    from rich.text import Text

    tops = frame.quota_top()
    many = len({q["account"] for q in tops}) > 1
    compact = width < 120
    lines = []
    for q in tops[:QUOTA_ACCOUNTS]:
        line = Text("quota", style="bold")
        account = q["account"] or "(no account)"
        if compact:  # "key:1a2b…": enough to tell accounts apart, room for the text
            who = (account[:8] + "…" if len(account) > 9 else account) if many else ""
        else:
            who = f"{q['provider'] or ''} {account if many else ''}".strip()
        if who:
            line.append(f" {who}" if compact else f"  {who}", style="dim")
        line.append(f" {q['text']}" if compact else f"  {q['text']}", style=quota_style(q["used_pct"]))
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    if len(tops) > QUOTA_ACCOUNTS:
        more = Text(f"… {len(tops) - QUOTA_ACCOUNTS} more accounts: llmsm quota", style="dim")
        more.truncate(width, overflow="ellipsis")
        lines.append(more)
    return lines


def _reason_text(row: SessionRow, full: bool) -> str:
    h = row.health
    if h is None or not h.reasons:
        return ""
    text = h.reasons[0].message if full else short_reason(h)
    more = len(h.reasons) - 1
    if more > 0:
        text += f" (+{more})"
    return text


# --------------------------------------------------------------------------------------------
# The dashboard frame
# --------------------------------------------------------------------------------------------

# (key, header, priority: the lower, the longer the column survives a narrow terminal)
_COLUMNS = (
    ("session", "session", 0),
    ("project", "project", 2),
    ("status", "health", 0),
    ("reason", "why", 0),
    ("ctx", "context", 1),
    ("last", "last", 2),
    ("score", "score", 3),
    ("tokens", "in/out", 4),
    ("cost", "cost", 5),
    ("burn", "burn", 6),
    ("req", "req", 7),
    ("err", "err", 7),
    ("model", "model", 8),
    ("age", "age", 9),
    ("client", "client", 10),
)
_RIGHT = {"score", "tokens", "cost", "burn", "req", "err", "age", "last"}
REASON_MIN = 22
EMPTY_HINT = "start `llmsm proxy` and point an assistant at it, or run one with `llmsm run -- claude`"


def _cells(row: SessionRow, at: datetime, wide: bool) -> dict[str, Any]:
    from rich.text import Text

    status = row.status
    client = row.client or ""
    if wide and row.client_version:
        client += f" {row.client_version}"
    h = row.health
    return {
        "session": Text(row.label or row.session_id[: 12 if wide else 10], style=STATE_STYLE.get(row.state, "")),
        "project": short_path(row.project),
        "status": Text(status, style=STATUS_STYLE.get(status, "")),
        "score": Text(str(row.score), style=STATUS_STYLE.get(status, "") if status != "healthy" else ""),
        "ctx": row.context_fill,
        "last": _age(row.last_seen, at),
        "tokens": f"{human_tokens(row.input_tokens + row.cache_read_tokens + row.cache_write_tokens)}/{human_tokens(row.output_tokens)}",
        "cost": _cost(row.cost_usd),
        "burn": _burn(row.burn_tokens_per_min),
        "req": str(row.requests),
        "err": Text(str(row.errors), style="red" if row.errors else "dim"),
        "model": short_model(row.model or (h.model if h is not None else None)),
        "age": _age(row.first_seen, at),
        "client": client,
        "reason": _reason_cell(row, wide),
    }


def _plain_len(value: Any) -> int:
    from rich.cells import cell_len

    if value is None:
        return 0
    return cell_len(value.plain if hasattr(value, "plain") else str(value))


def table_layout(cells: list[dict[str, Any]], width: int, gap: int = 1) -> tuple[list[tuple[str, str, int]], dict[str, int], int]:
    """The columns of the session table for `width` cells, `gap` cells between columns:
    (columns in order, the reason last; their widths; the reason's width). The least important
    columns go first when the terminal is narrow."""
    wide = width >= 140
    # natural widths; drop the least important columns until everything fits
    ctx_width = 16 if width >= 160 else 12 if width >= 120 else 4
    natural: dict[str, int] = {}
    for key, title, _ in _COLUMNS:
        if key == "reason":
            continue
        if key == "ctx":
            natural[key] = ctx_width  # a bar and the percentage, or only the percentage ("ctx")
            continue
        n = max([_plain_len(c[key]) for c in cells] + [len(title)])
        cap = {"session": 24 if wide else 12, "project": 24 if wide else 16, "model": 26 if wide else 18,
               "client": 22 if wide else 12}.get(key)
        natural[key] = min(n, cap) if cap else n
    # no session showed its project (older rows, --no-content): no empty column for it
    keep = [c for c in _COLUMNS if c[0] != "project" or any(cell["project"] for cell in cells)]
    reason_min = max(REASON_MIN, width // 4)
    while True:
        fixed = sum(natural[k] for k, _, _ in keep if k != "reason")
        used = fixed + gap * (len(keep) - 1)
        if used + reason_min <= width:
            break
        droppable = [c for c in keep if c[2] > 0]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda c: c[2]))
    reason_width = max(8, width - used)

    order = [c for c in _COLUMNS if c in keep and c[0] != "reason"] + [c for c in _COLUMNS if c[0] == "reason"]
    return order, natural, reason_width


def totals_line(frame: Frame, width: int, *, timing: bool = True) -> Text:
    """"total  41 req (2 failed)  1.2M in / 30k out  burn 12k/m  $4.31  · query 12 ms"."""
    from rich.text import Text

    t = frame.totals()
    totals = Text()
    totals.append("total", style="bold")
    totals.append(f"  {t['requests']} req")
    if t["errors"]:
        totals.append(f" ({t['errors']} failed)", style="red")
    prompt = t["input_tokens"] + t["cache_read_tokens"] + t["cache_write_tokens"]
    totals.append(f"  {human_tokens(prompt)} in / {human_tokens(t['output_tokens'])} out")
    totals.append(f"  burn {_burn(t['burn_tokens_per_min'])}")
    if t["cost_usd"] is not None:
        totals.append(f"  {_cost(t['cost_usd'])}")
    if timing:
        totals.append(f"  · query {frame.query_ms:.0f} ms", style="dim")
    totals.truncate(width, overflow="ellipsis")
    return totals


def render_frame(
    frame: Frame | None,
    *,
    width: int,
    height: int | None = None,
    note: str | None = None,
    db_path: Path | None = None,
    missing: bool = False,
    live_keys: bool = False,
) -> RenderableType:
    """One dashboard frame as a rich renderable that fits `width` columns (and `height` rows,
    when given: the least urgent sessions are then summarized in one line)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    at = frame.at if frame is not None else datetime.now(UTC)
    compact = width < 120
    header = Text()
    header.append("llmsm watch", style="bold")
    header.append(f"  {_local(at, datetime.now(UTC))}")
    if frame is not None and not frame.live:
        when = f"@{at.astimezone():%m-%d %H:%M:%S}" if compact else f"as of {at.astimezone():%Y-%m-%d %H:%M:%S} (--at)"
        header.append(f"  {when}", style="magenta")
    if frame is not None:
        t = frame.totals()
        if compact:
            header.append(f"  {t['sessions']} sessions, {t['active']} active")
        else:
            scope = "all sessions" if frame.window_minutes is None else f"last {frame.window_minutes:g} min"
            header.append(f"  {t['sessions']} sessions ({scope}): {t['active']} active, {t['idle']} idle")
        if t["critical"]:
            header.append(f"  {t['critical']} critical", style=STATUS_STYLE["critical"])
        if t["degraded"]:
            header.append(f"  {t['degraded']} degraded", style=STATUS_STYLE["degraded"])
    if note:
        header.append(f"  [{note}]", style="reverse yellow")
    if live_keys and not compact:
        header.append("  q quits", style="dim")
    header.truncate(width, overflow="ellipsis")

    quota = _quota_lines(frame, width) if frame is not None else []
    if frame is None or not frame.sessions:
        if missing:
            msg = f"no database yet{f' at {db_path}' if db_path else ''}: {EMPTY_HINT}"
        elif frame is not None and frame.window_minutes is not None:
            msg = (f"no active sessions in the last {frame.window_minutes:g} min: {EMPTY_HINT}; "
                   "`--all` includes older sessions")
        else:
            msg = f"no sessions recorded yet: {EMPTY_HINT}"
        return Group(header, Text(""), Text(msg, style="dim"), *quota)

    wide = width >= 140
    rows = frame.sessions
    hidden: list[SessionRow] = []
    if height is not None:
        room = max(1, height - 5 - len(quota))  # header, blank, column titles, totals, the "more" line, quota
        if len(rows) > room:
            rows, hidden = rows[: room - 1], rows[room - 1 :]
    cells = [_cells(r, frame.at, wide) for r in rows]

    order, natural, reason_width = table_layout(cells, width)

    table = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, show_edge=False,
                  header_style="bold", width=width, expand=False)
    for key, title, _ in order:
        if key == "ctx" and natural["ctx"] == 4:
            title = "ctx"
        w = reason_width if key == "reason" else natural[key]
        table.add_column(title, justify="right" if key in _RIGHT else "left", no_wrap=True, overflow="ellipsis",
                         width=w, min_width=w, max_width=w)
    for c in cells:
        values = []
        for key, _, _ in order:
            v = c[key]
            if key == "ctx":
                v = fill_bar(v, natural["ctx"])
            values.append(v)
        table.add_row(*values)

    totals = totals_line(frame, width)
    parts: list[Any] = [header, Text(""), table]
    if hidden:
        counts: dict[str, int] = {}
        for r in hidden:
            counts[r.status] = counts.get(r.status, 0) + 1
        desc = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0]))
        more = Text(f"… {len(hidden)} more sessions ({desc})", style="dim")
        more.truncate(width, overflow="ellipsis")
        parts.append(more)
    parts.append(totals)
    parts.extend(quota)
    return Group(*parts)


# --------------------------------------------------------------------------------------------
# watch / top
# --------------------------------------------------------------------------------------------


class _Reader:
    """Frames for the live loop: never raises, keeps the last good frame when the database is
    busy or unreadable, and says so in `note`."""

    def __init__(self, path: Path, at: datetime | None, window: float | None) -> None:
        self.path, self.at, self.window = path, at, window
        self.frame: Frame | None = None
        self.note: str | None = None
        self.missing = False

    def refresh(self) -> None:
        from llmsm.analytics.dashboard import read_frame
        from llmsm.analytics.store import DatabaseBusy, DatabaseMissing, StoreError

        try:
            self.frame = read_frame(self.path, at=self.at, window_minutes=self.window, timeout=0.25, previous=self.frame)
            self.note, self.missing = None, False
        except DatabaseMissing:
            self.frame, self.note, self.missing = None, None, True
        except DatabaseBusy:
            self.note = "db busy" + (f": showing {_local(self.frame.at, datetime.now(UTC))}" if self.frame else "")
        except StoreError as exc:
            self.note = str(exc)
        except Exception as exc:  # a live dashboard must not die on one bad refresh
            self.note = f"error: {type(exc).__name__}: {exc}"


def watch(
    db: DbOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (for scripts and tests).")] = False,
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds between refreshes.", min=0.1)] = 1.0,
    all_sessions: AllOption = False,
    at: AtOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --once: print the frame's data as JSON.")] = False,
) -> None:
    """Live dashboard of the assistant sessions: which one needs attention, and why.

    One row per session seen within the last 60 minutes (every session with --all), the most urgent first (critical, then degraded, then by score, then by recent activity): health and its main reason (a budget past its warning threshold is marked in front of it: "$92%", yellow, red when exceeded), context fill of the last turn against the model's window, last activity, tokens in (whole prompts, cache included) and out, cost where prices are known, burn rate (tokens per minute over the last 10 minutes), requests, errors, model, age, client. Narrow terminals keep the columns that decide. Under the totals: the most used quota window of each account ("5h window 72% used, resets 14:05"), windows that have reset since left out. Budgets that apply to a session (its id, label, client, the day budget) feed its health: the tightest one, with minutes left at the recent pace.

    On a terminal it is a full-screen app (docs/watch.md): arrows or j/k move, Enter opens the session's screen (its timeline, a chart of context fill per turn with the window and the compaction points, tokens or cost per turn, health reasons with advice, the digest), Esc goes back; s (or a click on a column title) sorts by health, cost, burn or last activity; / filters by project, client, label or status; h hands the session off (the brief; w writes it to a file, s starts the fresh session, the command in LLMSM_HANDOFF_COMMAND when set); b sets or raises its budget (dollars, or tokens with a suffix: 500k); n keeps a note for its project; ? lists the keys; q quits.

    Refreshes every --interval seconds; the database is opened read-only for each refresh and closed right after, so the gateway keeps writing (when it is busy, the last frame stays with a "db busy" note). --once prints one frame (--json: its data) and exits; so does a stdout that is not a terminal.
    """
    from llmsm.analytics.store import DatabaseMissing, StoreError

    path = resolve_db(db)
    when = _at_or_fail(at)
    window = None if all_sessions else 60.0
    if once or as_json or not console.is_terminal:
        from llmsm.analytics.dashboard import read_frame

        frame = None
        missing = False
        try:
            frame = read_frame(path, at=when, window_minutes=window, timeout=5.0)
        except DatabaseMissing:
            missing = True
        except StoreError as exc:
            fail(str(exc))
        if as_json:
            if frame is None:
                from llmsm.analytics.dashboard import Frame

                frame = Frame(at=when or datetime.now(UTC), live=when is None, window_minutes=window)
            print_json(frame.to_dict())
            return
        console.print(render_frame(frame, width=console.width, note=None, db_path=path, missing=missing))
        return
    from llmsm.cli.tui import run_app  # Textual is imported only here

    run_app(path, at=when, window=window, interval=interval)


# --------------------------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------------------------


def resolve_session(con: Any, ref: str, at: datetime | None) -> str:
    """The one session `ref` names (id, unique id prefix or label), or fail() listing candidates."""
    from llmsm.analytics.dashboard import find_sessions

    found = find_sessions(con, ref, at=at)
    if not found:
        fail(f"no session matches {ref!r} (an id, a unique prefix of one, or a label; see `llmsm sessions`)")
    if len(found) == 1:
        return found[0]["session_id"]
    if found[0]["how"] == "label":
        err_console.print(f"note: label {ref!r} names {len(found)} sessions; showing the latest "
                          f"({found[0]['session_id']})", style="dim", highlight=False, soft_wrap=True)
        return found[0]["session_id"]
    now = at or datetime.now(UTC)
    lines = [f"{ref!r} is ambiguous: it starts {len(found)} session ids; give more of the id:"]
    for f in found[:10]:
        label = f" ({f['label']})" if f["label"] else ""
        lines.append(f"  {f['session_id']}{label}  last seen {_age(f['last_seen'], now)} ago, {f['requests']} requests")
    if len(found) > 10:
        lines.append(f"  ... and {len(found) - 10} more")
    fail("\n".join(lines))


def show(
    session: Annotated[str, typer.Argument(help="Session id, a unique prefix of one, or its label.", show_default=False)],
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Requests in the timeline (the latest).", min=1)] = 50,
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """One session's story: its requests, context fill per turn, errors and health breakdown.

    Who and where (client, models, the `llmsm run` command, directory and branch), the timeline of its latest requests (--limit), context fill per turn as a sparkline, its errors, the budgets that apply (used of the limit, state, time left at the recent pace), and the health breakdown: score, reasons with advice, forecasts such as turns left.

    SESSION is a full id, a unique prefix of one, or a label (the latest session with that label).
    """
    from llmsm.analytics.dashboard import load_session
    from llmsm.analytics.store import StoreError, open_db

    path = resolve_db(db)
    when = _at_or_fail(at)
    try:
        with open_db(path) as con:
            sid = resolve_session(con, session, when)
            detail = load_session(con, sid, at=when, limit=limit)
    except StoreError as exc:
        fail(str(exc))
    if detail is None:
        fail(f"session {sid} has no requests before {when}")
    if as_json:
        print_json(detail.to_dict())
        return
    console.print(render_session(detail, width=console.width, live=when is None))


def _health_block(row: SessionRow, width: int) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    h = row.health
    out: list[Any] = []
    title = Text("health ", style="bold")
    if h is None:
        return [title]
    title.append(f"{h.status}", style=STATUS_STYLE.get(h.status, ""))
    title.append(f"  {h.score}/100")
    out.append(title)
    if not h.reasons:
        out.append(Text("  nothing to act on", style="dim"))
    else:
        table = Table(box=None, padding=(0, 1), show_header=False, pad_edge=False, expand=False)
        table.add_column("sev", no_wrap=True)
        table.add_column("pen", justify="right", no_wrap=True)
        table.add_column("what", overflow="fold")
        for r in h.reasons:
            what = Text(r.message, style=SEVERITY_STYLE.get(r.severity, ""))
            what.append(f"\n→ {r.advice}", style="")
            table.add_row(Text(r.severity, style=SEVERITY_STYLE.get(r.severity, "")), f"-{r.penalty}", what)
        out.append(table)
    facts = []
    if h.context_tokens is not None:
        ctx = f"context {human_tokens(h.context_tokens)}"
        if h.context_window:
            ctx += f" of {human_tokens(h.context_window)} ({(h.context_fill or 0):.0%})"
        facts.append(ctx)
    if h.growth_per_turn:
        facts.append(f"+{human_tokens(int(h.growth_per_turn))}/turn")
    if h.turns_left is not None:
        facts.append(f"~{h.turns_left} turns left")
    if h.compactions:
        facts.append(f"{h.compactions} compaction{'s' if h.compactions != 1 else ''}")
    facts.append(f"{h.turns_since_compaction} turns since {'compaction' if h.compactions else 'start'}")
    if h.idle_seconds is not None:
        ttl = f" (cache TTL {h.cache_ttl_seconds / 60:.0f} min{', cold' if h.cache_cold else ''})" if h.cache_ttl_seconds else ""
        facts.append(f"idle {_age_s(h.idle_seconds)}{ttl}")
    if h.cache_read_share is not None:
        facts.append(f"cache hits {h.cache_read_share:.0%}")
    if h.ttft_recent_ms is not None and h.ttft_early_ms is not None:
        facts.append(f"ttft {_ms(h.ttft_early_ms)} → {_ms(h.ttft_recent_ms)}")
    if h.budget_minutes_left is not None:
        facts.append(f"budget ~{h.budget_minutes_left:.0f} min left")
    out.append(Text("  " + " · ".join(facts), style="dim"))
    return out


def _age_s(seconds: float) -> str:
    now = datetime.now(UTC)
    return _age(now - timedelta(seconds=seconds), now)


def render_session(detail: SessionDetail, *, width: int, live: bool = True) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    row, at = detail.row, detail.at
    parts: list[Any] = []
    title = Text(row.label or row.session_id, style="bold")
    if row.label:
        title.append(f"  {row.session_id}", style="dim")
    title.append(f"  {row.state}", style=STATE_STYLE.get(row.state, "") or "")
    if not live:
        title.append(f"  as of {at.astimezone():%Y-%m-%d %H:%M:%S}", style="magenta")
    parts.append(title)

    info = Table(box=None, padding=(0, 1), show_header=False, pad_edge=False)
    info.add_column(style="bold", no_wrap=True)
    info.add_column(overflow="fold")
    client = (row.client or "unknown") + (f" {row.client_version}" if row.client_version else "")
    info.add_row("client", client)
    info.add_row("models", ", ".join(row.models) or (row.model or ""))
    info.add_row("seen", f"{_local(row.first_seen, at)} → {_local(row.last_seen, at)}  "
                         f"(for {_age(row.first_seen, row.last_seen or at)}, last {_age(row.last_seen, at)} ago)")
    if row.project:
        info.add_row("project", row.project)
    if row.parent_session:
        info.add_row("parent", f"{row.parent_session}  (handed off from it)")
    if row.command or row.cwd or row.git_branch:
        run = " · ".join(x for x in (row.command, row.cwd and f"in {row.cwd}", row.git_branch and f"branch {row.git_branch}") if x)
        info.add_row("run", run)
    usage = (f"{row.requests} requests ({row.errors} failed) · in {human_tokens(row.input_tokens)} · "
             f"out {human_tokens(row.output_tokens)} · cache read {human_tokens(row.cache_read_tokens)} / "
             f"write {human_tokens(row.cache_write_tokens)}")
    if row.cost_usd is not None:
        usage += f" · {_cost(row.cost_usd)}"
    info.add_row("usage", usage)
    parts.append(info)

    # timeline
    parts.append(Text(""))
    shown = len(detail.timeline)
    parts.append(Text(f"timeline (last {shown} of {row.requests + _others(detail)} requests)" if shown else "timeline: empty",
                      style="bold"))
    if detail.timeline:
        narrow = width < 100
        tl = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, header_style="bold")
        cols = [("time", "left"), ("model", "left"), ("api", "left"), ("in", "right"), ("out", "right"),
                ("cache r/w", "right"), ("ttft", "right"), ("dur", "right"), ("status", "left")]
        if narrow:
            cols = [c for c in cols if c[0] not in ("api", "cache r/w")]
        for name, justify in cols:
            tl.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                          max_width=18 if name == "model" and narrow else None)
        for ev in detail.timeline:
            failed = ev["outcome"] != "ok" or (ev["status_code"] or 0) >= 400
            status = str(ev["status_code"] or "")
            if ev["outcome"] != "ok":
                status += f" {ev['outcome']}"
            elif ev.get("stop_reason"):
                status += f" {ev['stop_reason']}"
            if ev.get("agent_id"):
                status += " (agent)"
            model = short_model(ev["model"] or ev["requested_model"])
            vals = {
                "time": _local(ev["started_at"], at),
                "model": model,
                "api": ev["api"],
                "in": human_tokens(ev["input_tokens"]) if ev["input_tokens"] is not None else "",
                "out": human_tokens(ev["output_tokens"]) if ev["output_tokens"] is not None else "",
                "cache r/w": (f"{human_tokens(ev['cache_read_tokens'])}/{human_tokens(ev['cache_write_tokens'])}"
                              if ev["cache_read_tokens"] is not None or ev["cache_write_tokens"] is not None else ""),
                "ttft": _ms(ev["ttft_ms"]),
                "dur": _ms(ev["duration_ms"]),
                "status": status,
            }
            style = "red" if failed else ("dim" if ev["api"] not in TURN_APIS else None)
            tl.add_row(*(vals[c[0]] for c in cols), style=style)
        parts.append(tl)

    # context per turn
    ctx = [c for c in detail.context if c["fill"] is not None]
    if ctx:
        main = [c for c in ctx if c["agent_id"] is None] or ctx
        fills = [c["fill"] for c in main]
        spark_width = max(10, width - 40)
        line = Text("context ", style="bold")
        line.append(sparkline(fills, spark_width), style=fill_style(fills[-1]))
        line.append(f"  {fills[0]:.0%} → {fills[-1]:.0%} over {min(len(fills), spark_width)} turns"
                    f" (window {human_tokens(main[-1]['context_window'])})", style="dim")
        parts.append(Text(""))
        parts.append(line)

    # errors
    parts.append(Text(""))
    if detail.errors:
        parts.append(Text(f"errors ({detail.error_count} in total, latest {len(detail.errors)})", style="bold"))
        et = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, show_header=False)
        et.add_column(no_wrap=True)
        et.add_column(no_wrap=True, style="red")
        et.add_column(overflow="ellipsis", no_wrap=True)
        for e in detail.errors:
            what = " ".join(x for x in (e["error_type"], e["error_message"]) if x) or e["outcome"]
            et.add_row(_local(e["started_at"], at), f"{e['status_code'] or ''} {e['outcome']}".strip(), what)
        parts.append(et)
    else:
        parts.append(Text("errors: none", style="dim"))

    parts.append(Text(""))
    parts.extend(_budget_block(row))
    parts.append(Text(""))
    parts.extend(_health_block(row, width))
    return Group(*parts)


def _amounts(b: dict[str, Any]) -> str:
    out = []
    if b.get("max_tokens") is not None:
        out.append(f"{int(b['used_tokens'] or 0):,} of {int(b['max_tokens']):,} tokens")
    if b.get("max_usd") is not None:
        out.append(f"${float(b['used_usd'] or 0):,.2f} of ${float(b['max_usd']):,.2f}")
    return ", ".join(out)


def _budget_block(row: SessionRow) -> list[Any]:
    """The budgets that apply to the session (its id, label, client, the day): used of the
    limit, the share, the state, and the time left at the recent pace."""
    from rich.table import Table
    from rich.text import Text

    if not row.budgets:
        return [Text("budgets: none (llmsm budget set)", style="dim")]
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=False, expand=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="dim")
    for b in row.budgets:
        who = "day" if b["scope"] == "day" else f"{b['scope']} {b['target']}"
        left = b.get("minutes_left")
        pace = ""
        if left is not None:
            pace = f"~{left:.0f} min left" if left < 90 else f"~{left / 60:.1f} h left"
        style = BUDGET_STYLE.get(b["state"], "")
        table.add_row(f"{who} ({b['id']})", _amounts(b), Text(_pct(b["pct"]), style=style), Text(b["state"], style=style), pace)
    return [Text(f"budgets ({len(row.budgets)})", style="bold"), table]


def _others(detail: SessionDetail) -> int:
    """Rows of the timeline that are not API calls (preflights): `requests` does not count them."""
    return sum(1 for e in detail.timeline if e["api"] == "other") if len(detail.timeline) >= detail.row.requests else 0


# --------------------------------------------------------------------------------------------
# health
# --------------------------------------------------------------------------------------------


def health(
    session: Annotated[str | None, typer.Argument(help="One session (id, unique prefix or label); default: all recent.",
                                                  show_default=False)] = None,
    db: DbOption = None,
    all_sessions: AllOption = False,
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """Health of the recent sessions, or of one: score, status, reasons; exit code 2 if any is critical.

    Score 0-100, status (healthy / degraded / critical) and reasons with advice, for the sessions seen within the last 60 minutes (every session with --all) or for one SESSION (id, unique prefix or label).

    Exit code: 2 when any session shown is critical, 0 otherwise, 1 on errors, so scripts and status lines can react: `llmsm health >/dev/null; [ $? = 2 ] && notify-send "llmsm: a session needs attention"`. --json prints a list of the health model's output per session, with session_id and label.
    """
    from llmsm.analytics.dashboard import load_frame
    from llmsm.analytics.store import DatabaseMissing, StoreError, open_db

    path = resolve_db(db)
    when = _at_or_fail(at)
    if session is None:
        from llmsm.analytics.dashboard import read_frame

        try:
            frame = read_frame(path, at=when, window_minutes=None if all_sessions else 60.0, timeout=5.0)
            rows = frame.sessions
        except DatabaseMissing:
            rows = []
        except StoreError as exc:
            fail(str(exc))
    else:
        try:
            with open_db(path) as con:
                sid = resolve_session(con, session, when)
                rows = load_frame(con, at=when, session_ids=[sid]).sessions
        except StoreError as exc:
            fail(str(exc))
    critical = any(r.status == "critical" for r in rows)
    if as_json:
        out = []
        for r in rows:
            d = r.health.to_dict() if r.health is not None else {}
            d.update(session_id=r.session_id, label=r.label, client=r.client, state=r.state, last_seen=r.last_seen)
            out.append(d)
        print_json(out)
    elif not rows:
        console.print(f"no sessions in the last 60 minutes: {EMPTY_HINT}" if session is None and not all_sessions
                      else f"no sessions recorded yet: {EMPTY_HINT}", style="dim", highlight=False, soft_wrap=True)
    elif session is not None:
        from rich.console import Group

        console.print(Group(_health_title(rows[0]), *_health_block(rows[0], console.width)))
    else:
        console.print(render_health(rows, width=console.width))
    if critical:
        raise typer.Exit(2)


def _health_title(row: SessionRow) -> Text:
    from rich.text import Text

    t = Text(row.label or row.session_id, style="bold")
    if row.label:
        t.append(f"  {row.session_id}", style="dim")
    t.append(f"  {row.state}")
    return t


def render_health(rows: list[SessionRow], *, width: int) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    narrow = width < 100
    table = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, header_style="bold")
    table.add_column("session", no_wrap=True, overflow="ellipsis", min_width=8, max_width=14 if narrow else 28)
    table.add_column("health", no_wrap=True, min_width=8)
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    table.add_column("ctx", justify="right", no_wrap=True, min_width=4)
    table.add_column("reasons", overflow="fold" if not narrow else "ellipsis", no_wrap=narrow)
    for r in rows:
        h = r.health
        reasons = Text()
        if h is not None:
            for i, reason in enumerate(h.reasons[: 1 if narrow else 3]):
                if i:
                    reasons.append("\n")
                reasons.append(reason.message, style=SEVERITY_STYLE.get(reason.severity, ""))
            if narrow and len(h.reasons) > 1:
                reasons.append(f" (+{len(h.reasons) - 1})", style="dim")
        fill = r.context_fill
        table.add_row(
            Text(r.label or r.session_id[:12], style=STATE_STYLE.get(r.state, "")),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            str(r.score),
            Text(f"{fill:.0%}" if fill is not None else "-", style=fill_style(fill)),
            reasons,
        )
    return table


# --------------------------------------------------------------------------------------------
# statusline
# --------------------------------------------------------------------------------------------

STATUSLINE_HELP = """One short line for a status bar: active sessions, the worst one's health, today's tokens and cost, the most used quota window, a budget running out.

    llmsm 3 active · worst: refactor degraded (context 87%) · today 1.2M tok $4.31 · 5h 72% · budget 92%

"Active" means a request within the last 5 minutes. The worst session is picked among those seen within the last hour by a quick check: the health model's context fill, recent errors and cold prompt cache, with its thresholds, so its status and reason are those `llmsm health` gives when nothing else weighs (the full model is `llmsm health`). Today is the local calendar day. "5h 72%": the most used quota window of any account that has not reset since it was seen (`llmsm quota`). "budget 92%": the tightest budget past its warning threshold that applies to a session of the last hour, or the day budget (`llmsm budget list`). Two small queries, no heavy imports; it never fails: a missing or busy database prints a short neutral line and exits 0. Colour only when stdout is a terminal and NO_COLOR is unset.

Claude Code, in ~/.claude/settings.json (it runs the command after each message):

    {"statusLine": {"type": "command", "command": "llmsm statusline"}}

There Claude Code writes its session's JSON (session_id, cwd, model, …) to standard input, and the line speaks of that session: its label, context fill of its window, health and its top reason, cost and burn rate, its budget, and its share of the quota window:

    llmsm refactor · ctx 86% · critical (context 86%) · $38.65 $6.30/h · budget 31% · 5h 46% (this 6%)

It reads only the small status file the gateway keeps per session (docs/statusline.md), so it costs no database work; without that JSON, or before the gateway has a file for the session, it prints the line above.

tmux, in ~/.tmux.conf:

    set -g status-right '#(llmsm statusline)'
    set -g status-interval 5

Use --db (or LLMSM_DB) when the gateway records into another database. Faster still (no CLI start-up, same line): PYTHON -m llmsm.cli.statusline [--db PATH], where PYTHON is the interpreter llmsm is installed in.
"""


def statusline(db: DbOption = None) -> None:
    # `llmsm statusline` normally never gets here (cli/entry.py answers it before typer loads);
    # this is the same line for `python -m llmsm.cli.main statusline`.
    from llmsm.cli.statusline import main

    raise typer.Exit(main(["--db", str(resolve_db(db))]))


statusline.__doc__ = STATUSLINE_HELP


# --------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
    app.command("top", help="Alias of `llmsm watch`: the live dashboard of sessions.")(watch)
    app.command("show")(show)
    app.command("health")(health)
    app.command("statusline")(statusline)
