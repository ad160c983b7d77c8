"""The data behind `llmsm watch`, `show` and `health`.

A dashboard frame is four SQL round trips on the file attached read-only for the frame and
detached right after (store.read_attached: DuckDB locks the file per process, and holding it
would block the gateway's writes; attaching it to the process's one DuckDB instance costs a few
milliseconds where opening an instance costs ~40). The second and fourth run on a second cursor
in a thread while the first runs:

1. per-session aggregates (first/last seen, requests, errors, turns, tokens, cost, tokens of the
   last 10 minutes for the burn rate, the first TTFTs for the slowdown baseline, the latest
   `llmsm run`) for the sessions in scope: active within a window (default 60 min), all, or
   given ids;
2. the last 50 events of each of those sessions (a `row_number()` window over the same scope),
   only the fields the health model reads (`health_rules.HEALTH_FIELDS`, one `HealthRow` each);
3. one small query for budgets and quota windows (analytics/live.py, shared with the status
   line): the `budget_status` rows only when the `budgets` table has rows and the view exists
   (the first query reads that from the catalog, so a database without budgets pays nothing
   for them) and the quota windows of the last 7 days as of `at`. A failure here never fails
   the frame;
4. the file conflicts of the sessions active as of `at` (analytics/collisions.py: one query over
   their digests), whichever sessions the frame shows, so that `show` of one session knows of
   the others. A failure here never fails the frame either.

Health is then computed outside the connection (analytics/health.py). Each session gets the
budgets that apply to it (its id, its label, its client, the day budget); the tightest (exceeded
before warn before ok, then the most used) goes to the health model as `budget_fraction`, with
`budget_rate` from the burn of the last 10 minutes of the shown sessions it applies to (with
`show`, only that session's burn). Everything is evaluated "as of" a moment `at`: only events
with `started_at <= at` count, and ages, activity and cache idleness are measured against `at`,
so `--at` reproduces what the dashboard showed then (budget states excepted, see below).

Budget states come from the `budget_status` view, which counts up to now: with `--at` they are
still today's (the view takes no moment).

The status line has its own, cheaper path (analytics/statusline.py); the texts on the screen are
llmsm.cli's. Nothing here imports typer or mitmproxy; heavy modules are imported inside the
functions.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .apis import TURN_APIS, sql_list
from .health_rules import HEALTH_FIELDS, STATUS_RANK, HealthRow, attention_key
from .live import (
    ACTIVE_MINUTES,
    CATALOG_SQL,
    DEFAULT_WINDOW_MINUTES,
    IDLE_MINUTES,
    QUOTA_LOOKBACK,
    budget_key,
    extras_sql,
    quota_windows,
    top_quota,
)

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from .health import SessionHealth

__all__ = [
    "ACTIVE_MINUTES",
    "DEFAULT_WINDOW_MINUTES",
    "EVENTS_PER_SESSION",
    "STATUS_RANK",
    "Frame",
    "SessionDetail",
    "SessionRow",
    "load_frame",
    "load_session",
    "find_sessions",
    "read_frame",
    "read_session_view",
    "session_series",
    "SessionView",
    "apply_budgets",
    "budget_name",
    "quota_windows",
    "top_quota",
]

UTC = timezone.utc
_TURNS_SQL = sql_list(TURN_APIS)
EVENTS_PER_SESSION = 50  # what the health model reads per session
BURN_MINUTES = 10.0  # burn rate = tokens of the last 10 minutes / 10
BASELINE_TURNS = 5  # slowdown baseline: median TTFT of the session's first 5 ok main turns
CONTEXT_TURNS = 200  # `show`: context fill of the last 200 turns (or --limit, if more)

# The events the health model reads: its fields (health_rules.HEALTH_FIELDS), one HealthRow
# each. Every field is its column unless said here: timestamps as naive UTC (3x cheaper to
# convert than TIMESTAMPTZ), and usage_raw only where it mentions compaction iterations (the
# JSON text is the costly part).
_HEALTH_SQL_EXPR = {
    "started_at": "timezone('UTC', started_at)",
    "ended_at": "timezone('UTC', ended_at)",
    "usage_raw": "CASE WHEN contains(usage_raw::VARCHAR, '\"iterations\"') THEN usage_raw::VARCHAR END",
}
_HEALTH_SELECT = ", ".join(f"{_HEALTH_SQL_EXPR.get(f, f)} AS {f}" for f in HEALTH_FIELDS)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionRow:
    """One session as of a moment: aggregates up to `at` and its health."""

    session_id: str
    label: str | None = None
    client: str | None = None
    client_version: str | None = None
    model: str | None = None  # of the last turn
    models: list[str] = field(default_factory=list)  # filled by load_session only
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    state: str = "ended"  # active | idle | ended, relative to `at`
    requests: int = 0
    errors: int = 0
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    burn_tokens_per_min: float = 0.0  # all tokens of the last BURN_MINUTES / BURN_MINUTES
    burn_usd_per_min: float = 0.0  # cost of the last BURN_MINUTES / BURN_MINUTES
    baseline_ttft_ms: float | None = None
    command: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    project: str | None = None  # the working directory its requests showed last (digest), else the run's
    parent_session: str | None = None  # the session its latest run was handed off from
    health: SessionHealth | None = None
    budgets: list[dict[str, Any]] = field(default_factory=list)  # those that apply, the tightest first

    @property
    def name(self) -> str:
        return self.label or self.session_id[:12]

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def status(self) -> str:
        return self.health.status if self.health is not None else "healthy"

    @property
    def score(self) -> int:
        return self.health.score if self.health is not None else 100

    @property
    def context_fill(self) -> float | None:
        return self.health.context_fill if self.health is not None else None

    @property
    def budget(self) -> dict[str, Any] | None:
        """The tightest budget that applies (exceeded, then warn, then ok; the most used first)."""
        return self.budgets[0] if self.budgets else None

    def sort_key(self) -> tuple:
        return attention_key(self.status, self.score, self.last_seen)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "session_id": self.session_id,
            "label": self.label,
            "client": self.client,
            "client_version": self.client_version,
            "model": self.model,
            "models": list(self.models),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "state": self.state,
            "requests": self.requests,
            "errors": self.errors,
            "turns": self.turns,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "burn_tokens_per_min": round(self.burn_tokens_per_min, 1),
            "burn_usd_per_min": round(self.burn_usd_per_min, 6),
            "context_fill": self.context_fill,
            "status": self.status,
            "score": self.score,
            "command": self.command,
            "cwd": self.cwd,
            "git_branch": self.git_branch,
            "project": self.project,
            "parent_session": self.parent_session,
            "budgets": [dict(b) for b in self.budgets],
            "health": self.health.to_dict() if self.health is not None else None,
        }
        return out


@dataclass(slots=True)
class Frame:
    """What one dashboard refresh shows."""

    at: datetime  # aware UTC
    live: bool  # evaluated as of now (not --at)
    window_minutes: float | None  # None: all sessions
    sessions: list[SessionRow] = field(default_factory=list)
    query_ms: float = 0.0  # open + queries (the time the database file is held)
    health_ms: float = 0.0
    events: dict[str, list[Any]] | None = field(default=None, repr=False)  # --all: kept for the next refresh
    full_at: datetime | None = None  # when every session in scope was last read
    budgets: list[dict[str, Any]] = field(default_factory=list)  # every budget (budget_status), tightest first
    quota: list[dict[str, Any]] = field(default_factory=list)  # every quota window seen (quota_summary's shape)

    def quota_top(self) -> list[dict[str, Any]]:
        """The most used quota window of each account, skipping windows that have reset since
        (stale) and windows without a share; the most used account first."""
        return top_quota(self.quota)

    def totals(self) -> dict[str, Any]:
        ss = self.sessions
        costs = [s.cost_usd for s in ss if s.cost_usd is not None]
        return {
            "sessions": len(ss),
            "active": sum(1 for s in ss if s.state == "active"),
            "idle": sum(1 for s in ss if s.state == "idle"),
            "critical": sum(1 for s in ss if s.status == "critical"),
            "degraded": sum(1 for s in ss if s.status == "degraded"),
            "requests": sum(s.requests for s in ss),
            "errors": sum(s.errors for s in ss),
            "input_tokens": sum(s.input_tokens for s in ss),
            "output_tokens": sum(s.output_tokens for s in ss),
            "cache_read_tokens": sum(s.cache_read_tokens for s in ss),
            "cache_write_tokens": sum(s.cache_write_tokens for s in ss),
            "total_tokens": sum(s.total_tokens for s in ss),
            "burn_tokens_per_min": round(sum(s.burn_tokens_per_min for s in ss), 1),
            "cost_usd": sum(costs) if costs else None,
            "budget_warn": sum(1 for s in ss if s.budget is not None and s.budget["state"] == "warn"),
            "budget_exceeded": sum(1 for s in ss if s.budget is not None and s.budget["state"] == "exceeded"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "live": self.live,
            "window_minutes": self.window_minutes,
            "totals": self.totals(),
            "sessions": [s.to_dict() for s in self.sessions],
            "quota": self.quota_top(),
            "budgets": [dict(b) for b in self.budgets],
        }


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------

_SCOPE_WINDOW = """
    SELECT DISTINCT session_id FROM events
    WHERE session_id IS NOT NULL AND started_at <= $at AND started_at >= $scan_from
      AND coalesce(ended_at, started_at) >= $since
