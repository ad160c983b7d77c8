"""Usage reports, reconciliation with transcripts, export and retention (`llmsm report|reconcile|export|prune`).

Counting rules (docs/reports.md):

* Only API calls count: rows with ``api = 'other'`` (preflights, unknown paths) never do.
* Wire rows (``usage_source`` reported / estimated / none) always count; estimated rows are
  included and counted separately in ``estimated_requests``.
* A transcript row (``usage_source = 'transcript'``, from ``llmsm import claude-code``) counts only
  when no wire row has the same ``message_id``: **the wire wins** where both saw a message, so a
  session recorded both ways is never counted twice, and history from before llmsm ran still counts.
* Period boundaries (daily/weekly/monthly) are taken in one time zone: the user's local zone by
  default (DuckDB's ``TimeZone``, i.e. the ``TZ`` environment variable or the system zone), UTC with
  ``utc=True``, or any IANA zone by name. Weeks start on Monday (ISO weeks).

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from .store import DatabaseMissing, StoreError, connect

__all__ = [
    "REPORT_SCHEMA",
    "RECONCILE_SCHEMA",
    "METRICS",
    "TOKEN_KINDS",
    "REPORT_KINDS",
    "EXPORT_FORMATS",
    "BadInput",
    "TimeSpec",
    "parse_time",
    "parse_age",
    "local_timezone",
    "check_timezone",
    "resolve",
    "counted_events_sql",
    "TranscriptScope",
    "transcript_scope",
    "build_report",
    "reconcile",
    "export",
    "prune",
]

REPORT_SCHEMA = "llmsm.report/1"
RECONCILE_SCHEMA = "llmsm.reconcile/1"

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens")
METRICS = (
    "requests",
    "errors",
    "estimated_requests",
    "transcript_requests",
    *TOKEN_KINDS,
    "total_tokens",
    "cost_usd",
    "unpriced_requests",
)
REPORT_KINDS = ("daily", "weekly", "monthly", "sessions", "models")
EXPORT_FORMATS = ("parquet", "csv", "jsonl")


class BadInput(StoreError):
    """A value the user gave that cannot be used (one clear line)."""


# --------------------------------------------------------------------------------------------
# Time bounds: dates, ISO times, relative ages
# --------------------------------------------------------------------------------------------

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks|week|weeks)\s*$", re.I)
_AGE_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

TIME_HELP = "a date (2026-11-01), an ISO time (2026-11-01T09:30, 2026-11-01T09:30+02:00), a relative age (7d, 12h, 30m, 2w), today or yesterday"


@dataclass(frozen=True)
class TimeSpec:
    """A parsed time argument: an instant, or a wall-clock time to read in the report's zone."""

    instant: datetime | None = None  # aware
    local: datetime | None = None  # naive: wall-clock time in the report's time zone


def parse_age(text: str) -> timedelta | None:
    """'90d' -> timedelta(days=90); None when `text` is not a relative age."""
    m = _AGE_RE.match(text or "")
    if not m:
        return None
    unit = m.group(2).lower()
    key = "m" if unit.startswith("mi") or unit == "m" else unit[0]
    return timedelta(seconds=float(m.group(1)) * _AGE_UNIT[key])


def parse_time(text: str, *, option: str, end: bool = False, now: datetime | None = None) -> TimeSpec:
    """Parse a --since/--until value. `end=True` makes a bare date mean the end of that day.

    A date is a whole day in the report's time zone (so `--until 2026-11-30` includes Nov 30);
    an ISO time without an offset is a wall-clock time in the report's zone; a relative age is
    that long before now. Raises BadInput with one line naming the option.
    """
    raw = (text or "").strip()
    now = now or datetime.now(timezone.utc)
    if not raw:
        raise BadInput(f"{option} is empty: use {TIME_HELP}")
    low = raw.lower()
    if low == "now":
        return TimeSpec(instant=now)
    if low in ("today", "yesterday"):
        return TimeSpec(local=_today_marker(low, end))
    age = parse_age(raw)
    if age is not None:
        return TimeSpec(instant=now - age)
    if _DATE_RE.match(raw):
        try:
            d = date.fromisoformat(raw)
        except ValueError:
            raise BadInput(f"{option}: {raw!r} is not a valid date") from None
        start = datetime(d.year, d.month, d.day)
        return TimeSpec(local=start + timedelta(days=1) if end else start)
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise BadInput(f"{option}: cannot read {raw!r}: use {TIME_HELP}") from None
    if dt.tzinfo is None:
        return TimeSpec(local=dt)
    return TimeSpec(instant=dt)


