"""Quota windows from providers' rate-limit headers. Pure (no mitmproxy, no typer).

The gateway keeps each response's `anthropic-ratelimit-*`, `x-ratelimit-*`, `x-codex-*` and
`retry-after` headers in `events.ratelimit`. The `quota` view (analytics/views.sql) turns them
into the latest state per account and window; `parse_headers()` here reads one response's headers
by the same rules (tests check that both agree), and `quota_summary()` is what the CLI, the
dashboard and the statusline call.

Shapes handled (parsed defensively: a value that does not parse is left out, never guessed):

- Anthropic subscription ("unified"): `anthropic-ratelimit-unified-<w>-utilization` / `-reset` /
  `-status` for windows w = 5h, 7d, 7d_opus, ...; utilization is a fraction 0..1 (1.02 = 102%)
  or, from third-party proxies, a percent (a value with '%' or above 1.5). A window without its
  own reset/status takes the overall `-unified-reset` / `-unified-status` when
  `-unified-representative-claim` names it (five_hour -> 5h, seven_day -> 7d) or names none.
- Anthropic API: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}`; reset is RFC 3339.
- OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; reset is a duration from the
  response ("6m0s", "1s", "20ms", "1h2m3.5s").
- Codex: `x-codex-[<family>-]{primary,secondary}-{used-percent,window-minutes,reset-at,
  reset-after-seconds}`; a window is named by its minutes (300 -> "5h", 10080 -> "7d"), never by
  primary/secondary (which one is the 5h window has changed over time).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

__all__ = ["Window", "parse_headers", "quota_summary", "window_label", "parse_duration", "describe"]

_UNIFIED = re.compile(r"^anthropic-ratelimit-unified-([0-9][a-z0-9_]*)-(utilization|reset|status)$")
_ANTHROPIC = re.compile(r"^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)$")
_OPENAI = re.compile(r"^x-ratelimit-(limit|remaining|reset)-(requests|tokens)$")
_CODEX = re.compile(
    r"^x-codex-((?:[a-z0-9_-]+?-)?(?:primary|secondary))-(used-percent|window-minutes|reset-at|reset-after-seconds)$"
)
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|d|h|m|s))+$")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass
class Window:
    source: str  # anthropic-unified | anthropic | openai | codex
    window: str  # 5h, 7d, 7d_opus, requests, tokens, input-tokens, ...
    used_pct: float | None = None
    limit: int | None = None
    remaining: int | None = None
    resets_at: datetime | None = None
    status: str | None = None
    window_minutes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- value parsing ---------------------------------------------------------------------------


def _num(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().replace("%", ""))
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    n = _num(value)
    return int(n) if n is not None else None


def parse_time(value: str | None) -> datetime | None:
    """Epoch seconds (or milliseconds), or ISO 8601 / RFC 3339 -> aware datetime."""
    if value is None:
        return None
    v = value.strip()
    if _NUMBER.match(v):
        x = float(v)
        if x > 1e12:
            x /= 1000
        try:
            return datetime.fromtimestamp(x, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        ts = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def parse_duration(value: str | None) -> float | None:
    """"6m0s" -> 360, "20ms" -> 0.02, "1h2m3.5s", "30" (seconds) -> seconds; else None."""
    if value is None:
        return None
    v = value.strip()
    if _NUMBER.match(v):
        return float(v)
    if not _DURATION.match(v):
        return None
    return sum(float(n) * _UNIT[u] for n, u in _PART.findall(v))


def utilization_pct(value: str | None) -> float | None:
    """Anthropic utilization -> percent: a fraction 0..1 (up to 1.5: over the limit), or a
    percent when the value says so ('%') or is above 1.5."""
    n = _num(value)
    if n is None:
        return None
    if "%" in (value or "") or n > 1.5:
        return n
    return n * 100


def window_label(minutes: int | None, fallback: str) -> str:
    if not minutes or minutes <= 0:
        return fallback
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


# -- one response's headers -------------------------------------------------------------------


def parse_headers(headers: Mapping[str, str] | None, observed_at: datetime | None = None) -> list[Window]:
    """The quota windows in one response's rate-limit headers (names in any case)."""
    if not headers:
        return []
    h = {str(k).lower(): str(v).strip() for k, v in headers.items() if v is not None}
    observed_at = observed_at or datetime.now(timezone.utc)
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for k, v in h.items():
        if m := _UNIFIED.match(k):
            groups.setdefault(("anthropic-unified", m.group(1)), {})[m.group(2)] = v
        elif m := _ANTHROPIC.match(k):
            groups.setdefault(("anthropic", m.group(1)), {})[m.group(2)] = v
        elif m := _OPENAI.match(k):
            groups.setdefault(("openai", m.group(2)), {})[m.group(1)] = v
        elif m := _CODEX.match(k):
            groups.setdefault(("codex", m.group(1)), {})[m.group(2)] = v

    claim = h.get("anthropic-ratelimit-unified-representative-claim")
    if claim is not None:
        claim = claim.replace("five_hour", "5h").replace("seven_day", "7d")
    overall_status = h.get("anthropic-ratelimit-unified-status")
    overall_reset = parse_time(h.get("anthropic-ratelimit-unified-reset"))

    out: list[Window] = []
    for (source, slot), f in groups.items():
        w = Window(source=source, window=slot)
        if source == "anthropic-unified":
            takes_overall = claim is None or claim == slot
            w.used_pct = utilization_pct(f.get("utilization"))
            w.resets_at = parse_time(f.get("reset")) or (overall_reset if takes_overall else None)
            w.status = f.get("status") or (overall_status if takes_overall else None)
        elif source in ("anthropic", "openai"):
            w.limit, w.remaining = _int(f.get("limit")), _int(f.get("remaining"))
            if w.limit and w.limit > 0 and w.remaining is not None:
                w.used_pct = 100.0 * (w.limit - w.remaining) / w.limit
            if source == "anthropic":
                w.resets_at = parse_time(f.get("reset"))
            else:
                secs = parse_duration(f.get("reset"))
                w.resets_at = observed_at + timedelta(seconds=secs) if secs is not None else None
        else:  # codex
            w.used_pct = _num(f.get("used-percent"))
            w.window_minutes = _int(f.get("window-minutes"))
            family = slot.rsplit("-", 1)[0] if slot.count("-") else ""
            if w.window_minutes and w.window_minutes > 0:
                w.window = (f"{family} " if family else "") + window_label(w.window_minutes, slot)
            w.resets_at = parse_time(f.get("reset-at"))
            if w.resets_at is None and (secs := parse_duration(f.get("reset-after-seconds"))) is not None:
                w.resets_at = observed_at + timedelta(seconds=secs)
        out.append(w)
    return out


