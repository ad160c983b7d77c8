"""Team budgets: rows of `team_budgets` in the team database, used = the team's totals in the
budget's period (from `usage_hourly`), enforced by every gateway through its BudgetGuard's
team book (analytics/budgets.py BudgetBook: the same verdicts and the same refusal).

Periods start at local midnight (the day, the first of the month) of the gateway that checks;
the rollup is hourly, so zones with a whole-hour offset are exact."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from llmsm.analytics.budgets import DEFAULT_WARN_AT, TEAM_SCOPES, Budget, new_budget_id

PERIODS = ("day", "month")
_COLS = ("id", "scope", "target", "max_tokens", "max_usd", "warn_at", "created_at", "period")


def _local_midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day).astimezone()


def _budget(row: tuple) -> Budget:
    r = dict(zip(_COLS, row))
    return Budget(r["id"], r["scope"], r["target"], r["max_tokens"], r["max_usd"],
                  r["warn_at"] if r["warn_at"] is not None else DEFAULT_WARN_AT, r["created_at"], r["period"])


def used(con: Any, today: date) -> list[tuple[Budget, int, float]]:
    """Every team budget with what the team used in its current period."""
    sql = f"""
        SELECT {', '.join('b.' + c for c in _COLS)},
               coalesce(sum(u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens), 0)::bigint,
               coalesce(sum(u.cost_usd), 0)::float8
        FROM team_budgets b LEFT JOIN usage_hourly u
          ON u.hour >= CASE b.period WHEN 'day' THEN %(day)s ELSE %(month)s END
         AND (b.scope = 'all' OR (b.scope = 'developer' AND u.developer = b.target) OR (b.scope = 'project' AND u.project = b.target))
        GROUP BY b.id ORDER BY b.created_at, b.id"""
    cur = con.execute(sql, {"day": _local_midnight(today), "month": _local_midnight(today.replace(day=1))})
    return [(_budget(r[:8]), int(r[8]), float(r[9])) for r in cur.fetchall()]


def stored_ids(con: Any, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return {r[0] for r in con.execute("SELECT id FROM events WHERE id = ANY(%s)", [ids]).fetchall()}


def set_budget(con: Any, scope: str, target: str | None, period: str, *, max_tokens: int | None = None,
               max_usd: float | None = None, warn_at: float | None = None) -> tuple[Budget, bool]:
    """Create the team budget of (scope, target, period) or change its limits; (budget, created)."""
    if scope not in TEAM_SCOPES:
        raise ValueError(f"unknown team scope {scope!r}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if scope == "all":
        target = None
    elif not target:
        raise ValueError(f"a {scope} budget needs a {scope} name")
    if max_tokens is None and max_usd is None:
        raise ValueError("give --tokens or --usd (or both)")
    cur = con.execute(
        f"""INSERT INTO team_budgets (id, scope, target, period, max_tokens, max_usd, warn_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT ON CONSTRAINT team_budgets_scope DO UPDATE SET
              max_tokens = coalesce(excluded.max_tokens, team_budgets.max_tokens),
              max_usd = coalesce(excluded.max_usd, team_budgets.max_usd),
              warn_at = CASE WHEN %s THEN excluded.warn_at ELSE team_budgets.warn_at END
            RETURNING {', '.join(_COLS)}, (xmax = 0)""",
        [new_budget_id(), scope, target, period, max_tokens, max_usd,
         warn_at if warn_at is not None else DEFAULT_WARN_AT, warn_at is not None],
    )
    row = cur.fetchone()
    return _budget(row[:8]), bool(row[8])


def remove(con: Any, budget_id: str) -> Budget | None:
    row = con.execute(f"DELETE FROM team_budgets WHERE id = %s RETURNING {', '.join(_COLS)}", [budget_id.strip()]).fetchone()
    return _budget(row) if row else None


def remaining_window(period: str) -> timedelta:  # for messages: how long until it starts again
    now = datetime.now().astimezone()
    today = now.date()
    nxt = today + timedelta(days=1) if period == "day" else (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    return _local_midnight(nxt) - now