# today/yesterday need the report's zone: resolved in resolve() via these sentinels
_TODAY = datetime(1, 1, 1)
_TODAY_END = datetime(1, 1, 2)
_YESTERDAY = datetime(1, 1, 3)
_YESTERDAY_END = datetime(1, 1, 4)


def _today_marker(word: str, end: bool) -> datetime:
    if word == "today":
        return _TODAY_END if end else _TODAY
    return _YESTERDAY_END if end else _YESTERDAY


def local_timezone(con: duckdb.DuckDBPyConnection) -> str:
    """The user's zone as DuckDB sees it (TZ environment variable, else the system zone)."""
    try:
        row = con.execute("SELECT current_setting('TimeZone')").fetchone()
    except duckdb.Error:
        row = None
    return str(row[0]) if row and row[0] else "UTC"


def check_timezone(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """`name` if DuckDB knows that zone, else BadInput."""
    try:
        row = con.execute(
            "SELECT name FROM pg_timezone_names() WHERE lower(name) = lower(?) ORDER BY name = ? DESC LIMIT 1",
            [name, name],
        ).fetchone()
    except duckdb.Error as exc:
        raise BadInput(f"cannot check time zone {name!r}: {exc}") from exc
    if not row:
        raise BadInput(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC")
    return str(row[0])


def resolve(con: duckdb.DuckDBPyConnection, spec: TimeSpec | None, tz: str) -> datetime | None:
    """The instant a TimeSpec names, wall-clock times read in zone `tz` (by DuckDB's ICU)."""
    if spec is None:
        return None
    if spec.instant is not None:
        return spec.instant
    local = spec.local
    assert local is not None
    if local in (_TODAY, _TODAY_END, _YESTERDAY, _YESTERDAY_END):
        row = con.execute("SELECT timezone(?, now())::DATE", [tz]).fetchone()
        today: date = row[0]
        offset = {_TODAY: 0, _TODAY_END: 1, _YESTERDAY: -1, _YESTERDAY_END: 0}[local]
        d = today + timedelta(days=offset)
        local = datetime(d.year, d.month, d.day)
    row = con.execute("SELECT timezone(?, ?::TIMESTAMP)", [tz, local]).fetchone()
    value: datetime = row[0]
    return value.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------------
# What counts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptScope:
    """The time span of the imported transcript rows: a wire row can only repeat one of them if
    it is within a day of that span (the wire and the transcript time the same response within
    seconds or minutes), so older wire rows need no checking."""

    first: datetime
    last: datetime


def transcript_scope(con: duckdb.DuckDBPyConnection) -> TranscriptScope | None:
    """None when the database holds no transcript rows (reports then skip the de-duplication).
    One scan of two small columns (a few ms on a million rows)."""
    try:
        row = con.execute("SELECT min(started_at), max(started_at) FROM events WHERE usage_source = 'transcript'").fetchone()
    except duckdb.Error as exc:
        raise StoreError(f"report query failed: {exc}") from exc
    if not row or row[0] is None:
        return None
    return TranscriptScope(row[0], row[1])


def counted_events_sql(where: str = "", scope: TranscriptScope | None | bool = True) -> str:
    """A WITH clause defining `counted`: the events reports add up (see the module docstring).

    `where` is extra SQL (starting with AND) applied to the counted rows. Wire rows and
    transcript rows are two branches of a UNION ALL, so only transcript rows are checked against
    the (small) set of messages the wire also saw. `scope` (from transcript_scope) narrows the
    wire rows that need checking; None (no transcript rows) leaves the check out; True checks
    every wire row.
    """
    if scope is None or scope is False:
        return f"""
WITH counted AS (
    SELECT * FROM events WHERE api <> 'other' {where}
)"""
    narrow = ""
    if isinstance(scope, TranscriptScope):
        lo = scope.first - timedelta(days=1)
        hi = scope.last + timedelta(days=1)
        narrow = f"AND started_at BETWEEN {_ts_literal(lo)} AND {_ts_literal(hi)}"
    return f"""
WITH _transcript_msgs AS (
    SELECT DISTINCT message_id FROM events
    WHERE usage_source = 'transcript' AND message_id IS NOT NULL
),
_wire_msgs AS (
    SELECT message_id FROM events
    WHERE usage_source IS DISTINCT FROM 'transcript' {narrow}
      AND message_id IN (SELECT message_id FROM _transcript_msgs)
),
counted AS (
    SELECT * FROM events
    WHERE api <> 'other' AND usage_source IS DISTINCT FROM 'transcript' {where}
    UNION ALL
    SELECT * FROM events AS t
    WHERE api <> 'other' AND usage_source = 'transcript' {where}
      AND NOT EXISTS (SELECT 1 FROM _wire_msgs AS w WHERE w.message_id = t.message_id)
)"""


_AGGREGATES = """
    count(*) AS requests,
    count(*) FILTER (WHERE outcome <> 'ok') AS errors,
    count(*) FILTER (WHERE usage_source = 'estimated') AS estimated_requests,
    count(*) FILTER (WHERE usage_source = 'transcript') AS transcript_requests,
    coalesce(sum(input_tokens), 0)::BIGINT AS input_tokens,
    coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens,
    coalesce(sum(cache_write_tokens), 0)::BIGINT AS cache_write_tokens,
    coalesce(sum(cache_read_tokens), 0)::BIGINT AS cache_read_tokens,
    coalesce(sum(reasoning_tokens), 0)::BIGINT AS reasoning_tokens,
    sum(cost_usd) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens > 0 OR output_tokens > 0
        OR cache_read_tokens > 0 OR cache_write_tokens > 0)) AS unpriced_requests"""

_AGG_NAMES = (
    "requests",
    "errors",
    "estimated_requests",
    "transcript_requests",
    *TOKEN_KINDS,
    "cost_usd",
    "unpriced_requests",
)


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRICS:
        if name == "total_tokens":
            out[name] = (
                values["input_tokens"] + values["output_tokens"] + values["cache_write_tokens"] + values["cache_read_tokens"]
            )
        elif name == "cost_usd":
            out[name] = None if values["cost_usd"] is None else round(float(values["cost_usd"]), 9)
        else:
            out[name] = int(values[name] or 0)
    return out


def _zero() -> dict[str, Any]:
    return _metrics({name: (None if name == "cost_usd" else 0) for name in _AGG_NAMES})


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for name in METRICS:
        if name == "cost_usd":
            if row[name] is not None:
                total[name] = (total[name] or 0.0) + row[name]
        else:
            total[name] += row[name]


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

_PERIOD_UNIT = {"daily": ("day", "date"), "weekly": ("week", "week"), "monthly": ("month", "month")}


def _utc_iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def _filters(since: datetime | None, until: datetime | None, client: str | None) -> tuple[str, dict[str, Any]]:
    where, params = [], {}
    if since is not None:
        where.append("AND started_at >= $since")
        params["since"] = since
    if until is not None:
        where.append("AND started_at < $until")
        params["until"] = until
    if client is not None:
        where.append("AND client = $client")
        params["client"] = client
    return " ".join(where), params


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]
    except duckdb.Error as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"report query failed: {text}") from exc


