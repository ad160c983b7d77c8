"""What the session list shows: the sort orders and the filter of `llmsm watch`'s app (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from llmsm.analytics.dashboard import SessionRow

# sort name -> (what the header says, the columns whose title sorts by it)
SORTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "health": ("health (most urgent first)", ("status", "score", "reason", "session")),
    "cost": ("cost (highest first)", ("cost",)),
    "burn": ("burn (fastest first)", ("burn", "tokens")),
    "last": ("last activity (latest first)", ("last", "age")),
}
SORT_ORDER = tuple(SORTS)
FIELDS = ("project", "client", "label", "status")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def sort_for_column(column: str) -> str | None:
    """The sort a click on a column title selects, if any."""
    for name, (_, columns) in SORTS.items():
        if column in columns:
            return name
    return None


def sort_rows(rows: list[SessionRow], how: str) -> list[SessionRow]:
    """`rows` (the frame's order: health, most urgent first) in the order `how` names; ties
    keep the health order."""
    if how == "cost":
        return sorted(rows, key=lambda r: -(r.cost_usd or 0.0))
    if how == "burn":
        return sorted(rows, key=lambda r: -r.burn_tokens_per_min)
    if how == "last":
        return sorted(rows, key=lambda r: r.last_seen or _EPOCH, reverse=True)
    return list(rows)


def _values(row: SessionRow) -> dict[str, str]:
    return {
        "project": (row.project or "").lower(),
        "client": (row.client or "").lower(),
        "label": f"{row.label or ''} {row.session_id}".lower(),
        "status": row.status.lower(),
    }


def matches(row: SessionRow, query: str) -> bool:
    """Every word of `query` is in the session's project, client, label (or id) or status;
    `field:word` looks in that field only (project:, client:, label:, status:)."""
    values = _values(row)
    for word in query.lower().split():
        name, sep, wanted = word.partition(":")
        if sep and name in FIELDS:
            if wanted not in values[name]:
                return False
        elif not any(word in v for v in values.values()):
            return False
    return True


def visible(rows: list[SessionRow], how: str, query: str) -> list[SessionRow]:
    shown = [r for r in rows if matches(r, query)] if query.strip() else list(rows)
    return sort_rows(shown, how)
