"""`llmsm team status|push|report|sessions|prune`: the team database (docs/team.md).

The work is in `llmsm.analytics.team`; this module parses options, connects and renders. The
team database is found from --team-db or LLMSM_TEAM_DB (llmsm has no configuration file).
"""

from __future__ import annotations

import socket
import sys
from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from llmsm.cli.common import DbOption, JsonOption, console, fail, print_json, resolve_db

TeamDbOption = Annotated[
    str | None,
    typer.Option("--team-db", envvar="LLMSM_TEAM_DB", help="PostgreSQL URL of the team database.", show_default=False),
]
DeveloperOption = Annotated[
    str | None, typer.Option("--developer", envvar="LLMSM_DEVELOPER", help="Your name in the team database (default user@host).", show_default=False)
]
OnlyDeveloper = Annotated[str | None, typer.Option("--developer", help="Only this developer.", show_default=False)]
SinceOption = Annotated[str | None, typer.Option("--since", help="From (inclusive): 2026-11-01, 7d, today.", show_default=False)]
UntilOption = Annotated[str | None, typer.Option("--until", help="Up to (a date includes that day): 2026-11-30, yesterday.", show_default=False)]
UtcOption = Annotated[bool, typer.Option("--utc", help="Day boundaries in UTC instead of the local time zone.")]