def build_report(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    *,
    tz: str,
    since: datetime | None = None,
    until: datetime | None = None,
    client: str | None = None,
    breakdown: bool = False,
) -> dict[str, Any]:
    """One report as a JSON-ready dict (schema llmsm.report/1, docs/reports.md).

    `since` is inclusive, `until` exclusive (instants). `tz` is the zone of period boundaries.
    One query groups the counted events by (row key, provider, model); rows, their model
    lists, their breakdown and the totals are sums of those groups (every metric is additive).
    """
    if kind not in REPORT_KINDS:
        raise BadInput(f"unknown report {kind!r}: one of {', '.join(REPORT_KINDS)}")
    where, params = _filters(since, until, client)
    head = counted_events_sql(where, transcript_scope(con))

    if kind in _PERIOD_UNIT:
        unit, key = _PERIOD_UNIT[kind]
        params["tz"] = tz
        key_sql = f"date_trunc('{unit}', timezone($tz, started_at))::DATE AS k"
        extra_sql = ""
    elif kind == "sessions":
        key, key_sql = "session_id", "session_id AS k"
        extra_sql = """,
    min(started_at) AS first_seen,
    max(coalesce(ended_at, started_at)) AS last_seen,
    arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label,
    max(started_at) FILTER (WHERE label IS NOT NULL) AS label_at,
    arg_max(client, started_at) FILTER (WHERE client IS NOT NULL AND client <> 'unknown') AS client,
    max(started_at) FILTER (WHERE client IS NOT NULL AND client <> 'unknown') AS client_at"""
    else:
        key, key_sql, extra_sql = "model", "NULL AS k", ""
    groups = _run(con, f"{head}\nSELECT {key_sql}, provider, model, {_AGGREGATES}{extra_sql}\nFROM counted GROUP BY ALL", params)

    if kind == "models":
        out_rows = [{"provider": g["provider"], "model": g["model"], **_metrics(g), "breakdown": None} for g in groups]
        out_rows.sort(key=_by_weight)
    else:
        by_key: dict[Any, list[dict[str, Any]]] = {}
        for g in groups:
            by_key.setdefault(g["k"], []).append(g)
        out_rows = []
        for k, parts in by_key.items():
            row: dict[str, Any] = {}
            if kind == "sessions":
                row.update(_session_fields(k, parts))
            else:
                row[key] = k.strftime("%Y-%m") if kind == "monthly" else k.isoformat()
            metrics = _zero()
            items = []
            for part in parts:
                m = _metrics(part)
                _add(metrics, m)
                items.append({"provider": part["provider"], "model": part["model"], **m})
            if metrics["cost_usd"] is not None:
                metrics["cost_usd"] = round(metrics["cost_usd"], 9)
            row.update(metrics)
            row["models"] = sorted({p["model"] for p in parts if p["model"] is not None})
            row["breakdown"] = sorted(items, key=_by_weight) if breakdown else None
            out_rows.append(row)
        if kind == "sessions":
            out_rows.sort(key=lambda r: (r["last_seen"] or "", r["session_id"] or ""), reverse=True)
        else:
            out_rows.sort(key=lambda r: r[key])

    totals = _zero()
    for r in out_rows:
        _add(totals, r)
    if totals["cost_usd"] is not None:
        totals["cost_usd"] = round(totals["cost_usd"], 9)
    return {
        "schema": REPORT_SCHEMA,
        "report": kind,
        "timezone": tz,
        "since": _utc_iso(since),
        "until": _utc_iso(until),
        "client": client,
        "rows": out_rows,
        "totals": totals,
    }