"""
_SCOPE_ALL = "SELECT DISTINCT session_id FROM events WHERE session_id IS NOT NULL AND started_at <= $at"
_SCOPE_IDS = "SELECT unnest($ids::VARCHAR[]) AS session_id"

_AGG_SQL = f"""
WITH scope AS ({{scope}}),
agg AS (
    SELECT
        e.session_id,
        arg_max(e.label, e.started_at) FILTER (WHERE e.label IS NOT NULL) AS label,
        arg_max(e.client, e.started_at) FILTER (WHERE e.client IS NOT NULL AND e.client <> 'unknown') AS client,
        arg_max(e.client_version, e.started_at) FILTER (WHERE e.client_version IS NOT NULL) AS client_version,
        arg_max(coalesce(e.model, e.requested_model), e.started_at)
            FILTER (WHERE e.api IN {_TURNS_SQL} AND coalesce(e.model, e.requested_model) IS NOT NULL) AS model,
        min(e.started_at) AS first_seen,
        least(max(coalesce(e.ended_at, e.started_at)), $at) AS last_seen,
        count(*) FILTER (WHERE e.api <> 'other') AS requests,
        count(*) FILTER (WHERE e.api <> 'other' AND e.outcome <> 'ok') AS errors,
        count(*) FILTER (WHERE e.api IN {_TURNS_SQL}) AS turns,
        sum(e.input_tokens) FILTER (WHERE e.api <> 'other') AS input_tokens,
        sum(e.output_tokens) FILTER (WHERE e.api <> 'other') AS output_tokens,
        sum(e.cache_read_tokens) FILTER (WHERE e.api <> 'other') AS cache_read_tokens,
        sum(e.cache_write_tokens) FILTER (WHERE e.api <> 'other') AS cache_write_tokens,
        sum(e.cost_usd) AS cost_usd,
        sum(coalesce(e.input_tokens, 0) + coalesce(e.output_tokens, 0) + coalesce(e.cache_read_tokens, 0)
            + coalesce(e.cache_write_tokens, 0)) FILTER (WHERE e.api <> 'other' AND e.started_at > $burn_from) AS burn_tokens,
        sum(e.cost_usd) FILTER (WHERE e.api <> 'other' AND e.started_at > $burn_from) AS burn_usd,
        arg_max(e.digest->>'$.project.cwd', e.started_at) FILTER (WHERE e.digest->>'$.project.cwd' IS NOT NULL) AS project,
        arg_min(e.ttft_ms, e.started_at, {BASELINE_TURNS}) FILTER (
            WHERE e.api IN {_TURNS_SQL} AND e.outcome = 'ok' AND e.ttft_ms IS NOT NULL AND e.agent_id IS NULL
        ) AS first_ttfts
    FROM events AS e
    WHERE e.session_id IN (SELECT session_id FROM scope) AND e.started_at <= $at
    GROUP BY e.session_id
),
run AS (
    SELECT session_id, label, command, cwd, git_branch, parent_session FROM runs
    WHERE started_at <= $at AND session_id IN (SELECT session_id FROM scope)
    QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY started_at DESC) = 1
),
cat AS ({CATALOG_SQL})
SELECT agg.*, run.label AS run_label, run.command, run.cwd, run.git_branch, run.parent_session, cat.n_budgets,
    cat.budget_view