def register(app: typer.Typer) -> None:
    team_app = typer.Typer(name="team", help="The team database: shipping status, push, team reports and sessions.",
                           no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
    team_app.command("status", help="How far shipping to the team database (and OTLP) is behind, and the last error.")(status)
    team_app.command("push", help="Ship every event not yet in the team database now.")(push)
    team_app.command("sessions", help="The team's sessions, most recent first.")(sessions)
    team_app.command("prune", help="Drop the team database's months older than a cutoff (whole partitions).")(prune)
    report_app = typer.Typer(name="report", help="Team usage per day, week, month, developer, project or model.",
                             no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
    for kind in ("daily", "weekly", "monthly", "developers", "projects", "models"):
        report_app.command(kind, help=f"Team usage: {kind}.")(_report_command(kind))
    team_app.add_typer(report_app, name="report")
    app.add_typer(team_app, name="team")


def _url(team_db: str | None) -> str:
    if not team_db:
        fail("no team database: give --team-db postgresql://... or set LLMSM_TEAM_DB")
    return team_db


def team_connect(team_db: str | None, *, read_only: bool = False):
    """The team database; `read_only` (reports, sessions): no migration, the tables must exist."""
    from llmsm.analytics.team.pg import TeamDbError, check_schema, connect

    url = _url(team_db)
    try:
        con = connect(url, migrate=not read_only)
        if read_only:
            try:
                check_schema(con, url)
            except BaseException:
                con.close()
                raise
        return con
    except TeamDbError as exc:
        fail(str(exc))


def _instant(text: str | None, option: str, *, end: bool, tz: str) -> datetime | None:
    """A time option read by the one time grammar (analytics/timespec.py), in the zone `tz`."""
    if text is None:
        return None
    from llmsm.analytics import timespec

    try:
        return timespec.parse_time(text, option=option, zone=timespec.zone_named(tz), end=end)
    except timespec.BadTime as exc:
        fail(str(exc))


def _zone(utc: bool) -> str:
    """UTC, or the local zone the local reports use (analytics/reports.py `local_timezone`:
    DuckDB's TimeZone, i.e. TZ or the system zone). Read without DuckDB when TZ or the
    /etc/localtime link names a zone Python knows (a team report need not load DuckDB);
    otherwise asked of DuckDB."""
    if utc:
        return "UTC"
    import os
    from zoneinfo import ZoneInfo

    name = os.environ.get("TZ", "").lstrip(":")
    if not name and "TZ" not in os.environ:
        try:
            link = os.readlink("/etc/localtime")
        except OSError:
            link = ""
        name = link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else ""
    if name and "/" in name or name in ("UTC", "GMT"):
        try:
            ZoneInfo(name)
            return name
        except Exception:
            pass
    import duckdb

    from llmsm.analytics.reports import local_timezone

    con = duckdb.connect(":memory:")
    try:
        return local_timezone(con)
    finally:
        con.close()


def status(team_db: TeamDbOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    from llmsm.analytics.store import StoreError, open_for_query
    from llmsm.analytics.team import ship

    path = resolve_db(db)
    try:
        con = open_for_query(path)
    except StoreError as exc:
        fail(str(exc))
    try:
        try:
            targets = ship.positions(con)
        except Exception:
            targets = []
        wanted = ship.redact_url(team_db) if team_db else None
        if wanted and wanted not in targets:
            targets.append(wanted)
        rows = []
        for t in targets:
            try:
                rows.append(ship.backlog(con, t))
            except Exception as exc:
                fail(f"cannot read the shipping state of {path}: {exc}")
    finally:
        con.close()
    for r in rows:
        r["kind"] = "team budgets" if r["target"].startswith("budgets:") else "events"
    if as_json:
        print_json({"schema": "llmsm.team.status/1", "db": str(path), "targets": rows})
        return
    if not rows:
        console.print("nothing ships from this database: start the gateway with --team-db URL or --otlp-endpoint URL", markup=False)
        return
    for r in rows:
        if r["kind"] == "team budgets":
            state = f"unreachable: {r['last_error']} (local budgets still enforced)" if r["last_error"] else "refreshed"
            console.print(f"{r['target']}: team budgets {state}; last refresh {_when(r['last_success_at'])}", markup=False)
            continue
        line = f"{r['target']}: {r['behind']} event(s) behind, {r['shipped']} shipped; last success {_when(r['last_success_at'])}"
        if r["last_error"]:
            line += f"; LAST ATTEMPT FAILED {_when(r['last_error_at'])}: {r['last_error']}"
        console.print(line, markup=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _when(ts: Any) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M:%S") if ts is not None else "never"


def push(
    team_db: TeamDbOption = None,
    db: DbOption = None,
    developer: DeveloperOption = None,
    share_content: Annotated[bool, typer.Option("--team-share-content", help="Also ship session digests (content).")] = False,
    as_json: JsonOption = False,
) -> None:
    from llmsm.analytics.store import StoreError, open_for_query
    from llmsm.analytics.team import ship
    from llmsm.analytics.team.pg import PostgresSink, TeamDbError

    url = _url(team_db)
    path = resolve_db(db)
    if not path.exists():
        fail(f"no database at {path}")
    sink = PostgresSink(url, ship.Identity(developer or ship.default_developer(), socket.gethostname(), share_content))
    loop = ship.ShipLoop(path, sink, share_content=share_content, batch_size=5000, db_timeout=5.0)
    try:
        con = open_for_query(path)
        try:
            todo = ship.backlog(con, sink.target)["behind"]
        finally:
            con.close()
        if sys.stderr.isatty() and not as_json:
            from rich.progress import Progress

            with Progress(console=console.__class__(stderr=True), transient=True) as progress:
                task = progress.add_task("shipping", total=todo)
                loop.catch_up(lambda n: progress.advance(task, n))
        else:
            loop.catch_up()
    except (TeamDbError, StoreError) as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"shipping to {sink.target} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    finally:
        sink.close()
    if as_json:
        print_json({"target": sink.target, "new": loop.shipped})
    else:
        console.print(f"shipped {loop.shipped} new event(s) to {sink.target}", markup=False)


def _report_command(kind: str):
    def command(
        team_db: TeamDbOption = None,
        since: SinceOption = None,
        until: UntilOption = None,
        developer: OnlyDeveloper = None,
        utc: UtcOption = False,
        as_json: JsonOption = False,
    ) -> None:
        from llmsm.analytics.team import reports

        tz = _zone(utc)
        s = _instant(since, "--since", end=False, tz=tz)
        u = _instant(until, "--until", end=True, tz=tz)
        con = team_connect(team_db, read_only=True)
        try:
            data = reports.build_report(con, kind, tz=tz, since=s, until=u, developer=developer)
        except Exception as exc:  # e.g. a role without SELECT on the rollup
            fail(f"team report {kind} failed: {_first_line(exc)}")
        finally:
            con.close()
        if as_json:
            print_json(data)
        else:
            _table(data, kind)

    command.__name__ = f"team_report_{kind}"
    return command


def _table(data: dict, kind: str) -> None:
    from rich.table import Table

    from llmsm.cli.format import human_tokens, human_usd

    key = {"daily": "date", "weekly": "week", "monthly": "month", "developers": "developer", "projects": "project", "models": "model"}[kind]
    table = Table(title=f"team report {kind} ({data['timezone']})")
    cols = [key] + (["developer"] if kind in ("daily", "weekly", "monthly") else []) + ["requests", "errors", "tokens", "cost"]
    for c in cols:
        table.add_column(c, justify="left" if c in (key, "developer") else "right")
    for r in data["rows"] + [{key: "total", "developer": "", **data["totals"]}]:
        cells = [str(r.get(key) or "—")] + ([str(r.get("developer") or "")] if kind in ("daily", "weekly", "monthly") else [])
        cells += [str(r["requests"]), str(r["errors"]), human_tokens(r["total_tokens"]),
                  human_usd(r["cost_usd"]) if r["cost_usd"] is not None else ""]
        table.add_row(*cells)
    console.print(table)


def sessions(
    team_db: TeamDbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    developer: OnlyDeveloper = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many sessions.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    from rich.table import Table

    from llmsm.analytics.team import reports
    from llmsm.cli.format import human_tokens, human_usd

    tz = _zone(False)
    s = _instant(since, "--since", end=False, tz=tz)
    u = _instant(until, "--until", end=True, tz=tz)
    con = team_connect(team_db, read_only=True)
    try:
        data = reports.sessions(con, since=s, until=u, developer=developer, limit=limit)
    except Exception as exc:
        fail(f"team sessions failed: {_first_line(exc)}")
    finally:
        con.close()
    if as_json:
        print_json(data)
        return
    table = Table(title="team sessions")
    for c in ("session", "developer", "project", "client", "last seen", "requests", "tokens", "cost"):
        table.add_column(c)
    for r in data["rows"]:
        table.add_row(str(r["session_id"] or "")[:12], r["developer"], r["project"] or "", r["client"],
                      (r["last_seen"] or "")[:16], str(r["requests"]), human_tokens(r["total_tokens"]),
                      human_usd(r["cost_usd"]) if r["cost_usd"] is not None else "")
    console.print(table)


def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Drop months that ended before this age or date: 90d, 2026-01-01.")],
    team_db: TeamDbOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be dropped.")] = False,
    as_json: JsonOption = False,
) -> None:
    from llmsm.analytics.team import schema

    cutoff = _instant(older_than, "--older-than", end=False, tz=_zone(False)) or datetime.now(timezone.utc)
    con = team_connect(team_db)
    try:
        result = schema.prune(con, cutoff, dry_run=dry_run)
    finally:
        con.close()
    if as_json:
        print_json(result)
        return
    months = ", ".join(result["dropped_months"]) or "none"
    verb = "would drop" if dry_run else "dropped"
    console.print(f"{verb} {len(result['dropped_months'])} month(s) ({months}), {result['dropped_rows']} event(s)", markup=False)


def team_budget_set(team_db: str | None, developer: str | None, project: str | None, all_: bool, day: bool, month: bool,
                    tokens: str | None, usd_limit: str | None, warn_at: str | None, as_json: bool) -> None:
    """`llmsm budget set --team ...` (cli/cost.py hands it over)."""
    from llmsm.analytics.team import budgets as team_budgets
    from llmsm.cli.cost import budget_limits

    scopes = [(s, t) for s, t, on in (("developer", developer, developer is not None), ("project", project, project is not None),
                                        ("all", None, all_)) if on]
    if len(scopes) != 1:
        fail("give exactly one of --developer NAME, --project NAME or --all")
    if day and month:
        fail("give --day or --month, not both")
    scope, target = scopes[0]
    if scope != "all" and not (target or "").strip():
        fail(f"--{scope} needs a name")
    max_tokens, max_usd, warn = budget_limits(tokens, usd_limit, warn_at)
    con = team_connect(team_db)
    try:
        budget, created = team_budgets.set_budget(con, scope, target, "day" if day else "month",
                                                  max_tokens=max_tokens, max_usd=max_usd, warn_at=warn)
    except Exception as exc:
        fail(str(exc).splitlines()[0])
    finally:
        con.close()
    if as_json:
        print_json({"id": budget.id, "scope": budget.scope, "target": budget.target, "period": budget.period,
                    "max_tokens": budget.max_tokens, "max_usd": budget.max_usd, "warn_at": budget.warn_at, "created": created})
        return
    console.print(f"team budget {budget.id} {'set' if created else 'updated'}: {budget.describe()}; "
                  "every gateway with --team-db applies it within 10 s", markup=False, soft_wrap=True)
