"""What the live views share: the dashboard frame (analytics/dashboard.py) and the status line
(analytics/statusline.py).

- when a session counts as active or idle, and the window the views look back over;
- budgets and quota windows as of a moment: one query reads the `budget_status` rows (only when
  the database has budgets and the view, which the catalog query tells) and the latest
  rate-limit headers per account, provider and header set of the last 7 days
  (`QUOTA_LOOKBACK`); `quota_windows` reads those headers by the rules of the `quota` view
  (bounded in time, so its cost does not grow with the table, and evaluated as of `at`).

Standard library only at import (quota.py is imported when there are headers to read): the
status line imports this module and must stay cheap.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "ACTIVE_MINUTES",
    "BUDGET_STATE_RANK",
    "CATALOG_SQL",
    "DEFAULT_WINDOW_MINUTES",
    "IDLE_MINUTES",
    "QUOTA_LOOKBACK",
    "budget_key",
    "extras_sql",
    "quota_windows",
    "top_quota",
]

UTC = timezone.utc
ACTIVE_MINUTES = 5.0  # like the sessions view: active = seen within 5 minutes, idle = within 1 hour
IDLE_MINUTES = 60.0
DEFAULT_WINDOW_MINUTES = 60.0  # watch / health / statusline show sessions seen within this window
QUOTA_LOOKBACK = timedelta(days=7)  # quota headers older than the longest usual window (7d) have reset
BUDGET_STATE_RANK = {"exceeded": 2, "warn": 1, "ok": 0}

# From the catalog, so an older database without them still answers: does a view need the
# budget_status view (budgets defined, the view there)?
CATALOG_SQL = """SELECT
        (SELECT coalesce(max(estimated_size), 0) FROM duckdb_tables()
         WHERE table_name = 'budgets' AND schema_name = 'main' AND database_name = current_database()) AS n_budgets,
        (SELECT count(*) > 0 FROM duckdb_views()
         WHERE view_name = 'budget_status' AND schema_name = 'main' AND database_name = current_database()) AS budget_view"""

_BUDGET_COLUMNS = ("id", "scope", "target", "max_tokens", "max_usd", "warn_at", "used_tokens", "used_usd",
                   "tokens_pct", "usd_pct", "pct", "state")
_BUDGET_SQL = f"SELECT {', '.join(_BUDGET_COLUMNS)} FROM budget_status"
# The newest response per account, provider and set of header names (the `shapes` step of the
# quota view), within QUOTA_LOOKBACK before `at`: the newest response carrying a window is one
# of these. quota.parse_headers then reads them by the view's rules.
_QUOTA_SQL = """
SELECT account, provider, max(started_at) AS observed_at, arg_max(ratelimit::VARCHAR, started_at) AS headers
FROM events
WHERE ratelimit IS NOT NULL AND started_at <= $at AND started_at >= $quota_from
GROUP BY account, provider, hash(list_sort(json_keys(ratelimit)))  -- hashed: 3x cheaper to group than the list
"""


def extras_sql(with_budgets: bool, budget_where: str = "") -> str:
    """One row: `quota` (the header rows for quota_windows) and, with budgets, `budgets` (the
    budget_status rows, `budget_where` applied). Parameters: $at, $quota_from."""
    parts = [f"(SELECT list(q) FROM ({_QUOTA_SQL}) AS q) AS quota"]
    if with_budgets:
        parts.append(f"(SELECT list(b) FROM ({_BUDGET_SQL} {budget_where}) AS b) AS budgets")
    return "SELECT " + ", ".join(parts)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def quota_windows(rows: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """Quota windows (the dicts of `quota.quota_summary`: account, provider, source, window,
    window_minutes, used_pct, limit, remaining, resets_at, status, observed_at, stale, text) from
    the newest rate-limit headers per account, provider and header set (`rows`: account,
    provider, observed_at, headers as JSON text). Per account and window the newest wins."""
    from .quota import describe, parse_headers

    seen: set[tuple] = set()
    out: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: r["observed_at"], reverse=True):
        headers = r["headers"]
        if isinstance(headers, str):
            headers = json.loads(headers)
        if not isinstance(headers, dict):
            continue
        observed = _utc(r["observed_at"])
        for w in parse_headers({str(k): str(v) for k, v in headers.items() if v is not None}, observed):
            key = (r["account"], r["provider"], w.source, w.window)
            if key in seen:
                continue
            seen.add(key)
            d = {
                "account": r["account"], "provider": r["provider"], "source": w.source, "window": w.window,
                "window_minutes": w.window_minutes,
                "used_pct": round(float(w.used_pct), 2) if w.used_pct is not None else None,
                "limit": w.limit, "remaining": w.remaining, "resets_at": w.resets_at, "status": w.status,
                "observed_at": observed,
            }
            d["stale"] = bool(w.resets_at is not None and w.resets_at < at)
            d["text"] = describe(d, at)
            out.append(d)
    out.sort(key=lambda d: (d["account"] is None, d["account"] or "", d["provider"] or "",
                            -(d["used_pct"] if d["used_pct"] is not None else -1.0), d["window"]))
    return out


def top_quota(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most used window per account that has not reset since it was seen, most used first."""
    best: dict[Any, dict[str, Any]] = {}
    for w in windows:
        if w.get("stale") or w.get("used_pct") is None:
            continue
        cur = best.get(w["account"])
        if cur is None or w["used_pct"] > cur["used_pct"]:
            best[w["account"]] = w
    return sorted(best.values(), key=lambda w: -w["used_pct"])


def budget_key(b: dict[str, Any]) -> tuple:
    """Budgets in order of need: exceeded, then warn, then ok; the most used, then the soonest
    to run out first."""
    left = b.get("minutes_left")
    return (-BUDGET_STATE_RANK.get(b["state"], 0), -(b["pct"] or 0.0), left if left is not None else float("inf"))