FROM cat LEFT JOIN agg ON true LEFT JOIN run ON run.session_id = agg.session_id
"""


_EVENTS_SQL = f"""
WITH scope AS ({{scope}})
SELECT {_HEALTH_SELECT} FROM events
WHERE session_id IN (SELECT session_id FROM scope) AND started_at <= $at
QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY started_at DESC) <= $n
"""


def _state(last_seen: datetime | None, at: datetime) -> str:
    if last_seen is None:
        return "ended"
    idle = (at - last_seen).total_seconds() / 60.0
    if idle <= ACTIVE_MINUTES:
        return "active"
    if idle <= IDLE_MINUTES:
        return "idle"
    return "ended"


def _median(values: list[float]) -> float | None:
    s = sorted(v for v in values if v is not None)
    if not s:
        return None
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _rows_from_agg(columns: list[str], rows: list[tuple], at: datetime) -> list[SessionRow]:
    out = []
    for values in rows:
        r = dict(zip(columns, values))
        if r["session_id"] is None:  # the catalog row of an empty scope
            continue
        last = r["last_seen"]
        row = SessionRow(
            session_id=r["session_id"],
            label=r["label"] or r["run_label"],
            client=r["client"] or "unknown",
            client_version=r["client_version"],
            model=r["model"],
            first_seen=r["first_seen"],
            last_seen=last,
            state=_state(last, at),
            requests=int(r["requests"] or 0),
            errors=int(r["errors"] or 0),
            turns=int(r["turns"] or 0),
            input_tokens=int(r["input_tokens"] or 0),
            output_tokens=int(r["output_tokens"] or 0),
            cache_read_tokens=int(r["cache_read_tokens"] or 0),
            cache_write_tokens=int(r["cache_write_tokens"] or 0),
            cost_usd=r["cost_usd"],
            burn_tokens_per_min=float(r["burn_tokens"] or 0) / BURN_MINUTES,
            burn_usd_per_min=float(r["burn_usd"] or 0) / BURN_MINUTES,
            command=r["command"],
            cwd=r["cwd"],
            git_branch=r["git_branch"],
            project=r["project"] or r["cwd"],
            parent_session=r["parent_session"],
        )
        ttfts = r["first_ttfts"]
        if ttfts:
            row.baseline_ttft_ms = _median(list(ttfts))
        out.append(row)
    return out


@dataclass(slots=True)
class _Extras:
    """What the last round trips bring: budget_status rows (None: not read), quota windows, and
    file conflicts (session id -> its conflicts)."""

    budgets: list[dict[str, Any]] | None = None
    quota: list[dict[str, Any]] = field(default_factory=list)
    conflicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _check_health_columns(description: Any) -> None:
    """The events query must return exactly the health model's fields, by name and in order: a
    field missing there would otherwise read as None and quietly change a verdict."""
    names = tuple(d[0] for d in description)
    if names != HEALTH_FIELDS:
        raise RuntimeError(f"the events query returns {names}, the health model reads {HEALTH_FIELDS}")


def _fetch(
    con: duckdb.DuckDBPyConnection, scope: str, params: dict[str, Any], n_events: int,
) -> tuple[list[SessionRow], dict[str, list[HealthRow]], _Extras]:
    """The round trips: aggregates, the last `n_events` events of those sessions, budgets and
    quota windows, file conflicts. The events and the conflicts are read on a second cursor in a
    thread meanwhile (DuckDB works without the GIL): both scan what the aggregates scan, and on
    2 cores a frame takes the longer of the two, not their sum. The file cannot change between
    the cursors' reads: it is open read-only, which keeps every writer out."""
    at = params["at"]
    side = _side_cursor(con)
    later = _pool().submit(_recent_and_conflicts, side, scope, params, n_events)
    try:
        cur = con.execute(_AGG_SQL.format(scope=scope), params)
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        sessions = _rows_from_agg(columns, rows, at)
        cat = dict(zip(columns, rows[0])) if rows else {}
        with_budgets = bool(cat.get("n_budgets")) and bool(cat.get("budget_view"))
        extras = _fetch_extras(con, at, with_budgets)
        events, extras.conflicts = later.result()  # also for the sessions an --all refresh keeps
    finally:
        later.exception()  # when the aggregates failed: the side read ends before its cursor closes
        side.close()
    return sessions, events, extras