def _session_fields(session_id: str | None, parts: list[dict[str, Any]]) -> dict[str, Any]:
    def latest(value: str, at: str) -> Any:
        best = max((p for p in parts if p[at] is not None), key=lambda p: p[at], default=None)
        return best[value] if best else None

    return {
        "session_id": session_id,
        "label": latest("label", "label_at"),
        "client": latest("client", "client_at") or "unknown",
        "first_seen": _utc_iso(min(p["first_seen"] for p in parts)),
        "last_seen": _utc_iso(max(p["last_seen"] for p in parts)),
    }


def _by_weight(r: dict[str, Any]) -> tuple:
    """Most expensive first (unpriced after priced), then most tokens, then by name."""
    cost = r["cost_usd"]
    return (cost is None, -(cost or 0.0), -r["total_tokens"], r["provider"] or "", r["model"] or "")


# --------------------------------------------------------------------------------------------
# Reconcile: wire vs transcript, per session
# --------------------------------------------------------------------------------------------

_RECONCILE_SQL = """
WITH t AS (
    SELECT * FROM events
    WHERE usage_source = 'transcript' AND api <> 'other' AND session_id IS NOT NULL {session_filter}
),
w AS (
    SELECT * FROM events WHERE usage_source IN ('reported', 'estimated') AND api <> 'other'
),
t_msgs AS (
    SELECT DISTINCT session_id, message_id FROM t WHERE message_id IS NOT NULL
),
-- the wire rows of a transcript session: the same session id, or the same message id
w_linked AS (
    SELECT DISTINCT key, id, started_at, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, reasoning_tokens
    FROM (
        SELECT w.session_id AS key, w.* FROM w WHERE w.session_id IN (SELECT session_id FROM t)
        UNION ALL
        SELECT m.session_id AS key, w.* FROM w JOIN t_msgs AS m USING (message_id)
    )
),
wire AS (
    SELECT key AS session_id, count(*) AS requests, min(started_at) AS first_seen, max(started_at) AS last_seen,
           {sums}
    FROM w_linked GROUP BY key
),
tr AS (
    SELECT session_id, count(*) AS requests, min(started_at) AS first_seen, max(started_at) AS last_seen,
           {sums}
    FROM t GROUP BY session_id
),
pairs AS (
    SELECT t.session_id, count(*) AS requests,
           {pair_sums}
    FROM t JOIN w USING (message_id)
    GROUP BY t.session_id
)
SELECT tr.session_id,
       least(tr.first_seen, wire.first_seen) AS first_seen, greatest(tr.last_seen, wire.last_seen) AS last_seen,
       wire.requests AS wire_requests, tr.requests AS transcript_requests, coalesce(pairs.requests, 0) AS matched_requests,
       {select_cols}
FROM tr JOIN wire USING (session_id) LEFT JOIN pairs USING (session_id)
ORDER BY last_seen DESC, tr.session_id
"""


