"""The data of `llmsm statusline`: active sessions, the one that needs attention most by a quick
health check, today's tokens and cost, the most used quota window, a budget running out.

Two small queries on a read-only connection, then the quick check. Imported: duckdb, the
standard library and the cheap analytics modules (apis, health_rules, live; quota when there
are rate-limit headers to read), never pydantic or genai-prices: a status bar runs this every
few seconds.

The quick check is the health model (analytics/health.py) limited to four of its factors:
context fill, recent errors, a cold prompt cache and a file another session edits too, decided
by the same rules
(analytics/health_rules.py: thresholds, error kinds and weights, severities, penalties, score
and status, the order of need). For a session where only those factors speak, the status line
says what `llmsm health` says: the same status, the same top reason, the same error kind. It
reads less: the last 10 turns of the last hour (the model's recent turns), without the other
factors (context growth and rot, tool failures, retry loops, slowdown, budget, cache share) and
without the compaction passes in `usage_raw`; `llmsm health` has the whole model. Context
windows come from a small cache file, filled from `prices.context_window` the first time a
model is seen.

The second query adds the most used quota window and a budget past its warning threshold; on
a database without the `budgets` table or the `budget_status` view it reads the quota headers
only. A third, the file conflicts (analytics/collisions.py, the query `llmsm health` runs), only
when two sessions or more were active within the conflict window (15 minutes): with one
session or none there is nothing to collide, and the line costs what it cost before. The line
itself is drawn by llmsm.cli.format.
"""

from __future__ import annotations

import os
import time
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from .apis import TURN_APIS, sql_list
from .health_rules import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    attention_key,
    cache_cold_verdict,
    cache_ttl_seconds,
    conflict_verdict,
    error_verdict,
    fill_verdict,
    has_usage,
    main_thread,
    prompt_tokens,
    rank_key,
    score_and_status,
    tally_errors,
)
from .live import (
    ACTIVE_MINUTES,
    CATALOG_SQL,
    DEFAULT_WINDOW_MINUTES,
    QUOTA_LOOKBACK,
    budget_key,
    extras_sql,
    quota_windows,
    top_quota,
)

__all__ = ["QuickHealth", "RecentTurn", "StatusLine", "default_db_path", "quick_check", "statusline"]

UTC = timezone.utc


class QuickHealth(NamedTuple):
    """The quick check of one session: what the health model says from context fill, recent
    errors, a cold cache and file conflicts."""

    status: str = "healthy"  # healthy | degraded | critical, as health.py
    score: int = 100
    factor: str | None = None  # the top reason: context_fill | errors | cache_cold | file_conflict (None: none)
    severity: str | None = None  # its severity: info | warn | critical
    error_kind: str | None = None  # errors: the kind it is about (a key of health_rules.ERROR_WEIGHTS)
    errors: int = 0  # failed requests among the recent turns
    context_fill: float | None = None  # whole prompt of the last main turn / context window
    idle_seconds: float | None = None  # since the end of the session's latest exchange
    conflict_path: str | None = None  # file_conflict: the most recent file shared ...
    conflict_with: str | None = None  # ... and the other session's label, else its id


class StatusLine(NamedTuple):
    active: int = 0
    recent: int = 0  # sessions seen within the last hour
    tokens_today: int = 0
    cost_today: float | None = None
    worst_name: str | None = None  # the session that needs attention most (None: all healthy)
    worst: QuickHealth | None = None  # ... and its quick check
    note: str | None = None  # "no data yet", "db busy", ...
    quota_window: str | None = None  # the most used quota window that has not reset since ("5h")
    quota_pct: float | None = None
    budget_pct: float | None = None  # the tightest budget past its warning threshold that applies to a recent session
    budget_state: str | None = None  # warn | exceeded

    @property
    def worst_status(self) -> str:
        return self.worst.status if self.worst is not None else "healthy"


