"""How llmsm writes numbers and reasons for people: token counts, dollars, the few words of a
health reason, the status line and its colours.

analytics/ returns data (kinds, numbers, structured reasons); the commands format them with
these. Standard library only at import (the names of error kinds come from
analytics/health_rules.py when a reason needs them), cheap to import: `llmsm statusline` uses
this module before any CLI framework is loaded, and `llmsm cost` or `report` pay nothing for it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the status line ~4 ms
if TYPE_CHECKING:  # pragma: no cover
    from llmsm.analytics.health import SessionHealth
    from llmsm.analytics.statusline import QuickHealth, StatusLine

__all__ = [
    "QUOTA_CRITICAL_PCT",
    "QUOTA_WARN_PCT",
    "bar_columns",
    "format_session_line",
    "format_statusline",
    "human_tokens",
    "human_usd",
    "paint",
    "quota_level",
    "short_path",
    "short_reason",
    "statusline_reason",
]

QUOTA_WARN_PCT = 70.0  # a quota window this used shows yellow ...
QUOTA_CRITICAL_PCT = 90.0  # ... and this used, red


def human_tokens(n: int | float | None) -> str:
    """Token counts everywhere: 1234 -> 1.2k, 154321 -> 154k, 1234567 -> 1.2M, 1.2B; three
    significant digits at most, so columns stay narrow."""
    if not n:
        return "0"
    for unit, size in (("B", 1_000_000_000), ("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(int(n))


def short_path(path: str | None, parts: int = 2) -> str:
    """A project directory as people recognise it: its last `parts` path parts
    (/home/u/work/shop -> work/shop); "" for none."""
    if not path:
        return ""
    kept = [p for p in path.replace("\\", "/").split("/") if p][-parts:]
    return "/".join(kept) or path


def human_usd(value: float | None, missing: str = "") -> str:
    """Dollars as every command shows them: $1,234 · $12.34 · $0.0041 (small costs keep their
    first digits instead of rounding to $0.00); `missing` for an unknown (unpriced) cost."""
    if value is None:
        return missing
    if value >= 100:
        return f"${value:,.0f}"
    if value == 0 or value >= 0.01:
        return f"${value:,.2f}"
    return f"${value:.2g}" if value >= 0.0001 else "<$0.0001"


def quota_level(pct: float | None) -> str | None:
    """'critical' from 90 % used, 'warn' from 70 %, else None."""
    if pct is None:
        return None
    return "critical" if pct >= QUOTA_CRITICAL_PCT else "warn" if pct >= QUOTA_WARN_PCT else None


# --------------------------------------------------------------------------------------------
# A health reason in a few words (the dashboard's "why" column, the status line)
# --------------------------------------------------------------------------------------------


def _minutes(minutes: float) -> str:
    return f"{minutes:.0f}m" if minutes < 90 else f"{minutes / 60:.1f}h"


def _context_words(fill: float) -> str:
    return f"context {fill:.0%}"


def _error_words(n: int, kind: str) -> str:
    from llmsm.analytics.health_rules import ERROR_LABELS

    return f"{n} error{'s' if n != 1 else ''}: {ERROR_LABELS.get(kind, kind)}"


def _cache_cold_words(idle_seconds: float | None) -> str:
    return f"cache cold (idle {_minutes((idle_seconds or 0) / 60.0)})"


def _conflict_words(path: str, other: str) -> str:
    """"conflict: app.py with refactor": the file's name, the other session's label (or the
    start of its id)."""
    name = path.rstrip("/").rsplit("/", 1)[-1] or path
    who = other if len(other) <= 16 else other[:12]
    return f"conflict: {name} with {who}"


def short_reason(health: SessionHealth | None) -> str:
    """The top reason in a few words ("context 87%", "4 errors: overloaded (529)")."""
    if health is None or not health.reasons:
        return ""
    r = health.reasons[0]
    f = r.factor
    if f == "context_fill" and health.context_fill is not None:
        return _context_words(health.context_fill)
    if f == "context_growth" and health.turns_left is not None:
        return f"~{health.turns_left} turns left"
    if f == "cache_cold":
        return _cache_cold_words(health.idle_seconds)
    if f == "cache_share" and health.cache_read_share is not None:
        return f"cache hits {health.cache_read_share:.0%}"
    if f == "errors":
        kinds = health.error_kinds
        if kinds:
            from llmsm.analytics.health_rules import top_error_kind

            return _error_words(health.recent_errors, r.kind or top_error_kind(kinds))
        return r.message
    if f == "tool_errors":
        return f"{health.tool_errors} tool failures"
    if f == "retry_loop":
        return f"retry loop x{health.retry_repeats}"
    if f == "slowdown" and health.ttft_ratio is not None:
        return f"slower: ttft {health.ttft_ratio:.1f}x"
    if f == "context_rot":
        return f"{health.turns_since_compaction} turns since compaction"
    if f == "file_conflict" and health.conflicts:
        c = health.conflicts[0]
        return _conflict_words(c["path"], c.get("other_label") or c["other_session"])
    if f == "budget" and health.budget_fraction is not None:
        text = f"budget {health.budget_fraction:.0%}"
        left = health.budget_minutes_left
        if left is not None and health.budget_fraction < 1:
            text += f" ~{_minutes(left)} left"
        return text
    return r.message


def statusline_reason(q: QuickHealth | None) -> str:
    """The quick check's top reason in the words `short_reason` uses for the same reason."""
    if q is None or q.factor is None:
        return ""
    if q.factor == "context_fill" and q.context_fill is not None:
        return _context_words(q.context_fill)
    if q.factor == "errors" and q.error_kind is not None:
        return _error_words(q.errors, q.error_kind)
    if q.factor == "cache_cold":
        return _cache_cold_words(q.idle_seconds)
    if q.factor == "file_conflict" and q.conflict_path and q.conflict_with:
        return _conflict_words(q.conflict_path, q.conflict_with)
    return q.factor