def _side_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A second connection to the same database instance, on the same catalog (USE is per
    connection)."""
    side = con.cursor()
    db = con.execute("SELECT current_database()").fetchone()[0]
    side.execute(f'USE "{db}"')
    return side


_POOL: Any = None


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmsm-frame")
    return _POOL


def _recent_and_conflicts(
    con: duckdb.DuckDBPyConnection, scope: str, params: dict[str, Any], n_events: int,
) -> tuple[dict[str, list[HealthRow]], dict[str, list[dict[str, Any]]]]:
    events: dict[str, list[HealthRow]] = {}
    if n_events > 0:
        sql = _EVENTS_SQL.format(scope=scope)
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        cur = con.execute(sql, {**used, "n": n_events})
        _check_health_columns(cur.description)
        make = HealthRow._make
        for r in map(make, cur.fetchall()):
            events.setdefault(r.session_id, []).append(r)
    return events, _fetch_conflicts(con, params["at"])


def _fetch_conflicts(con: duckdb.DuckDBPyConnection, at: datetime) -> dict[str, list[dict[str, Any]]]:
    """File conflicts as of `at`; never raises (a database of an older llmsm has no digests)."""
    import duckdb

    from .collisions import find_conflicts

    try:
        return find_conflicts(con, at)
    except duckdb.Error:
        return {}


# --------------------------------------------------------------------------------------------
# Budgets and quota windows
# --------------------------------------------------------------------------------------------

def _fetch_extras(con: duckdb.DuckDBPyConnection, at: datetime, with_budgets: bool) -> _Extras:
    """One query; never raises (a database of an older llmsm may lack a view or a table)."""
    import duckdb

    params = {"at": at, "quota_from": at - QUOTA_LOOKBACK}
    out = _Extras()
    row = None
    for budgets in ((True, False) if with_budgets else (False,)):
        try:
            row = con.execute(extras_sql(budgets), params).fetchone()
        except duckdb.Error:
            continue
        if budgets:
            out.budgets = [dict(b) for b in (row[1] or [])]
        break
    if row is not None:
        try:
            out.quota = quota_windows(row[0] or [], at)
        except Exception:  # noqa: BLE001 - a header that trips the parser costs the footer, not the frame
            out.quota = []
    return out


def budget_name(b: dict[str, Any]) -> str:
    """"daily budget", "label 'refactor' budget", "session budget", "client 'claude-code' budget"."""
    if b["scope"] == "day":
        return "daily budget"
    if b["scope"] == "session":
        return "session budget"
    return f"{b['scope']} {b['target']!r} budget"


def _budget_kind(b: dict[str, Any]) -> str:
    tp, up = b.get("tokens_pct"), b.get("usd_pct")
    if up is None:
        return "tokens"
    if tp is None:
        return "usd"
    return "tokens" if tp >= up else "usd"


def _applies(b: dict[str, Any], s: SessionRow) -> bool:
    scope, target = b["scope"], b["target"]
    if scope == "day":
        return True
    value = {"session": s.session_id, "label": s.label, "client": s.client}.get(scope)
    return value is not None and value == target


def apply_budgets(
    sessions: list[SessionRow], budgets: list[dict[str, Any]], at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Give each session the budgets that apply to it (tightest first) and each budget its pace:
    `kind` (the limit closest to its end: tokens or usd), `rate` (share of the budget used per
    minute by the shown sessions it applies to, over the last 10 minutes; None when idle) and
    `minutes_left` at that pace (None for a day budget that lasts until midnight). Returns the
    budgets, tightest first."""
    for s in sessions:
        s.budgets = []
    day_left = None
    if at is not None:
        local = at.astimezone()
        midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        day_left = (midnight - local).total_seconds() / 60.0
    out = []
    for raw in budgets:
        b = dict(raw)
        b["pct"] = float(b["pct"]) if b.get("pct") is not None else 0.0
        kind = b["kind"] = _budget_kind(b)
        limit = b["max_tokens"] if kind == "tokens" else b["max_usd"]
        members = [s for s in sessions if _applies(b, s)]
        burn = sum((s.burn_tokens_per_min if kind == "tokens" else s.burn_usd_per_min) for s in members)
        rate = burn / limit if limit and burn > 0 else None
        b["rate"] = rate
        left = max(0.0, (1.0 - b["pct"] / 100.0) / rate) if rate and b["pct"] < 100 else None
        if left is not None and b["scope"] == "day" and day_left is not None and left > day_left:
            left = None  # the day ends first
        b["minutes_left"] = left
        if left is None:
            b["rate"] = None  # nothing to forecast: the health model gets the share alone
        b["name"] = budget_name(b)
        out.append(b)
        for s in members:
            s.budgets.append(b)
    for s in sessions:
        s.budgets.sort(key=budget_key)
    out.sort(key=budget_key)
    return out


