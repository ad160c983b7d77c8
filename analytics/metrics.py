"""The metrics of a usage report and how they add up (schema llmsm.report/1, docs/reports.md):
the one home of these rules, shared by the local reports (analytics/reports.py) and the team
reports (analytics/team/reports.py). Pure: no database import, so that a team report (which
reads PostgreSQL) does not load DuckDB."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

REPORT_SCHEMA = "llmsm.report/1"

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
TOTAL_TOKEN_PARTS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")  # total_tokens: their sum
COST_DIGITS = 9  # a reported cost is rounded to this many decimals

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
    """The report metrics (METRICS, in order) of a group's sums: total_tokens is input + output
    + cache writes + cache reads (reasoning is part of output); a missing cost stays None."""
    cost = values["cost_usd"]
    i = int(values["input_tokens"] or 0)
    o = int(values["output_tokens"] or 0)
    cw = int(values["cache_write_tokens"] or 0)
    cr = int(values["cache_read_tokens"] or 0)
    return {
        "requests": int(values["requests"] or 0),
        "errors": int(values["errors"] or 0),
        "estimated_requests": int(values["estimated_requests"] or 0),
        "transcript_requests": int(values["transcript_requests"] or 0),
        "input_tokens": i,
        "output_tokens": o,
        "cache_write_tokens": cw,
        "cache_read_tokens": cr,
        "reasoning_tokens": int(values["reasoning_tokens"] or 0),
        "total_tokens": i + o + cw + cr,
        "cost_usd": None if cost is None else round(float(cost), COST_DIGITS),
        "unpriced_requests": int(values["unpriced_requests"] or 0),
    }


def _zero() -> dict[str, Any]:
    return _metrics({name: (None if name == "cost_usd" else 0) for name in _AGG_NAMES})


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for name in METRICS:
        if name == "cost_usd":
            if row[name] is not None:
                total[name] = (total[name] or 0.0) + row[name]
        else:
            total[name] += row[name]


def _utc_iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()




assert tuple(_zero()) == METRICS  # _metrics writes every metric, in the order of METRICS
assert _metrics({**dict.fromkeys(_AGG_NAMES, 1), "cost_usd": None})["total_tokens"] == len(TOTAL_TOKEN_PARTS)
