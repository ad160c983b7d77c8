"""`llmsm cost`, `llmsm budget set|list|rm`, `llmsm quota`.

Costs are computed per request by the gateway (analytics/prices.py); this module adds them up.
Budgets are rows of the `budgets` table that a running gateway picks up within about a second
(addons/budget_guard.py). Quota windows come from the `quota` view (analytics/quota.py).
See docs/cost.md.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from rich.markup import escape

from llmsm.analytics import costs, timespec
from llmsm.cli.common import DbOption, JsonOption, console, err_console, fail, print_json, resolve_db
from llmsm.cli.format import human_tokens, human_usd


def register(app: typer.Typer) -> None:
    app.command("cost", help="Cost totals (USD) with tokens, by session, model, client or day; lists unpriced models.")(cost)
    budget_app = typer.Typer(
        name="budget",
        help="Token or USD budgets per session, label, client or day, enforced by the running gateway.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    budget_app.command("set", help="Create a budget, or change the limits of the one with the same scope.")(budget_set)
    budget_app.command("list", help="Every budget with what it has used so far.")(budget_list)
    budget_app.command("rm", help="Remove a budget: by the id `llmsm budget list` shows, or by the scope it was set with (--label NAME, ...).")(budget_rm)
    app.add_typer(budget_app)
    app.command("quota", help="Provider quota windows per account: used %, remaining, resets at.")(quota)


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def usd(value: float | None) -> str:
    return human_usd(value, missing="n/a")


def _read(db, query):
    """`query(con)` on a read-only connection; [] when there is no database yet; one clear
    error line when the database or the query fails."""
    from llmsm.analytics.store import StoreError, open_db

    try:
        with open_db(resolve_db(db), missing_ok=True) as con:
            return query(con) if con is not None else []
    except StoreError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------------------------
# llmsm cost
# --------------------------------------------------------------------------------------------


By = Enum("By", {name: name for name in costs.GROUPINGS}, type=str)  # --by: session, model, client, day


def cost(
    by: Annotated[By, typer.Option("--by", help="Group by session, model, client or day (local date).")] = By.model,
    since: Annotated[str | None, typer.Option("--since", help=timespec.SINCE_HELP, show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help=timespec.UNTIL_HELP, show_default=False)] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    from llmsm.analytics.store import StoreError, open_db

    try:
        s, u = timespec.parse_period(since, until)
        with open_db(resolve_db(db), missing_ok=True) as con:
            data = costs.cost_report(con, by.value, s, u)
    except (StoreError, timespec.BadTime) as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        if data["unpriced_models"]:
            _warn_unpriced(data["unpriced_models"], err_console)
        return
    _render_cost(data)


def _warn_unpriced(unpriced: list[dict], out) -> None:
    from llmsm.analytics.prices import default_overrides_path

    n = sum(u["requests"] for u in unpriced)
    out.print(
        f"[yellow]warning:[/] {n} request(s) with usage have no price, so their cost is unknown "
        "(left out of the totals, not counted as $0):",
        markup=True, soft_wrap=True,
    )
    for u in unpriced:
        out.print(
            f"  {u['model']} ({u['provider'] or '?'}): {u['requests']} request(s), {human_tokens(u['total_tokens'])} tokens",
            markup=False, soft_wrap=True,
        )
    out.print(f"  add their prices in {default_overrides_path()} (see docs/cost.md)", markup=False, soft_wrap=True)


def _render_cost(data: dict) -> None:
    from rich.table import Table

    rows = data["rows"]
    by = data["by"]
    if not rows:
        console.print("no requests in this period")
        return
    table = Table(header_style="bold", box=None, pad_edge=False, show_footer=True)
    extra = {"session": "label", "model": "provider"}.get(by)
    total = data["total"] or {}
    # On a narrow screen the names give way (cut with …), never the figures: rich narrows only
    # columns that may wrap, and a name too long for its column is cut rather than wrapped.
    table.add_column(by, "total", overflow="ellipsis", max_width=40)
    if extra:
        table.add_column(extra, "", overflow="ellipsis", max_width=24)
    for name, key in (("req", "requests"), ("input", "input_tokens"), ("output", "output_tokens"),
                      ("cache r", "cache_read_tokens"), ("cache w", "cache_write_tokens"), ("tokens", "total_tokens")):
        table.add_column(name, str(total.get(key, "")) if key == "requests" else human_tokens(total.get(key)),
                         justify="right", no_wrap=True)
    table.add_column("cost", _cost_cell(total) if total else "", justify="right", no_wrap=True)
    partial = False
    for r in rows:
        cells = [escape(str(r[by]))]
        if extra:
            cells.append(escape(str(r.get(extra) or "")))
        cells += [str(r["requests"]), human_tokens(r["input_tokens"]), human_tokens(r["output_tokens"]),
                  human_tokens(r["cache_read_tokens"]), human_tokens(r["cache_write_tokens"]), human_tokens(r["total_tokens"])]
        cell = _cost_cell(r)
        partial = partial or cell.endswith("+")
        cells.append(cell)
        table.add_row(*cells)
    console.print(table)
    if partial or data["unpriced_models"]:
        console.print("n/a: no price known; +: some requests of the row have no price (not counted as $0)", style="dim")
    if data["unpriced_models"]:
        _warn_unpriced(data["unpriced_models"], console)


def _cost_cell(r: dict) -> str:
    if r.get("cost_usd") is None:
        return "n/a" if r.get("total_tokens") else usd(0.0)
    return usd(r["cost_usd"]) + ("+" if r.get("unpriced_requests") else "")


# --------------------------------------------------------------------------------------------
# llmsm budget set | list | rm
# --------------------------------------------------------------------------------------------


# The scope options, the same for `budget set` and `budget rm`.
SessionScope = Annotated[str | None, typer.Option("--session", help="A session id (or a unique prefix of one).", show_default=False)]
LabelScope = Annotated[str | None, typer.Option("--label", help="Every session with this label.", show_default=False)]
ClientScope = Annotated[str | None, typer.Option("--client", help="Every request of this client (claude-code, codex, ...).", show_default=False)]
DayScope = Annotated[bool, typer.Option("--day", help="Every request of the day (local date; starts again at midnight).")]


def _one_scope(session: str | None, label: str | None, client: str | None, day: bool) -> tuple[str, str | None]:
    """(scope, target) of the one scope option given; a clear error otherwise."""
    scopes = [(s, v) for s, v in (("session", session), ("label", label), ("client", client)) if v is not None]
    if day:
        scopes.append(("day", None))
    if len(scopes) != 1:
        fail("give exactly one of --session ID, --label NAME, --client NAME or --day")
    scope, target = scopes[0]
    if scope != "day" and not (target or "").strip():
        fail(f"--{scope} needs a name")
    return scope, target.strip() if target is not None else None


def budget_limits(tokens: str | None, usd_limit: str | None, warn_at: str | None) -> tuple[int | None, float | None, float | None]:
    """The limits `budget set` was given (local or --team), read by analytics/budgets.py; a
    missing or malformed one ends the command with its error."""
    from llmsm.analytics import budgets

    if tokens is None and usd_limit is None:
        fail("give a limit: --tokens N or --usd X (or both)")
    try:
        return (budgets.parse_tokens(tokens) if tokens is not None else None,
                budgets.parse_usd(usd_limit) if usd_limit is not None else None,
                budgets.parse_warn_at(warn_at) if warn_at is not None else None)
    except ValueError as exc:
        fail(str(exc))


def budget_set(
    session: SessionScope = None,
    label: LabelScope = None,
    client: ClientScope = None,
    day: DayScope = False,
    tokens: Annotated[str | None, typer.Option("--tokens", help="Token limit (every kind counts): 2000000, 2M, 500k.", show_default=False)] = None,
    usd_limit: Annotated[str | None, typer.Option("--usd", help="USD limit: 20, 2.50.", show_default=False)] = None,
    warn_at: Annotated[str | None, typer.Option("--warn-at", help="Warn from this share on: 80% or 0.8 (default: 80%).", show_default=False)] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    team: Annotated[bool, typer.Option("--team", help="A team budget, kept in the team database (--team-db): with --developer, --project or --all, and --day or --month.")] = False,
    developer: Annotated[str | None, typer.Option("--developer", help="With --team: one developer.", show_default=False)] = None,
    project: Annotated[str | None, typer.Option("--project", help="With --team: one project.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="With --team: the whole team.")] = False,
    month: Annotated[bool, typer.Option("--month", help="With --team: per calendar month (the default).")] = False,
    team_db: Annotated[str | None, typer.Option("--team-db", envvar="LLMSM_TEAM_DB", help="With --team: the team database URL.", show_default=False)] = None,
) -> None:
    from llmsm.analytics import budgets

    if team or developer or project or all_ or month:
        from llmsm.cli.team import team_budget_set

        if session or label or client:
            fail("--team budgets are per --developer, --project or --all")
        return team_budget_set(team_db, developer, project, all_, day, month, tokens, usd_limit, warn_at, as_json)
    scope, target = _one_scope(session, label, client, day)
    max_tokens, max_usd, warn = budget_limits(tokens, usd_limit, warn_at)
    from llmsm.analytics.store import StoreError, open_db

    try:
        with open_db(resolve_db(db), write=True, timeout=10.0) as con:
            if scope == "session":
                target = _resolve_session(con, target.strip())
            elif target is not None:
                target = target.strip()
            budget, created = budgets.set_budget(con, scope, target, max_tokens=max_tokens, max_usd=max_usd, warn_at=warn)
            row = next((r for r in budgets.status(con) if r["id"] == budget.id), None)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(dict(row or {}, created=created))
        return
    verb = "set" if created else "updated"
    console.print(
        f"budget {budget.id} {verb}: {budget.describe()}, {_limits(budget.max_tokens, budget.max_usd)} "
        f"(warn at {budget.warn_at:.0%})",
        markup=False, soft_wrap=True,
    )
    if row is not None:
        console.print(f"used so far: {_used(row)} ({_pct(row['pct'])}, {row['state']})", markup=False)
    console.print("a running gateway applies it within a second", style="dim")


def _resolve_session(con, target: str) -> str:
    """An exact session id as given; else the one session id starting with it."""
    from llmsm.analytics.budgets import session_ids_starting_with

    ids = session_ids_starting_with(con, target)
    if target in ids or not ids:
        return target
    if len(ids) == 1:
        return ids[0]
    fail(f"--session {target!r} matches several sessions; give more of the id")


def _limits(max_tokens, max_usd, *, short: bool = False) -> str:
    parts = []
    if max_tokens is not None:
        parts.append(f"{human_tokens(max_tokens)} tok" if short else f"{max_tokens:,} tokens")
    if max_usd is not None:
        parts.append(usd(max_usd))
    return " / ".join(parts)


def _used(row: dict, *, short: bool = False) -> str:
    parts = []
    if row["max_tokens"] is not None:
        parts.append(f"{human_tokens(row['used_tokens'])} tok" if short else f"{row['used_tokens']:,} tokens")
    if row["max_usd"] is not None:
        parts.append(usd(row["used_usd"]))
    return " / ".join(parts)


def _pct(pct: float | None) -> str:
    if pct is None:
        return ""
    if pct == float("inf"):
        return "∞%"
    return f"{pct:.0f}%"


STATE_STYLE = {"ok": "green", "warn": "yellow", "exceeded": "bold red"}


def budget_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    from llmsm.analytics import budgets

    rows: list[dict] = _read(db, budgets.status)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no budgets: add one with `llmsm budget set --label NAME --usd 20`")
        return
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False)
    for col, justify in (("id", "left"), ("scope", "left"), ("target", "left"), ("limit", "right"),
                         ("used", "right"), ("%", "right"), ("warn", "right"), ("state", "left")):
        table.add_column(col, justify=justify, no_wrap=True, overflow="ellipsis", max_width=30 if col == "target" else None)
    for r in rows:
        style = STATE_STYLE.get(r["state"], "")
        table.add_row(
            r["id"], r["scope"], escape(r["target"] or ("today" if r["scope"] == "day" else "")),
            _limits(r["max_tokens"], r["max_usd"], short=True), _used(r, short=True), _pct(r["pct"]), f"{r['warn_at']:.0%}",
            f"[{style}]{r['state']}[/]",
        )
    console.print(table)


def budget_rm(
    budget_id: Annotated[str | None, typer.Argument(metavar="ID", help="The budget id (or a unique prefix).", show_default=False)] = None,
    session: SessionScope = None,
    label: LabelScope = None,
    client: ClientScope = None,
    day: DayScope = False,
    db: DbOption = None,
) -> None:
    from llmsm.analytics import budgets
    from llmsm.analytics.store import StoreError, open_db

    scoped = day or any(v is not None for v in (session, label, client))
    if budget_id is not None and scoped:
        fail("give a budget ID or a scope (--session, --label, --client, --day), not both")
    if budget_id is None and not scoped:
        fail("give a budget ID, or the scope it was set with: --session ID, --label NAME, --client NAME or --day")
    scope = _one_scope(session, label, client, day) if scoped else None
    try:
        with open_db(resolve_db(db), write=True, timeout=10.0) as con:
            removed = budgets.remove_budget(con, budget_id) if scope is None else budgets.remove_scoped_budget(con, *scope)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    if removed is None:
        what = repr(budget_id) if scope is None else "for " + budgets.Budget("", *scope).option()
        fail(f"no budget {what} (see `llmsm budget list`)")
    console.print(f"removed budget {removed.id} ({removed.describe()}); a running gateway lifts it within a second", markup=False)


# --------------------------------------------------------------------------------------------
# llmsm quota
# --------------------------------------------------------------------------------------------


class QuotaBy(str, Enum):
    session = "session"


QuotaByOption = Annotated[
    QuotaBy | None,
    typer.Option("--by", help="session: each session's share of each subscription window (5h, 7d, Codex windows)."),
]


def quota(by: QuotaByOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    from llmsm.analytics.quota import quota_summary

    if by is QuotaBy.session:
        return quota_by_session(db, as_json)
    rows: list[dict] = _read(db, quota_summary)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no quota headers seen yet: they arrive with the providers' responses through `llmsm proxy`", soft_wrap=True)
        return
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("account", no_wrap=True)
    table.add_column("provider", no_wrap=True)
    table.add_column("quota window", overflow="fold")
    for r in rows:
        pct = r["used_pct"]
        style = "dim" if r["stale"] else "red" if pct is not None and pct >= 90 else "yellow" if pct is not None and pct >= 70 else ""
        text = f"[{style}]{escape(r['text'])}[/]" if style else escape(r["text"])
        table.add_row(escape(r["account"] or "(none)"), r["provider"] or "", text)
    console.print(table)


def quota_by_session(db, as_json: bool) -> None:
    """`llmsm quota --by session`: per account and window, who used how much of it (analytics/quota_share.py)."""
    from llmsm.analytics.quota import clock
    from llmsm.analytics.quota_share import quota_shares

    rows: list[dict] = _read(db, quota_shares)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no subscription window headers seen yet (Anthropic unified 5h/7d, Codex windows): they arrive "
                      "with the responses through `llmsm proxy`", soft_wrap=True)
        return
    from datetime import datetime, timezone

    from rich.table import Table

    now = datetime.now(timezone.utc)
    estimated = False
    # One heading line per account and window, its sessions in a table under it: the numbers
    # keep their columns on a narrow terminal.
    for i, w in enumerate(rows):
        resets = w["resets_at"]
        head = f"{w['window']} {w['used_pct']:.0f}% used"
        if isinstance(resets, datetime):
            head += f", reset since {clock(resets, now)}" if w["stale"] else f", resets {clock(resets, now)}"
        console.print(("\n" if i else "") + f"[bold]{escape(w['account'] or '(no account)')}[/] · "
                      + (f"[dim]{escape(head)}[/]" if w["stale"] else escape(head)), highlight=False)
        table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1, 0, 2))
        table.add_column("session", overflow="ellipsis", ratio=2)
        table.add_column("client", overflow="ellipsis", ratio=1)
        table.add_column("share", justify="right", no_wrap=True, min_width=5)
        table.add_column("requests", justify="right", no_wrap=True, min_width=8)
        if w["baseline_pct"]:
            table.add_row("[dim](before llmsm)[/]", "", f"{w['baseline_pct']:.1f}", "")
        for s in w["sessions"]:
            mark = "~" if s["estimated"] else ""
            estimated = estimated or bool(mark)
            name = s["label"] or (s["session_id"] or "(no session)")
            table.add_row(escape(name), escape(s["client"] or ""), f"{s['share_pct']:.1f}{mark}", str(s["requests"]))
        console.print(table)
    console.print("share: percentage points of the window, from the change between consecutive responses of the account",
                  style="dim", highlight=False, markup=False)
    if estimated:
        console.print("~ an estimate: some of its requests overlapped another session's", style="dim", highlight=False, markup=False)
