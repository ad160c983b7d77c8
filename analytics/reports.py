"""Usage reports and reconciliation with transcripts (`llmsm report|reconcile`).

What counts is the `counted_events(since, until)` macro of views.sql, the one home of the
counting rule (docs/reports.md): API calls only, the wire winning over imported transcripts;
estimated rows are included and counted separately in ``estimated_requests``. Period
boundaries (daily/weekly/monthly) are taken in one time zone: the user's local zone by default
(DuckDB's ``TimeZone``, i.e. the ``TZ`` environment variable or the system zone), UTC, or any
IANA zone by name. Weeks start on Monday (ISO weeks). Times given on the command line are read
by analytics/timespec.py.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import duckdb

from .metrics import _AGG_NAMES, METRICS, REPORT_SCHEMA, TOKEN_KINDS, _add, _metrics, _utc_iso, _zero  # noqa: F401
from .store import BadInput, StoreError

__all__ = [
    "REPORT_SCHEMA",
    "RECONCILE_SCHEMA",
    "METRICS",
    "TOKEN_KINDS",
    "REPORT_KINDS",
    "local_timezone",
    "check_timezone",
    "build_report",
    "reconcile",
]

RECONCILE_SCHEMA = "llmsm.reconcile/1"

REPORT_KINDS = ("daily", "weekly", "monthly", "sessions", "models")


# --------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Adding up the counted events
# --------------------------------------------------------------------------------------------

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

# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

_PERIOD_UNIT = {"daily": ("day", "date"), "weekly": ("week", "week"), "monthly": ("month", "month")}


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
    params: dict[str, Any] = {"since": since, "until": until}
    where = ""
    if client is not None:
        where = "WHERE client = $client"
        params["client"] = client

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
    groups = _run(
        con,
        f"SELECT {key_sql}, provider, model, {_AGGREGATES}{extra_sql}\n"
        f"FROM counted_events($since, $until) {where} GROUP BY ALL",
        params,
    )

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
