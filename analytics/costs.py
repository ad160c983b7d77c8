"""Cost totals (`llmsm cost`): USD and tokens of the counted events, by session, model, client or day.

Costs are computed per request by the gateway (analytics/prices.py); this adds them up over
`counted_events(since, until)` (views.sql), the rows every report counts. A request with usage
but no price leaves the total's cost out (never a silent $0) and is listed in
`unpriced_models`. docs/cost.md describes the JSON.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - the CLI reads GROUPINGS at start-up, before any query
    import duckdb

__all__ = ["GROUPINGS", "cost_report"]

# grouping -> (the row's key, a detail column: the session's label, the model's providers)
_GROUPS = {
    "session": ("coalesce(session_id, '(no session)')", "arg_max(label, started_at) FILTER (WHERE label IS NOT NULL)"),
    "model": ("coalesce(model, requested_model, '(unknown)')", "string_agg(DISTINCT provider, ', ')"),
    "client": ("coalesce(client, 'unknown')", "NULL"),
    "day": ("CAST(CAST(started_at AS DATE) AS VARCHAR)", "NULL"),  # the local date (DuckDB's TimeZone)
}
GROUPINGS = tuple(_GROUPS)
_DETAIL = {"session": "label", "model": "provider"}

_SUMS = """
    count(*) AS requests,
    coalesce(sum(input_tokens), 0)::BIGINT AS input_tokens,
    coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens,
    coalesce(sum(cache_read_tokens), 0)::BIGINT AS cache_read_tokens,
    coalesce(sum(cache_write_tokens), 0)::BIGINT AS cache_write_tokens,
    coalesce(sum(total_tokens), 0)::BIGINT AS total_tokens,
    sum(cost_usd) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND total_tokens > 0) AS unpriced_requests
"""
_COUNTED = "counted_events($since, $until)"


def cost_report(
    con: duckdb.DuckDBPyConnection | None, by: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """{by, since, until, currency, rows, total, unpriced_models} (docs/cost.md). `since` is
    inclusive, `until` exclusive. With no database (`con` None) nothing was recorded: no rows.
    Raises duckdb.Error when a query fails."""
    if by not in _GROUPS:
        raise ValueError(f"unknown grouping {by!r}: one of {', '.join(GROUPINGS)}")
    report: dict[str, Any] = {
        "by": by, "since": since, "until": until, "currency": "USD", "rows": [], "total": None, "unpriced_models": [],
    }
    if con is None:
        return report
    key, detail = _GROUPS[by]
    params = {"since": since, "until": until}
    order = "key" if by == "day" else "cost_usd DESC NULLS LAST, total_tokens DESC, key"
    rows = _dicts(con.execute(
        f"SELECT {key} AS key, {detail} AS detail, {_SUMS} FROM {_COUNTED} GROUP BY 1 ORDER BY {order}", params))
    [report["total"]] = _dicts(con.execute(f"SELECT {_SUMS} FROM {_COUNTED}", params))
    report["unpriced_models"] = _dicts(con.execute(
        f"""
        SELECT provider, coalesce(model, requested_model, '(unknown)') AS model, count(*) AS requests,
               sum(total_tokens)::BIGINT AS total_tokens, min(started_at) AS first_seen, max(started_at) AS last_seen
        FROM {_COUNTED} WHERE cost_usd IS NULL AND total_tokens > 0
        GROUP BY ALL ORDER BY total_tokens DESC
        """,
        params,
    ))
    for r in rows:
        r[by] = r.pop("key")
        value = r.pop("detail")
        if by in _DETAIL:
            r[_DETAIL[by]] = value
    report["rows"] = rows
    return report


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