def _reconcile_sql(session: str | None) -> str:
    sums = ",\n           ".join(f"coalesce(sum({k}), 0)::BIGINT AS {k}" for k in TOKEN_KINDS)
    pair_sums = ",\n           ".join(
        f"coalesce(sum(w.{k}), 0)::BIGINT AS w_{k}, coalesce(sum(t.{k}), 0)::BIGINT AS t_{k}" for k in TOKEN_KINDS
    )
    select_cols = ",\n       ".join(
        f"wire.{k} AS wire_{k}, tr.{k} AS transcript_{k}, coalesce(pairs.w_{k}, 0) AS mw_{k}, coalesce(pairs.t_{k}, 0) AS mt_{k}"
        for k in TOKEN_KINDS
    )
    return _RECONCILE_SQL.format(
        session_filter="AND session_id = $session" if session is not None else "",
        sums=sums,
        pair_sums=pair_sums,
        select_cols=select_cols,
    )


def reconcile(con: duckdb.DuckDBPyConnection, session: str | None = None) -> dict[str, Any]:
    """Per session seen both on the wire and in transcripts: tokens per kind on each side and
    the gap (wire minus transcript), over the whole session and over the messages both saw.

    Schema llmsm.reconcile/1 (docs/reports.md).
    """
    params = {"session": session} if session is not None else {}
    rows = _run(con, _reconcile_sql(session), params)
    sessions = []
    totals = {
        "wire_requests": 0,
        "transcript_requests": 0,
        "matched_requests": 0,
        "wire": dict.fromkeys(TOKEN_KINDS, 0),
        "transcript": dict.fromkeys(TOKEN_KINDS, 0),
        "gap": dict.fromkeys(TOKEN_KINDS, 0),
        "matched_gap": dict.fromkeys(TOKEN_KINDS, 0),
    }
    for r in rows:
        wire = {k: int(r[f"wire_{k}"]) for k in TOKEN_KINDS}
        tr = {k: int(r[f"transcript_{k}"]) for k in TOKEN_KINDS}
        item = {
            "session_id": r["session_id"],
            "first_seen": _utc_iso(r["first_seen"]),
            "last_seen": _utc_iso(r["last_seen"]),
            "wire_requests": int(r["wire_requests"]),
            "transcript_requests": int(r["transcript_requests"]),
            "matched_requests": int(r["matched_requests"]),
            "wire": wire,
            "transcript": tr,
            "gap": {k: wire[k] - tr[k] for k in TOKEN_KINDS},
            "matched_gap": {k: int(r[f"mw_{k}"]) - int(r[f"mt_{k}"]) for k in TOKEN_KINDS},
        }
        sessions.append(item)
        for name in ("wire_requests", "transcript_requests", "matched_requests"):
            totals[name] += item[name]
        for part in ("wire", "transcript", "gap", "matched_gap"):
            for k in TOKEN_KINDS:
                totals[part][k] += item[part][k]
    return {"schema": RECONCILE_SCHEMA, "session": session, "sessions": sessions, "totals": totals}


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ {_sql_string(value.astimezone(timezone.utc).isoformat())}"