# -- the latest state, for the CLI / dashboard / statusline ------------------------------------

QUOTA_COLUMNS = (
    "account", "provider", "source", "window_name", "window_minutes", "used_pct", "limit_value",
    "remaining", "resets_at", "status", "observed_at",
)


def clock(ts: datetime, now: datetime) -> str:
    local = ts.astimezone()
    if local.date() == now.astimezone().date():
        return local.strftime("%H:%M")
    if abs((local - now).total_seconds()) < 6 * 86400:
        return local.strftime("%a %H:%M")
    return local.strftime("%b %d %H:%M")


def describe(row: Mapping[str, Any], now: datetime | None = None) -> str:
    """"5h window 72% used, resets 14:05" (local time)."""
    now = now or datetime.now(timezone.utc)
    name = row.get("window") or row.get("window_name") or "?"
    parts = []
    pct = row.get("used_pct")
    if pct is not None:
        parts.append(f"{pct:.0f}% used")
    if row.get("remaining") is not None and row.get("limit") is not None:
        parts.append(f"{row['remaining']:,} of {row['limit']:,} left")
    if row.get("status") and row["status"] not in ("allowed",):
        parts.append(str(row["status"]))
    text = f"{name} window " + (", ".join(parts) if parts else "seen")
    resets = row.get("resets_at")
    if isinstance(resets, datetime):
        if resets >= now:
            text += f", resets {clock(resets, now)}"
        else:
            text += f" (as of {clock(row['observed_at'], now)}; reset since {clock(resets, now)})" if isinstance(
                row.get("observed_at"), datetime) else f" (reset since {clock(resets, now)})"
    return text


def quota_summary(con: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """The latest state of every quota window, per account: one dict per (account, window) with
    account, provider, source, window, window_minutes, used_pct, limit, remaining, resets_at,
    status, observed_at, stale (the window has reset since it was seen) and text
    ("5h window 72% used, resets 14:05"). Reads the `quota` view; most used first per account."""
    now = now or datetime.now(timezone.utc)
    rows = con.execute(
        f"SELECT {', '.join(QUOTA_COLUMNS)} FROM quota "
        "ORDER BY account NULLS LAST, provider, used_pct DESC NULLS LAST, window_name"
    ).fetchall()
    out = []
    for r in rows:
        raw = dict(zip(QUOTA_COLUMNS, r))
        d = {
            "account": raw["account"], "provider": raw["provider"], "source": raw["source"],
            "window": raw["window_name"], "window_minutes": raw["window_minutes"],
            "used_pct": round(float(raw["used_pct"]), 2) if raw["used_pct"] is not None else None,
            "limit": raw["limit_value"], "remaining": raw["remaining"], "resets_at": raw["resets_at"],
            "status": raw["status"], "observed_at": raw["observed_at"],
        }
        resets = d.get("resets_at")
        d["stale"] = bool(isinstance(resets, datetime) and resets < now)
        d["text"] = describe(d, now)
        out.append(d)
    return out