def _assess(
    sessions: list[SessionRow], events: dict[str, list[Any]], at: datetime,
    conflicts: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    from .health import assess_session

    conflicts = conflicts or {}
    for s in sessions:
        evs = events.get(s.session_id, [])
        # the baseline only matters once the first turns have left the window
        baseline = s.baseline_ttft_ms if s.turns > len(evs) else None
        b = s.budget
        s.health = assess_session(
            evs, now=at, session_id=s.session_id, first_seen=s.first_seen, total_turns=s.turns,
            baseline_ttft_ms=baseline,
            budget_fraction=b["pct"] / 100.0 if b is not None else None,
            budget_rate=b["rate"] if b is not None else None,
            budget_label=b["name"] if b is not None else "budget",
            conflicts=conflicts.get(s.session_id),
        )


def _params(at: datetime, window_minutes: float | None) -> dict[str, Any]:
    p: dict[str, Any] = {"at": at, "burn_from": at - timedelta(minutes=BURN_MINUTES)}
    if window_minutes is not None:
        since = at - timedelta(minutes=window_minutes)
        p["since"] = since
        p["scan_from"] = since - timedelta(hours=1)  # an exchange may end long after it started
    return p


def _scope(at: datetime, window_minutes: float | None, session_ids: list[str] | None) -> tuple[str, dict[str, Any]]:
    if session_ids is not None:
        return _SCOPE_IDS, dict(_params(at, None), ids=list(session_ids))
    if window_minutes is None:
        return _SCOPE_ALL, _params(at, None)
    return _SCOPE_WINDOW, _params(at, window_minutes)


def _incremental_since(previous: Frame | None, at: datetime, window_minutes: float | None) -> datetime | None:
    """With every session in scope (`--all`), a refresh shortly after a full frame re-reads only
    the sessions seen since shortly before it (and within the burn-rate window): the others have
    no new rows, and their health is recomputed for the new moment from the events kept."""
    if window_minutes is not None or previous is None or previous.window_minutes is not None:
        return None
    if previous.events is None or previous.full_at is None:
        return None
    if not (0 <= (at - previous.full_at).total_seconds() <= FULL_REFRESH_S):
        return None
    return min(previous.at - timedelta(minutes=2), at - timedelta(minutes=BURN_MINUTES))


FULL_REFRESH_S = 60.0  # an incremental --all frame re-reads everything at least this often


def _read(
    con: duckdb.DuckDBPyConnection, at: datetime, window_minutes: float | None, session_ids: list[str] | None,
    events_per_session: int, previous: Frame | None,
) -> tuple[list[SessionRow], dict[str, list[Any]], datetime | None, _Extras]:
    import duckdb

    from .store import StoreError

    since = None if session_ids is not None else _incremental_since(previous, at, window_minutes)
    try:
        if since is not None:
            params = _params(at, None)
            params["since"], params["scan_from"] = since, since - timedelta(hours=1)
            fresh, events, extras = _fetch(con, _SCOPE_WINDOW, params, events_per_session)
        else:
            scope, params = _scope(at, window_minutes, session_ids)
            fresh, events, extras = _fetch(con, scope, params, events_per_session)
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the database: {str(exc).strip().splitlines()[0]}") from exc
    return fresh, events, since, extras


def _compose(
    fresh: list[SessionRow], fresh_events: dict[str, list[Any]], since: datetime | None, previous: Frame | None,
    at: datetime, live: bool, window_minutes: float | None, session_ids: list[str] | None, extras: _Extras | None = None,
) -> Frame:
    if since is not None:
        assert previous is not None and previous.events is not None
        seen = {s.session_id for s in fresh}
        sessions = fresh + [s for s in previous.sessions if s.session_id not in seen]
        events = dict(previous.events)
        events.update(fresh_events)
        full_at = previous.full_at
    else:
        sessions, events, full_at = fresh, fresh_events, at
    extras = extras or _Extras()
    frame = build_frame(sessions, events, at, live=live, window_minutes=None if session_ids is not None else window_minutes,
                        budgets=extras.budgets, quota=extras.quota, conflicts=extras.conflicts)
    frame.full_at = full_at
    if window_minutes is None and session_ids is None:
        frame.events = events  # kept for the next incremental refresh
    return frame


def load_frame(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime | None = None,
    window_minutes: float | None = DEFAULT_WINDOW_MINUTES,
    session_ids: list[str] | None = None,
    events_per_session: int = EVENTS_PER_SESSION,
    previous: Frame | None = None,
) -> Frame:
    """One frame from an open connection: sessions seen within `window_minutes` before `at`
    (all sessions when None, or exactly `session_ids`), with health, sorted by need of attention.
    `previous`: the last frame of a `--all` dashboard, to re-read only what changed."""
    live = at is None
    at = _now() if at is None else _utc(at)
    t0 = time.perf_counter()
    fresh, events, since, extras = _read(con, at, window_minutes, session_ids, events_per_session, previous)
    query_ms = (time.perf_counter() - t0) * 1000
    frame = _compose(fresh, events, since, previous, at, live, window_minutes, session_ids, extras)
    frame.query_ms = query_ms
    return frame


def build_frame(
    sessions: list[SessionRow], events: dict[str, list[Any]], at: datetime, *, live: bool, window_minutes: float | None,
    budgets: list[dict[str, Any]] | None = None, quota: list[dict[str, Any]] | None = None,
    conflicts: dict[str, list[dict[str, Any]]] | None = None,
) -> Frame:
    """Budgets that apply and health for every session as of `at` (with its file conflicts),
    sorted by need of attention."""
    t0 = time.perf_counter()
    for s in sessions:
        s.state = _state(s.last_seen, at)
    all_budgets = apply_budgets(sessions, budgets or [], at)
    _assess(sessions, events, at, conflicts)
    sessions.sort(key=SessionRow.sort_key)
    return Frame(at=at, live=live, window_minutes=window_minutes, sessions=sessions,
                 health_ms=(time.perf_counter() - t0) * 1000, budgets=all_budgets, quota=list(quota or []))


def read_frame(
    path: str | os.PathLike[str],
    *,
    at: datetime | None = None,
    window_minutes: float | None = DEFAULT_WINDOW_MINUTES,
    timeout: float = 0.25,
    events_per_session: int = EVENTS_PER_SESSION,
    previous: Frame | None = None,
) -> Frame:
    """`load_frame` on the file attached read-only for this frame (waiting at most `timeout` s
    for a writer) and detached before health is computed: the file is held only for the queries.
    Raises the store's errors (DatabaseBusy, DatabaseMissing, StoreError)."""
    from .store import read_attached

    live = at is None
    at = _now() if at is None else _utc(at)
    t0 = time.perf_counter()
    with read_attached(path, timeout=timeout, migrate=True) as con:
        fresh, events, since, extras = _read(con, at, window_minutes, None, events_per_session, previous)
    query_ms = (time.perf_counter() - t0) * 1000
    frame = _compose(fresh, events, since, previous, at, live, window_minutes, None, extras)
    frame.query_ms = query_ms
    return frame


# --------------------------------------------------------------------------------------------
# One session
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionDetail:
    row: SessionRow
    at: datetime
    timeline: list[dict[str, Any]]  # the last `limit` events, oldest first
    context: list[dict[str, Any]]  # per turn with usage: started_at, model, prompt, window, fill
    errors: list[dict[str, Any]]  # the latest failed requests, oldest first
    error_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "session": self.row.to_dict(),
            "timeline": self.timeline,
            "context": self.context,
            "errors": self.errors,
            "error_count": self.error_count,
        }