def export(
    db: str | os.PathLike[str],
    fmt: str,
    output: str | os.PathLike[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    timeout: float = 5.0,
) -> int:
    """Write every row of the `requests` view (all its columns, in order, oldest first) to
    `output` with DuckDB's COPY; returns the number of rows.

    The file appears atomically (written next to it, then renamed). Timestamps in CSV/JSONL are
    written in UTC. The connection is read-only on the database but may write files, so it is
    not the locked-down query connection.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadInput(f"unknown format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    out = Path(output).expanduser()
    if out.is_dir():
        raise BadInput(f"--output {out} is a directory: give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"--output: directory {parent} does not exist")
    options = {"parquet": "FORMAT parquet, COMPRESSION zstd", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
    where = []
    if since is not None:
        where.append(f"started_at >= {_ts_literal(since)}")
    if until is not None:
        where.append(f"started_at < {_ts_literal(until)}")
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        con = connect(db, read_only=True, timeout=timeout)
        try:
            con.execute("SET TimeZone = 'UTC'")
            row = con.execute(
                f"COPY (SELECT * FROM requests {clause} ORDER BY started_at, id) TO {_sql_string(str(tmp))} ({options})"
            ).fetchone()
        except duckdb.Error as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"export failed: {text}") from exc
        finally:
            con.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    cutoff: datetime
    matched: int  # events older than the cutoff (deleted unless dry_run)
    remaining: int
    dry_run: bool
    size_before: int
    size_after: int


def prune(db: str | os.PathLike[str], cutoff: datetime, *, dry_run: bool = False, timeout: float = 5.0) -> PruneResult:
    """Delete events with started_at strictly before `cutoff`, then compact the file.

    An event exactly at the cutoff is kept. `dry_run` only counts (read-only connection).
    """
    path = Path(db).expanduser()
    if not path.exists():
        raise DatabaseMissing.at(path)
    size_before = _size(path)
    if dry_run:
        con = connect(path, read_only=True, timeout=timeout)
        try:
            row = con.execute(
                "SELECT count(*) FILTER (WHERE started_at < ?), count(*) FILTER (WHERE started_at >= ?) FROM events",
                [cutoff, cutoff],
            ).fetchone()
        except duckdb.Error as exc:
            raise StoreError(f"cannot count events in {path}: {exc}") from exc
        finally:
            con.close()
        return PruneResult(cutoff, int(row[0]), int(row[1]), True, size_before, size_before)
    con = connect(path, timeout=timeout)
    try:
        try:
            row = con.execute("DELETE FROM events WHERE started_at < ?", [cutoff]).fetchone()
            deleted = int(row[0]) if row else 0
            remaining = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
            con.execute("CHECKPOINT")
            if deleted:
                _compact_into_place(con, path)
        except duckdb.Error as exc:
            raise StoreError(f"cannot prune {path}: {exc}") from exc
    finally:
        con.close()
    return PruneResult(cutoff, deleted, remaining, False, size_before, _size(path))


def _compact_into_place(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """DuckDB reuses deleted space but never gives it back: copy the database into a new file
    and move that over the old one. `con` holds the file's lock throughout, so a running gateway
    keeps its events (memory and journal) until this is done, then writes them into the new file."""
    fresh = path.with_name(path.name + ".compact")
    fresh.unlink(missing_ok=True)
    name = con.execute("SELECT current_database()").fetchone()[0]
    quoted = str(fresh).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS llmsm_compact")
    try:
        con.execute(f'COPY FROM DATABASE "{name.replace(chr(34), chr(34) * 2)}" TO llmsm_compact')
    finally:
        con.execute("DETACH llmsm_compact")
    os.replace(fresh, path)


def _size(path: Path) -> int:
    total = 0
    for p in (path, Path(str(path) + ".wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