# What the quick check reads of each recent turn, by name (the fields of health_rules.HEALTH_FIELDS
# it needs, the session's label and client), then the session's activity: `last_seen` (the
# latest end of any of its exchanges) and `last_end` (the end of the exchange that started
# last: what the health model measures idleness from).
_TURN_FIELDS = (
    "session_id", "label", "client", "started_at", "model", "requested_model", "provider", "agent_id",
    "status_code", "outcome", "error_type", "error_message", "input_tokens", "cache_read_tokens",
    "cache_write_tokens", "long_context", "cache_ttl",
)
RecentTurn = namedtuple("RecentTurn", (*_TURN_FIELDS, "last_seen", "last_end"))
_HEAD = ("tokens_today", "cost_today", "n_budgets", "budget_view")
_COLUMNS = (*_HEAD, *RecentTurn._fields)
_TURNS_SQL = sql_list(TURN_APIS)

_STATUSLINE_SQL = f"""
WITH cat AS ({CATALOG_SQL}),
today AS (
    SELECT coalesce(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0)
                        + coalesce(cache_write_tokens, 0)), 0) AS tokens,
           sum(cost_usd) AS cost
    FROM events WHERE started_at >= $day AND started_at <= $now AND api <> 'other'
),
recent AS (
    SELECT {", ".join(_TURN_FIELDS)},
           max(coalesce(ended_at, started_at)) OVER (PARTITION BY session_id) AS last_seen,
           arg_max(coalesce(ended_at, started_at), started_at) OVER (PARTITION BY session_id) AS last_end
    FROM events
    WHERE session_id IS NOT NULL AND started_at >= $since AND started_at <= $now
    QUALIFY api IN {_TURNS_SQL}
        AND row_number() OVER (PARTITION BY session_id, api IN {_TURNS_SQL} ORDER BY started_at DESC)
            <= {DEFAULT_THRESHOLDS.recent_requests}
)
SELECT today.tokens AS tokens_today, today.cost AS cost_today, cat.n_budgets, cat.budget_view, recent.*
FROM today CROSS JOIN cat LEFT JOIN recent ON true
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def default_db_path() -> Path:
    """store.default_db_path() without importing the store (it loads pydantic); a test keeps
    the two equal."""
    env = os.environ.get("LLMSM_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path("llmsm") / "llmsm.duckdb"


# --------------------------------------------------------------------------------------------
# Context windows: prices.context_window (its cache file spares the status line genai-prices)
# --------------------------------------------------------------------------------------------

WindowKey = tuple[str, str, bool]  # (provider, model, long_context)


def _context_windows(keys: set[WindowKey]) -> dict[WindowKey, int | None]:
    """Windows for (provider, model, long_context), from prices.context_window's cache file."""
    from .prices import context_window

    return {k: context_window(k[1], k[0] or None, k[2]) for k in keys}


# --------------------------------------------------------------------------------------------
# The quick check
# --------------------------------------------------------------------------------------------


def _main_with_usage(turns: list[RecentTurn]) -> list[RecentTurn]:
    """The main thread's turns that report usage: the last one's whole prompt is the context."""
    return [r for r in main_thread(turns) if has_usage(r)]


def _window_key(turns: list[RecentTurn], row: RecentTurn) -> WindowKey | None:
    model = row.model or row.requested_model
    if not model:
        return None
    return (row.provider or "", model, any(r.long_context for r in turns))


