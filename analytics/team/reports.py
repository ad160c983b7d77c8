"""Team reports (`llmsm team report ...`) from the hourly rollup, and team sessions from the
team `events`: the local reports' JSON schema (llmsm.report/1, analytics/reports.py) with a
`developer` field on every row (None where a row spans developers: projects, models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmsm.analytics.metrics import COST_DIGITS, METRICS, REPORT_SCHEMA, TOTAL_TOKEN_PARTS, _add, _metrics, _utc_iso, _zero
from llmsm.analytics.team.schema import ROLLUP_SUMS

TEAM_REPORT_KINDS = ("daily", "weekly", "monthly", "developers", "projects", "models")
_UNIT = {"daily": ("day", "date", "YYYY-MM-DD"), "weekly": ("week", "week", "YYYY-MM-DD"), "monthly": ("month", "month", "YYYY-MM")}


def _where(since: datetime | None, until: datetime | None, developer: str | None, col: str = "hour") -> tuple[str, dict]:
    where, params = ["true"], {}
    if since is not None:
        where.append(f"{col} >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append(f"{col} < %(until)s")
        params["until"] = until
    if developer is not None:
        where.append("developer = %(developer)s")
        params["developer"] = developer
    return " AND ".join(where), params


_MOVED_SQL = """
WITH r AS (SELECT min(hour) AS first, max(hour) + interval '1 hour' AS last FROM usage_hourly),
b AS (SELECT greatest(coalesce(%(since)s, first), first) AS lo, least(coalesce(%(until)s, last), last) AS hi
      FROM r WHERE first IS NOT NULL),  -- within the data: `--since 0001-01-01` walks no empty hours