_TIMELINE_COLUMNS = (
    "id", "started_at", "ended_at", "agent_id", "provider", "api", "model", "requested_model", "streamed",
    "status_code", "outcome", "error_type", "error_message", "stop_reason", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "ttft_ms", "duration_ms",
    "tool_errors", "long_context", "usage_source",
)


def find_sessions(con: duckdb.DuckDBPyConnection, ref: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
    """Sessions `ref` names, best match first: the exact id; else the sessions with that label
    (newest first); else every id starting with `ref` (newest first). Each: session_id, label,
    last_seen, requests, how ('id' | 'label' | 'prefix')."""
    at = _now() if at is None else _utc(at)
    rows = con.execute(
        """
        WITH s AS (
            SELECT session_id, arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label,
                   max(coalesce(ended_at, started_at)) AS last_seen,
                   count(*) FILTER (WHERE api <> 'other') AS requests
            FROM events
            WHERE session_id IS NOT NULL AND started_at <= $at
              AND (session_id = $ref OR starts_with(session_id, $ref) OR label = $ref
                   OR session_id IN (SELECT session_id FROM runs WHERE label = $ref))
            GROUP BY session_id
        )
        SELECT s.session_id, coalesce(s.label, (SELECT arg_max(r.label, r.started_at) FROM runs r WHERE r.session_id = s.session_id)) AS label,
               s.last_seen, s.requests,
               CASE WHEN s.session_id = $ref THEN 'id'
                    WHEN s.label = $ref OR s.session_id IN (SELECT session_id FROM runs WHERE label = $ref) THEN 'label'
                    ELSE 'prefix' END AS how
        FROM s ORDER BY s.last_seen DESC
        """,
        {"ref": ref, "at": at},
    ).fetchall()
    found = [dict(zip(("session_id", "label", "last_seen", "requests", "how"), r)) for r in rows]
    exact = [f for f in found if f["how"] == "id"]
    if exact:
        return exact
    labelled = [f for f in found if f["how"] == "label"]
    if labelled:
        return labelled
    return found


def load_session(
    con: duckdb.DuckDBPyConnection, session_id: str, *, at: datetime | None = None, limit: int = 50, max_errors: int = 20,
) -> SessionDetail | None:
    """Aggregates, health, the last `limit` events and the latest errors of one session."""
    at = _now() if at is None else _utc(at)
    frame = load_frame(con, at=at, session_ids=[session_id])
    if not frame.sessions:
        return None
    row = frame.sessions[0]
    models = con.execute(
        "SELECT DISTINCT model FROM events WHERE session_id = $sid AND started_at <= $at AND model IS NOT NULL ORDER BY model",
        {"sid": session_id, "at": at},
    ).fetchall()
    row.models = [m[0] for m in models]
    cols = ", ".join(_TIMELINE_COLUMNS)
    cur = con.execute(
        f"SELECT {cols} FROM events WHERE session_id = $sid AND started_at <= $at ORDER BY started_at DESC LIMIT $n",
        {"sid": session_id, "at": at, "n": max(1, int(limit))},
    )
    timeline = [dict(zip(_TIMELINE_COLUMNS, r)) for r in reversed(cur.fetchall())]
    err_where = "session_id = $sid AND started_at <= $at AND api <> 'other' AND (outcome <> 'ok' OR status_code >= 400)"
    n_err = con.execute(f"SELECT count(*) FROM events WHERE {err_where}", {"sid": session_id, "at": at}).fetchone()
    cur = con.execute(
        f"SELECT started_at, model, api, status_code, outcome, error_type, error_message FROM events WHERE {err_where} "
        "ORDER BY started_at DESC LIMIT $n",
        {"sid": session_id, "at": at, "n": max_errors},
    )
    errors = [dict(zip(("started_at", "model", "api", "status_code", "outcome", "error_type", "error_message"), r))
              for r in reversed(cur.fetchall())]
    ctx_cols = ("started_at", "api", "model", "requested_model", "provider", "long_context", "agent_id",
                "input_tokens", "cache_read_tokens", "cache_write_tokens")
    cur = con.execute(
        f"SELECT {', '.join(ctx_cols)} FROM events WHERE session_id = $sid AND started_at <= $at AND api IN {_TURNS_SQL} "
        "AND (input_tokens IS NOT NULL OR cache_read_tokens IS NOT NULL OR cache_write_tokens IS NOT NULL) "
        "ORDER BY started_at DESC LIMIT $n",
        {"sid": session_id, "at": at, "n": max(int(limit), CONTEXT_TURNS)},
    )
    turns = [dict(zip(ctx_cols, r)) for r in reversed(cur.fetchall())]
    return SessionDetail(row=row, at=at, timeline=timeline, context=context_per_turn(turns), errors=errors,
                         error_count=int(n_err[0]) if n_err else 0)


def context_per_turn(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole prompt per turn (input + cache read + cache write) against the model's window."""
    from .prices import context_window

    out = []
    for ev in timeline:
        if ev.get("api") not in TURN_APIS:
            continue
        parts = (ev.get("input_tokens"), ev.get("cache_read_tokens"), ev.get("cache_write_tokens"))
        if all(p is None for p in parts):
            continue
        prompt = sum(p or 0 for p in parts)
        model = ev.get("model") or ev.get("requested_model")
        window = context_window(model, ev.get("provider"), bool(ev.get("long_context"))) if model else None
        out.append({
            "started_at": ev.get("started_at"),
            "model": model,
            "agent_id": ev.get("agent_id"),
            "prompt_tokens": prompt,
            "context_window": window,
            "fill": (prompt / window) if window else None,
        })
    return out


# --------------------------------------------------------------------------------------------
# One session's screen (`llmsm watch`, Enter): series for the charts, the digest, conflicts
# --------------------------------------------------------------------------------------------

_SERIES_EXTRA = ("output_tokens", "cost_usd")
_SERIES_SQL = f"""
SELECT {_HEALTH_SELECT}, {', '.join(_SERIES_EXTRA)} FROM events
WHERE session_id = $sid AND started_at <= $at AND api IN {_TURNS_SQL}
  AND (input_tokens IS NOT NULL OR cache_read_tokens IS NOT NULL OR cache_write_tokens IS NOT NULL)
ORDER BY started_at DESC LIMIT $n
"""


def session_series(
    con: duckdb.DuckDBPyConnection, session_id: str, *, at: datetime | None = None, limit: int = CONTEXT_TURNS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns, spend) of the last `limit` turns with usage, oldest first.

    turns: the main thread's turns (health_rules.main_thread), each started_at, model,
    prompt_tokens (the whole prompt), context_window, fill, compaction (True where the health
    model sees a compaction: health.compaction_points). spend: every turn with usage,
    subagents' too, each started_at, agent_id, tokens (prompt + output), cost_usd (None: not
    priced)."""
    from .health import compaction_points
    from .health_rules import has_usage, main_thread, prompt_tokens
    from .prices import context_window

    at = _now() if at is None else _utc(at)
    cur = con.execute(_SERIES_SQL, {"sid": session_id, "at": at, "n": max(1, int(limit))})
    n = len(HEALTH_FIELDS)
    rows = list(reversed(cur.fetchall()))
    health_rows = [HealthRow._make(r[:n]) for r in rows]
    spend = [
        {"started_at": _utc(h.started_at), "agent_id": h.agent_id,
         "tokens": prompt_tokens(h) + int(r[n] or 0), "cost_usd": r[n + 1]}
        for h, r in zip(health_rows, rows)
    ]
    main = [h for h in main_thread(health_rows) if has_usage(h)]
    points = set(compaction_points(main))
    windows: dict[tuple, int | None] = {}
    turns = []
    for j, h in enumerate(main):
        model = h.model or h.requested_model
        key = (model, h.provider, bool(h.long_context))
        if key not in windows:
            windows[key] = context_window(model, h.provider, bool(h.long_context)) if model else None
        window = windows[key]
        prompt = prompt_tokens(h)
        turns.append({"started_at": _utc(h.started_at), "model": model, "prompt_tokens": prompt,
                      "context_window": window, "fill": prompt / window if window else None,
                      "compaction": j in points})
    return turns, spend


@dataclass(slots=True)
class SessionView:
    """What the session screen of `llmsm watch` shows: `load_session`'s detail, the series of
    its charts, the merged digest (analytics/digest.py) and its file conflicts."""

    detail: SessionDetail
    turns: list[dict[str, Any]]
    spend: list[dict[str, Any]]
    digest: dict[str, Any]
    conflicts: list[dict[str, Any]]
    query_ms: float = 0.0
    # The session's share of each quota window it used (analytics/quota_share.py:
    # session_shares), most used window first; None: not computed.
    quota_share: list[dict[str, Any]] | None = None


def read_session_view(
    path: str | os.PathLike[str], session_id: str, *, at: datetime | None = None, limit: int = 50,
    timeout: float = 0.25,
) -> SessionView | None:
    """One session's screen on the file attached read-only for it and detached right after
    (None when the session has no requests by `at`). Raises the store's errors."""
    from .digest import load_digest
    from .store import StoreError, read_attached

    import duckdb

    at = _now() if at is None else _utc(at)
    t0 = time.perf_counter()
    with read_attached(path, timeout=timeout, migrate=True) as con:
        try:
            detail = load_session(con, session_id, at=at, limit=limit)
            if detail is None:
                return None
            turns, spend = session_series(con, session_id, at=at, limit=max(limit, CONTEXT_TURNS))
            try:
                digest = load_digest(con, session_id, at=at).to_dict()
            except duckdb.Error:  # a database of an older llmsm has no digests
                digest = {}
            conflicts = _fetch_conflicts(con, at).get(session_id, [])
            quota_share = _session_quota_share(con, session_id, at)
        except duckdb.Error as exc:
            raise StoreError(f"cannot read the database: {str(exc).strip().splitlines()[0]}") from exc
    return SessionView(detail=detail, turns=turns, spend=spend, digest=digest, conflicts=conflicts,
                       quota_share=quota_share, query_ms=(time.perf_counter() - t0) * 1000)


def _session_quota_share(con: duckdb.DuckDBPyConnection, session_id: str, at: datetime) -> list[dict[str, Any]]:
    """The quota windows this session used, with its share of each (the windows of its account
    that it did not use are left out)."""
    from .quota_share import quota_shares, session_shares

    windows = quota_shares(con, now=at, session_id=session_id)
    return [w for w in session_shares(windows, session_id) if w["share_pct"] or w["estimated"]]


if __name__ == "__main__":
    # `python -m llmsm.analytics.dashboard [--db PATH]` was the status line's entry point before it
    # moved to llmsm.cli.statusline: kept for the status bars configured with it.
    import sys

    from llmsm.cli.statusline import main

    sys.exit(main(sys.argv[1:]))