def quick_check(
    turns: list[RecentTurn], now: datetime, windows: dict[WindowKey, int | None], t: Thresholds = DEFAULT_THRESHOLDS,
    conflicts: list[dict[str, Any]] | None = None,
) -> QuickHealth:
    """The health model's context fill, errors, cold-cache and file-conflict factors over one
    session's recent turns (oldest first), with the same rules; `windows` from
    `_context_windows`, `conflicts` this session's from collisions.find_conflicts."""
    reasons: list[tuple[int, str, str, str | None]] = []  # (penalty, severity, factor, error kind)
    fill = ctx = None
    main = _main_with_usage(turns)
    if main:
        row = main[-1]
        ctx = prompt_tokens(row)
        key = _window_key(turns, row)
        window = windows.get(key) if key is not None else None
        if window:
            fill = ctx / window
            verdict = fill_verdict(fill, t)
            if verdict is not None:
                reasons.append((verdict[1], verdict[0], "context_fill", None))

    idle = max(0.0, (now - turns[-1].last_end).total_seconds())
    recent_main = main[-t.recent_requests :]
    uses_cache = any(r.cache_read_tokens or r.cache_write_tokens for r in recent_main)
    ttl_s = cache_ttl_seconds([r.cache_ttl for r in recent_main], t)
    cold = cache_cold_verdict(uses_cache, ctx, idle, ttl_s, t)
    if cold is not None:
        reasons.append((cold[1], cold[0], "cache_cold", None))

    cutoff = now - timedelta(minutes=t.recent_horizon_min)
    recent = [r for r in turns[-t.recent_requests :] if r.started_at >= cutoff]
    kinds, score, last_kind = tally_errors(recent, now, t)
    errors = sum(kinds.values())
    verdict_e = error_verdict(kinds, score, last_kind, t) if kinds else None
    if verdict_e is not None:
        reasons.append((verdict_e[1], verdict_e[0], "errors", verdict_e[2]))

    path = other = None
    verdict_c = conflict_verdict(len(conflicts), t) if conflicts else None
    if verdict_c is not None:
        reasons.append((verdict_c[1], verdict_c[0], "file_conflict", None))
        path, other = conflicts[0]["path"], conflicts[0]["other_label"] or conflicts[0]["other_session"]

    if not reasons:
        return QuickHealth(errors=errors, context_fill=fill, idle_seconds=idle)
    health_score, status = score_and_status([(p, s) for p, s, _, _ in reasons], t)
    penalty, severity, factor, kind = min(reasons, key=lambda x: rank_key(x[0], x[1]))
    return QuickHealth(status, health_score, factor, severity, kind, errors, fill, idle, path, other)


# --------------------------------------------------------------------------------------------
# The status line
# --------------------------------------------------------------------------------------------


def statusline(path: str | os.PathLike[str], *, now: datetime | None = None, timeout: float = 0.2) -> StatusLine:
    """Active sessions, the one that needs attention most (quick check), today's tokens and
    cost, quota and budget. Never raises for a missing, busy or unreadable database: `note`
    says what happened."""
    path = Path(path).expanduser()
    if not path.is_file():
        return StatusLine(note="no data yet")
    try:
        import duckdb
    except ImportError:  # pragma: no cover
        return StatusLine(note="unavailable")
    now = _now() if now is None else _utc(now)
    local_midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"now": now, "day": local_midnight, "since": now - timedelta(minutes=DEFAULT_WINDOW_MINUTES)}
    # store.connect waits for a writer the same way, but importing the store loads pydantic
    deadline = time.monotonic() + timeout
    con = None
    while con is None:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            text = str(exc)
            busy = "lock" in text.lower() or "conflict" in text.lower()
            if not busy or time.monotonic() >= deadline:
                return StatusLine(note="db busy" if busy else "unreadable db")
            time.sleep(0.02)
    try:
        cur = con.execute(_STATUSLINE_SQL, params)
        columns = tuple(d[0] for d in cur.description)
        if columns != _COLUMNS:  # read by name below: a column missing here must not read as None
            raise RuntimeError(f"the status line query returns {columns}, expected {_COLUMNS}")
        rows = cur.fetchall()
        if not rows:
            return StatusLine()
        head = dict(zip(_HEAD, rows[0]))
        extras = _fetch_extras(con, now, bool(head["n_budgets"]) and bool(head["budget_view"]))
        conflicts = _fetch_conflicts(con, now, rows)
    except duckdb.Error:
        return StatusLine(note="unreadable db")
    finally:
        con.close()
    by_session: dict[str, list[RecentTurn]] = {}
    n_head = len(_HEAD)
    for values in rows:
        r = RecentTurn._make(values[n_head:])
        if r.session_id is not None:
            by_session.setdefault(r.session_id, []).append(r)
    out = StatusLine(tokens_today=int(head["tokens_today"] or 0), cost_today=head["cost_today"])
    out = _quick_health(out, by_session, now, conflicts)
    if extras is not None:
        try:
            out = _quick_extras(out, extras, by_session, now)
        except Exception:  # noqa: BLE001 - the line without the quota is better than no line
            pass
    return out