d AS (SELECT lo, hi, (lo AT TIME ZONE 'UTC')::date AS lo_day, ((hi - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS hi_day
      FROM b WHERE lo < hi)
SELECT lo_day, hi_day,
       coalesce(array_agg(h) FILTER (WHERE NOT (h >= lo AND h < hi AND (NOT %(by_day)s OR (h AT TIME ZONE %(tz)s)::date = (h AT TIME ZONE 'UTC')::date))), '{}'),
       coalesce(array_agg(h) FILTER (WHERE h >= lo AND h < hi AND %(by_day)s AND (h AT TIME ZONE %(tz)s)::date <> (h AT TIME ZONE 'UTC')::date), '{}')
FROM d LEFT JOIN generate_series(lo_day::timestamp AT TIME ZONE 'UTC', hi_day::timestamp AT TIME ZONE 'UTC' + interval '23 hours',
                                 interval '1 hour') AS h ON true
GROUP BY lo_day, hi_day"""


def build_report(con: Any, kind: str, *, tz: str, since: datetime | None = None, until: datetime | None = None,
                 developer: str | None = None) -> dict[str, Any]:
    """One team report, added up by PostgreSQL from the daily rollup (`usage_daily`, one row per
    UTC day and key) corrected by the hourly one: the hours of those days that lie outside
    [since, until) are taken out, and, for the periods, the hours whose day in `tz` is not
    their UTC day are moved to their local day (an hour of Paris's evening, five of New
    York's: a few percent to a fifth of the hours). Only the report's rows are fetched, in
    order for the periods; every metric is a sum, so the result is the hours' sum exactly."""
    if kind not in TEAM_REPORT_KINDS:
        raise ValueError(f"unknown team report {kind!r}: one of {', '.join(TEAM_REPORT_KINDS)}")
    by_day = kind in _UNIT
    with con.transaction(), con.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")  # a year of hours sorts in memory
        cur.execute(_MOVED_SQL, {"since": since, "until": until, "tz": tz, "by_day": by_day})
        bounds = cur.fetchone()
        fetched, names = [], []
        if bounds is not None and bounds[0] is not None:
            lo_day, hi_day, moved_out, moved_in = bounds
            sql, params = _report_sql(kind, developer)
            cur.execute(sql, {**params, "tz": tz, "lo_day": lo_day, "hi_day": hi_day, "moved_out": moved_out, "moved_in": moved_in})
            names = [d.name for d in cur.description]
            fetched = cur.fetchall()
    key = _UNIT[kind][1] if by_day else {"developers": "developer", "projects": "project", "models": "model"}[kind]
    out: list[dict[str, Any]] = []
    if kind == "models":
        for r in fetched:
            g = dict(zip(names, r))
            out.append({"developer": None, **_metrics(g), "provider": g["provider"], "model": g["model"], "breakdown": None})
    else:
        # Each fetched row: developer, the METRICS (summed and totalled by PostgreSQL), the row
        # key (but for developers), model; one per (row key, developer, model), in order.
        keys = ("developer", *METRICS) + (() if kind == "developers" else (key,))
        n, at_key, ncost = len(keys), (0 if kind == "developers" else len(keys) - 1), METRICS.index("cost_usd") + 1
        row: dict[str, Any] = {}
        last: Any = object()
        merged = []
        for r in fetched:
            model = r[n]
            if (r[at_key], r[0]) != last:
                last = (r[at_key], r[0])
                row = dict(zip(keys, r))
                if r[ncost] is not None:
                    row["cost_usd"] = round(r[ncost], COST_DIGITS)
                row["models"] = [] if model is None else [model]
                row["breakdown"] = None
                out.append(row)
                continue
            m = dict(zip(METRICS, r[1:]))  # another model of the same row (rare): added up
            if m["cost_usd"] is not None:
                m["cost_usd"] = round(m["cost_usd"], COST_DIGITS)
            _add(row, m)
            merged.append(row)
            if model is not None:
                row["models"].append(model)
        for row in merged:  # a row of several models: its models in order, its cost rounded again
            row["models"].sort()
            if row["cost_usd"] is not None:
                row["cost_usd"] = round(row["cost_usd"], COST_DIGITS)
    if not by_day:
        out.sort(key=lambda r: (r["cost_usd"] is None, -(r["cost_usd"] or 0), -r["total_tokens"], str(r.get(key) or "")))
    totals = _zero()
    for r in out:
        _add(totals, r)
    if totals["cost_usd"] is not None:
        totals["cost_usd"] = round(totals["cost_usd"], 9)
    return {"schema": REPORT_SCHEMA, "report": kind, "timezone": tz, "since": _utc_iso(since), "until": _utc_iso(until),
            "client": None, "developer": developer, "rows": out, "totals": totals}


def _report_sql(kind: str, developer: str | None) -> tuple[str, dict[str, Any]]:
    """The report's statement over the parts: the daily rows of [lo_day, hi_day], minus the
    hours `moved_out` (at their UTC day), plus the hours `moved_in` (at their local day)."""
    dev, params = ("AND developer = %(developer)s", {"developer": developer}) if developer is not None else ("", {})
    cols = "developer, project, provider, model"
    plus = ", ".join(ROLLUP_SUMS) + ", cost_usd, priced_hours"
    minus = ", ".join(f"-{n}" for n in ROLLUP_SUMS) + ", -coalesce(cost_usd, 0), -(cost_usd IS NOT NULL)::int"
    moved = ", ".join(ROLLUP_SUMS) + ", coalesce(cost_usd, 0), (cost_usd IS NOT NULL)::int"
    parts = f"""
        SELECT day, {cols}, {plus} FROM usage_daily WHERE day BETWEEN %(lo_day)s AND %(hi_day)s {dev}
        UNION ALL
        SELECT (hour AT TIME ZONE 'UTC')::date, {cols}, {minus} FROM usage_hourly WHERE hour = ANY(%(moved_out)s) {dev}
        UNION ALL
        SELECT (hour AT TIME ZONE %(tz)s)::date, {cols}, {moved} FROM usage_hourly WHERE hour = ANY(%(moved_in)s) {dev}"""
    cost = "CASE WHEN sum(priced_hours) > 0 THEN sum(cost_usd) END AS cost_usd"
    if kind == "models":
        sql = (f"SELECT NULL::text AS developer, provider, model, " + ", ".join(f"sum({n})::bigint AS {n}" for n in ROLLUP_SUMS)
               + f", {cost} FROM ({parts}) p(day, {cols}, {plus}) GROUP BY provider, model HAVING sum(requests) <> 0")
        return sql, params
    if kind in _UNIT:
        unit, _, fmt = _UNIT[kind]
        k = "day" if unit == "day" else f"date_trunc('{unit}', day)::date"
        dev_col, key_cols, group, order = "developer", f"to_char({k}, '{fmt}') AS k, ", f"{k}, developer", \
            'ORDER BY k, developer COLLATE "C"'
    elif kind == "developers":
        dev_col, key_cols, group, order = "developer", "", "developer", "ORDER BY 1"
    else:
        dev_col, key_cols, group, order = "NULL::text", "project AS k, ", "project", "ORDER BY k"
    metrics = []
    for name in METRICS:
        if name == "total_tokens":
            metrics.append("(" + " + ".join(f"sum({p})" for p in TOTAL_TOKEN_PARTS) + ")::bigint")
        elif name == "cost_usd":
            metrics.append(cost)
        else:
            metrics.append(f"sum({name})::bigint")
    # One row per (row key, model): the caller merges a key's models (few) into its row.
    sql = f"""
        SELECT {dev_col} AS developer, {", ".join(metrics)}, {key_cols}model FROM ({parts}) p(day, {cols}, {plus})
        GROUP BY {group}, model HAVING sum(requests) <> 0 {order}"""
    return sql, params


def sessions(con: Any, *, since: datetime | None = None, until: datetime | None = None, developer: str | None = None,
             limit: int = 50) -> dict[str, Any]:
    """The team's sessions, most recent first: the local `report sessions` rows plus developer."""
    where, params = _where(since, until, developer, col="started_at")
    params["limit"] = limit
    cur = con.execute(
        f"""SELECT session_id, developer, max(project) AS project,
                   (array_agg(label ORDER BY started_at DESC) FILTER (WHERE label IS NOT NULL))[1] AS label,
                   (array_agg(client ORDER BY started_at DESC) FILTER (WHERE client IS NOT NULL AND client <> 'unknown'))[1] AS client,
                   min(started_at) AS first_seen, max(coalesce(ended_at, started_at)) AS last_seen,
                   count(*) AS requests, count(*) FILTER (WHERE outcome <> 'ok') AS errors,
                   count(*) FILTER (WHERE usage_source = 'estimated') AS estimated_requests,
                   count(*) FILTER (WHERE usage_source = 'transcript') AS transcript_requests,
                   coalesce(sum(input_tokens), 0)::bigint AS input_tokens, coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
                   coalesce(sum(cache_write_tokens), 0)::bigint AS cache_write_tokens,
                   coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read_tokens,
                   coalesce(sum(reasoning_tokens), 0)::bigint AS reasoning_tokens, sum(cost_usd) AS cost_usd,
                   count(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens > 0 OR output_tokens > 0 OR cache_read_tokens > 0
                       OR cache_write_tokens > 0)) AS unpriced_requests,
                   array_agg(DISTINCT model) FILTER (WHERE model IS NOT NULL) AS models
            FROM events WHERE counted AND {where}
            GROUP BY session_id, developer ORDER BY last_seen DESC LIMIT %(limit)s""",
        params,
    )
    names = [d.name for d in cur.description]
    rows = []
    totals = _zero()
    for r in cur.fetchall():
        g = dict(zip(names, r))
        m = _metrics({**g, "cost_usd": None if g["cost_usd"] is None else float(g["cost_usd"])})
        rows.append({"session_id": g["session_id"], "developer": g["developer"], "project": g["project"], "label": g["label"],
                     "client": g["client"] or "unknown", "first_seen": _utc_iso(g["first_seen"]),
                     "last_seen": _utc_iso(g["last_seen"]), **m, "models": sorted(g["models"] or []), "breakdown": None})
        _add(totals, m)
    return {"schema": REPORT_SCHEMA, "report": "sessions", "timezone": "UTC", "since": _utc_iso(since),
            "until": _utc_iso(until), "client": None, "developer": developer, "rows": rows, "totals": totals}