# --------------------------------------------------------------------------------------------
# The status line
# --------------------------------------------------------------------------------------------

_ANSI = {"critical": "1;31", "warn": "33", "degraded": "33", "healthy": "32"}


def paint(text: str, level: str | None, color: bool) -> str:
    """`text` in the colour of `level` (critical: bold red, warn / degraded: yellow, healthy:
    green) when `color`; as is otherwise or for no level."""
    code = _ANSI.get(level or "")
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def format_statusline(s: StatusLine, *, color: bool = False) -> str:
    """`llmsm 3 active · worst: refactor degraded (context 87%) · today 1.2M tok $4.31`."""
    if s.note:
        return f"llmsm: {s.note}"
    parts = [f"llmsm {s.active} active" if s.active or s.recent else "llmsm idle"]
    if s.worst_name and s.worst is not None:
        worst = f"worst: {s.worst_name} {paint(s.worst.status, s.worst.status, color)}"
        reason = statusline_reason(s.worst)
        if reason:
            worst += f" ({reason})"
        parts.append(worst)
    elif s.recent:
        parts.append(paint("all healthy", "healthy", color))
    today = f"today {human_tokens(s.tokens_today)} tok"
    if s.cost_today:
        today += " " + human_usd(s.cost_today)
    parts.append(today)
    if s.quota_window and s.quota_pct is not None:
        parts.append(paint(f"{s.quota_window} {s.quota_pct:.0f}%", quota_level(s.quota_pct), color))
    if s.budget_pct is not None and s.budget_state in ("warn", "exceeded"):
        pct = f"{s.budget_pct:.0f}%" if s.budget_pct < 1e6 else "over"
        parts.append(paint(f"budget {pct}", "critical" if s.budget_state == "exceeded" else "warn", color))
    return " · ".join(parts)


def format_session_line(snap: dict, *, color: bool = False, now_ts: float | None = None) -> str:
    """One session's line from its status snapshot (analytics/session_status.py):
    `llmsm refactor · ctx 42% · degraded (2 errors: rate limited (429)) · $1.24 $0.40/h · budget 31% · 5h 72% (this 18%)`.
    A snapshot older than 5 minutes says when it was taken."""
    from types import SimpleNamespace

    parts = [f"llmsm {snap.get('name') or snap['session_id'][:12]}"]
    h = snap.get("health")
    fill = h.get("context_fill") if h else None
    if fill is not None:
        parts.append(paint(f"ctx {fill:.0%}", snap.get("context_level"), color))
    elif snap.get("context_tokens"):
        parts.append(f"ctx {human_tokens(snap['context_tokens'])} tok")
    if h:
        status = h.get("status") or "healthy"
        text = paint(status, status, color)
        reason = statusline_reason(SimpleNamespace(**h))
        if reason:
            text += f" ({reason})"
        parts.append(text)
    cost = human_usd(snap.get("cost_usd")) + ("*" if snap.get("unpriced") else "")
    burn = snap.get("burn_usd_per_min") or 0.0
    if burn > 0:
        cost += f" {human_usd(burn * 60)}/h"
    parts.append(cost)
    b = snap.get("budget")
    if b:
        pct = f"{b['pct']:.0f}%" if b["pct"] < 1e6 else "over"
        level = "critical" if b["state"] == "exceeded" else "warn" if b["state"] == "warn" else None
        parts.append(paint(f"budget {pct}", level, color))
    quota = snap.get("quota") or []
    if quota:
        q = quota[0]
        text = f"{q['window']} {q['used_pct']:.0f}%"
        if q.get("share_pct"):
            text += f" (this {q['share_pct']:.0f}%{'~' if q.get('estimated') else ''})"
        parts.append(paint(text, quota_level(q["used_pct"]), color))
    line = " · ".join(parts)
    if now_ts is not None and snap.get("updated_at"):
        from datetime import datetime

        at = datetime.fromisoformat(snap["updated_at"])
        if now_ts - at.timestamp() > 300:
            line += f" (as of {at.astimezone().strftime('%H:%M')})"
    return line


_EIGHTHS = " ▁▂▃▄▅▆▇█"


def bar_columns(values: list[float], height: int = 4) -> list[str]:
    """A small vertical bar chart, one character column per value, `height` lines from the top:
    the largest value fills the whole height, eighths of a line in between; a value above
    zero shows at least its lowest eighth."""
    top = max((v for v in values if v), default=0.0)
    lines = []
    for row in range(height - 1, -1, -1):
        chars = []
        for v in values:
            eighths = round((v or 0) / top * height * 8) if top > 0 else 0
            if v and v > 0 and eighths == 0:
                eighths = 1
            chars.append(_EIGHTHS[max(0, min(8, eighths - row * 8))])
        lines.append("".join(chars))
    return lines