_SID = len(_HEAD) + RecentTurn._fields.index("session_id")
_LAST_SEEN = len(_HEAD) + RecentTurn._fields.index("last_seen")


def _fetch_conflicts(con: Any, now: datetime, rows: list[tuple], t: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, list]:
    """The file conflicts, queried only when two sessions or more were active within the
    conflict window (the rows of the first query tell); {} otherwise or when it fails."""
    import duckdb

    since = now - timedelta(minutes=t.conflict_active_min)
    active = {r[_SID] for r in rows if r[_SID] is not None and r[_LAST_SEEN] is not None and r[_LAST_SEEN] >= since}
    if len(active) < 2:
        return {}
    from .collisions import find_conflicts

    try:
        return find_conflicts(con, now, t)
    except duckdb.Error:
        return {}


def _fetch_extras(con: Any, now: datetime, with_budgets: bool) -> tuple | None:
    """The second query: quota headers, and the budgets past their warning threshold when the
    database has budgets and the view. None when it fails (an older database)."""
    import duckdb

    params = {"at": now, "quota_from": now - QUOTA_LOOKBACK}
    for budgets in ((True, False) if with_budgets else (False,)):
        try:
            row = con.execute(extras_sql(budgets, "WHERE state <> 'ok'"), params).fetchone()
        except duckdb.Error:
            continue
        return (row[0] or [], (row[1] or []) if budgets else [])
    return None


def _quick_extras(out: StatusLine, extras: tuple, by_session: dict[str, list[RecentTurn]], now: datetime) -> StatusLine:
    quota_rows, budget_rows = extras
    if quota_rows:
        top = top_quota(quota_windows(quota_rows, now))
        if top:
            out = out._replace(quota_window=top[0]["window"], quota_pct=top[0]["used_pct"])
    if budget_rows:
        ids = set(by_session)
        labels = {r.label for rows in by_session.values() for r in rows if r.label}
        clients = {r.client for rows in by_session.values() for r in rows if r.client}
        live = [b for b in budget_rows if b["scope"] == "day" or (b["scope"] == "session" and b["target"] in ids)
                or (b["scope"] == "label" and b["target"] in labels) or (b["scope"] == "client" and b["target"] in clients)]
        live = [dict(b, pct=float(b["pct"] or 0.0)) for b in live]
        if live:
            b = min(live, key=budget_key)
            out = out._replace(budget_pct=b["pct"], budget_state=b["state"])
    return out


def _quick_health(
    out: StatusLine, by_session: dict[str, list[RecentTurn]], now: datetime,
    conflicts: dict[str, list[dict[str, Any]]] | None = None,
) -> StatusLine:
    active = 0
    keys: set[WindowKey] = set()
    for rows in by_session.values():
        rows.sort(key=lambda r: r.started_at)
        if (now - rows[-1].last_seen).total_seconds() <= ACTIVE_MINUTES * 60:
            active += 1
        main = _main_with_usage(rows)
        key = _window_key(rows, main[-1]) if main else None
        if key is not None:
            keys.add(key)
    try:
        windows = _context_windows(keys) if keys else {}
    except Exception:  # never let the status line fail on the cache
        windows = {}
    worst: tuple | None = None
    for sid, rows in by_session.items():
        q = quick_check(rows, now, windows, conflicts=(conflicts or {}).get(sid))
        if q.status == "healthy":
            continue
        rank = attention_key(q.status, q.score, rows[-1].last_seen)
        if worst is None or rank < worst[0]:
            name = next((x.label for x in reversed(rows) if x.label), None) or sid[:12]
            worst = (rank, name, q)
    out = out._replace(active=active, recent=len(by_session))
    if worst is not None:
        out = out._replace(worst_name=worst[1], worst=worst[2])
    return out
