"""Team reports (`llmsm team report ...`) from the hourly rollup, and team sessions from the
team `events`: the local reports' JSON schema (llmsm.report/1, analytics/reports.py) with a
`developer` field on every row (None where a row spans developers: projects, models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmsm.analytics.reports import REPORT_SCHEMA, _add, _metrics, _utc_iso, _zero
from llmsm.analytics.team.schema import ROLLUP_SUMS

TEAM_REPORT_KINDS = ("daily", "weekly", "monthly", "developers", "projects", "models")
_UNIT = {"daily": ("day", "date"), "weekly": ("week", "week"), "monthly": ("month", "month")}


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


def build_report(con: Any, kind: str, *, tz: str, since: datetime | None = None, until: datetime | None = None,
                 developer: str | None = None) -> dict[str, Any]:
    if kind not in TEAM_REPORT_KINDS:
        raise ValueError(f"unknown team report {kind!r}: one of {', '.join(TEAM_REPORT_KINDS)}")
    where, params = _where(since, until, developer)
    sums = ", ".join(f"sum({n})::bigint AS {n}" for n in ROLLUP_SUMS) + ", sum(cost_usd) AS cost_usd"
    if kind in _UNIT:
        unit, key = _UNIT[kind]
        params["tz"] = tz
        group = f"date_trunc('{unit}', hour AT TIME ZONE %(tz)s)::date AS k, developer"
    elif kind == "developers":
        key, group = "developer", "developer AS k, developer"
    elif kind == "projects":
        key, group = "project", "project AS k, NULL::text AS developer"
    else:
        key, group = "model", "NULL AS k, NULL::text AS developer"
    cur = con.execute(f"SELECT {group}, provider, model, {sums} FROM usage_hourly WHERE {where} GROUP BY 1, 2, 3, 4", params)
    names = [d.name for d in cur.description]
    groups = [dict(zip(names, r)) for r in cur.fetchall()]
    rows_by: dict[tuple, dict[str, Any]] = {}
    for g in groups:
        m = _metrics({**g, "cost_usd": None if g["cost_usd"] is None else float(g["cost_usd"])})
        rk = (g["provider"], g["model"]) if kind == "models" else (g["k"], g["developer"])
        row = rows_by.get(rk)
        if row is None:
            row = rows_by[rk] = {"developer": g["developer"], **_zero(), "models": set()}
            if kind == "models":
                row.update(provider=g["provider"], model=g["model"])
            else:
                row[key] = g["k"].strftime("%Y-%m") if kind == "monthly" else (g["k"].isoformat() if kind in _UNIT else g["k"])
        _add(row, m)
        if g["model"] is not None:
            row["models"].add(g["model"])
    out = []
    for row in rows_by.values():
        row["models"] = sorted(row.pop("models"))
        if kind == "models":
            del row["models"]
        if row["cost_usd"] is not None:
            row["cost_usd"] = round(row["cost_usd"], 9)
        row["breakdown"] = None
        out.append(row)
    if kind in _UNIT:
        out.sort(key=lambda r: (r[key], r["developer"] or ""))
    else:
        out.sort(key=lambda r: (r["cost_usd"] is None, -(r["cost_usd"] or 0), -r["total_tokens"], str(r.get(key) or "")))
    totals = _zero()
    for r in out:
        _add(totals, r)
    if totals["cost_usd"] is not None:
        totals["cost_usd"] = round(totals["cost_usd"], 9)
    return {"schema": REPORT_SCHEMA, "report": kind, "timezone": tz, "since": _utc_iso(since), "until": _utc_iso(until),
            "client": None, "developer": developer, "rows": out, "totals": totals}


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
