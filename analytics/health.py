"""Session health: a pure score over one session's recent exchanges.

`assess_session(events, now=...)` looks at the last events of one session (ExchangeEvent
instances, dicts with its field names, `SELECT *` rows of the events table, or any object with
those attributes) and returns a `SessionHealth`: a 0-100 score, a status, ranked reasons with
advice, and the metrics behind them. docs/health.md explains every factor and threshold.

Expected input (what the dashboard should query every refresh):
- the last N events of the session (N = 50 is plenty; ascending or descending by `started_at`),
- optionally `first_seen` (the session's first `started_at`) and `total_turns` (its count of rows
  with a turn api): without them, context rot is measured over the events given only,
- optionally `baseline_ttft_ms` (median TTFT of the session's first turns) when the early events
  are no longer in the window.

No I/O, no globals changed; every threshold lives in `Thresholds`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from typing import Any, Literal

from . import prices
from .budgets import EXCEEDED_PREFIX
from .events import EVENT_COLUMNS, ExchangeEvent

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Reason",
    "SessionHealth",
    "Thresholds",
    "TURN_APIS",
    "assess_all",
    "assess_session",
]

Severity = Literal["info", "warn", "critical"]
Status = Literal["healthy", "degraded", "critical"]

TURN_APIS = frozenset({"messages", "chat_completions", "responses", "generate_content"})
_UTC = timezone.utc


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every number the score uses. docs/health.md explains each one."""

    # which events are "recent"
    recent_requests: int = 10  # errors, tool failures, retries, cache share look at the last N turns
    recent_horizon_min: float = 60.0  # ... that started at most this long ago
    error_half_life_min: float = 15.0  # an error's weight halves every 15 minutes

    # score composition
    score_degraded: int = 75  # below -> degraded
    score_critical: int = 40  # below -> critical

    # context fill = whole prompt of the last main turn / context window
    fill_info: float = 0.50
    fill_warn: float = 0.70
    fill_critical: float = 0.85
    fill_penalty_info: float = 10.0  # penalty reached at fill_warn (linear from 0 at fill_info)
    fill_penalty_warn: float = 30.0  # penalty reached at fill_critical
    fill_penalty_full: float = 60.0  # penalty at 100 % full

    # growth -> turns left before the window is full
    growth_points: int = 10  # prompts (since the last compaction) the growth is averaged over
    turns_left_info: float = 10.0
    turns_left_warn: float = 3.0
    growth_penalty_info: int = 5
    growth_penalty_warn: int = 15

    # compaction detection
    compaction_ratio: float = 0.5  # prompt < 50 % of the previous one ...
    compaction_min_prompt: int = 20_000  # ... that was at least this large
    compaction_recover_ratio: float = 0.8  # a dip the next turn recovers from is a side call

    # context rot (since session start or the last compaction)
    rot_turns_info: int = 100
    rot_turns_warn: int = 200
    rot_minutes_info: float = 120.0
    rot_minutes_warn: float = 240.0
    rot_min_fill: float = 0.25  # below this fill, the client is keeping the context small: no rot
    rot_penalty_info: int = 5
    rot_penalty_warn: int = 12

    # prompt cache
    cache_ttl_s: float = 300.0  # Anthropic default, OpenAI in-memory retention
    cache_ttl_1h_s: float = 3600.0  # cache_ttl == '1h'
    cache_min_prompt: int = 4_096  # smaller prompts: caching hardly matters
    cache_cold_warn_tokens: int = 50_000  # a cold cache this large is a warning, smaller: info
    cache_cold_penalty_info: int = 4
    cache_cold_penalty_warn: int = 10
    cache_share_warn: float = 0.50  # recent cache_read / prompt below this (while caching) ...
    cache_share_min_turns: int = 3
    cache_share_min_prompt: int = 20_000  # ... with prompts at least this large on average
    cache_share_penalty: int = 8

    # errors: weighted, decayed count over the recent turns
    errors_info: float = 0.5
    errors_warn: float = 1.5  # about two fresh errors; a single transient error is info
    errors_critical: float = 3.0
    error_penalty_per_unit: float = 12.0
    error_penalty_max: int = 50
    hard_error_penalty: int = 45  # the last turn failed with auth / billing / context overflow

    # tool failures (sum of tool_errors over the recent turns)
    tool_errors_info: int = 2
    tool_errors_warn: int = 4
    tool_penalty_per_error: int = 3
    tool_penalty_max: int = 20

    # retry loops (same request_hash in the recent turns, or x-*-retry-count)
    retry_repeats_warn: int = 3
    retry_repeats_critical: int = 6
    retry_penalty: int = 15
    retry_penalty_per_repeat: int = 3
    retry_penalty_max: int = 30

    # slowing down: median TTFT of the last k turns vs the first k (k <= 5)
    ttft_points: int = 5
    ttft_ratio_warn: float = 2.0
    ttft_ratio_high: float = 4.0
    ttft_min_increase_ms: float = 2_000.0
    ttft_penalty: int = 10
    ttft_penalty_high: int = 20

    # budget (fraction of a budget used, and fraction used per minute)
    budget_info: float = 0.75
    budget_warn: float = 0.90
    budget_minutes_info: float = 60.0
    budget_minutes_warn: float = 15.0
    budget_penalty_info: int = 5
    budget_penalty_warn: int = 20
    budget_penalty_exhausted: int = 40


DEFAULT_THRESHOLDS = Thresholds()

# error kind -> weight in the error score
ERROR_WEIGHTS: dict[str, float] = {
    "rate_limit": 1.0,
    "overloaded": 1.0,
    "server": 1.0,
    "stream": 1.0,
    "proxy": 1.0,
    "client": 0.5,
    "client_aborted": 0.25,  # mostly the user pressing Esc
    "auth": 3.0,
    "billing": 3.0,
    "budget": 3.0,
    "context_overflow": 3.0,
}
HARD_ERRORS = frozenset({"auth", "billing", "budget", "context_overflow"})
ERROR_LABELS: dict[str, str] = {
    "rate_limit": "rate limited (429)",
    "overloaded": "overloaded (529)",
    "server": "server error (5xx)",
    "stream": "broken stream",
    "proxy": "gateway error",
    "client": "rejected request (4xx)",
    "client_aborted": "cancelled by the client",
    "auth": "authentication failed",
    "billing": "billing / credits",
    "budget": "llmsm budget used up",
    "context_overflow": "prompt too long",
}
ERROR_ADVICE: dict[str, str] = {
    "rate_limit": "you are rate-limited: pause until the limit resets, slow down parallel agents, or switch model/key",
    "overloaded": "the provider is overloaded: wait a minute and retry, or switch to another model (/model)",
    "server": "the provider is failing: retry later and check its status page",
    "stream": "responses break off mid-stream: check the network or VPN, then retry",
    "proxy": "the llmsm gateway could not forward requests: check `llmsm` logs and the upstream address",
    "client": "requests are rejected: check the client version and its settings (model name, parameters)",
    "client_aborted": "requests were cancelled before they finished",
    "auth": "authentication failed: log in again or check the API key",
    "billing": "the account is out of credits or over its spend limit: check billing",
    "budget": "an llmsm budget stopped it: raise it with `llmsm budget set` (see `llmsm budget list`) or remove it",
    "context_overflow": "the prompt no longer fits: compact (/compact) or start a fresh session",
}
_OVERFLOW_WORDS = ("too long", "context length", "context window", "maximum context", "too many tokens", "exceeds the")
_SEV_RANK = {"info": 0, "warn": 1, "critical": 2}


@dataclass(slots=True)
class Reason:
    factor: str  # context_fill | context_growth | context_rot | cache_cold | cache_share | errors | tool_errors | retry_loop | slowdown | budget
    severity: Severity
    penalty: int
    message: str
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "severity": self.severity,
            "penalty": self.penalty,
            "message": self.message,
            "advice": self.advice,
        }


@dataclass(slots=True)
class SessionHealth:
    session_id: str | None = None
    score: int = 100
    status: Status = "healthy"
    reasons: list[Reason] = field(default_factory=list)
    # metrics
    turns: int = 0  # turn rows among the events given
    model: str | None = None  # model of the last main-thread turn
    provider: str | None = None
    context_tokens: int | None = None  # whole prompt (input + cache read + cache write) of the last main turn
    context_window: int | None = None
    context_fill: float | None = None  # 0..1 (can exceed 1 if the window is underestimated)
    growth_per_turn: float | None = None  # prompt tokens added per turn since the last compaction
    turns_left: int | None = None  # forecast at that growth
    compactions: int = 0  # compactions seen among the events given
    turns_since_compaction: int = 0  # or since the session start
    minutes_since_compaction: float | None = None  # last activity - (last compaction or session start)
    idle_seconds: float | None = None  # now - end of the last exchange
    cache_ttl_seconds: float | None = None
    cache_cold: bool = False
    cache_read_share: float | None = None  # recent cache_read / prompt
    recent_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_score: float = 0.0  # weighted, decayed
    tool_errors: int = 0
    retry_loop: bool = False
    retry_repeats: int = 0  # most times one request_hash appears among the recent turns
    ttft_early_ms: float | None = None
    ttft_recent_ms: float | None = None
    ttft_ratio: float | None = None
    budget_fraction: float | None = None
    budget_minutes_left: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if name == "reasons":
                value = [r.to_dict() for r in value]
            elif name == "error_kinds":
                value = dict(value)
            out[name] = value
        return out


# --- input normalization -------------------------------------------------------------------------

_FIELDS = (
    "api",  # 0
    "started_at",  # 1
    "ended_at",  # 2
    "model",  # 3
    "provider",  # 4
    "agent_id",  # 5
    "status_code",  # 6
    "outcome",  # 7
    "error_type",  # 8
    "input_tokens",  # 9
    "cache_read_tokens",  # 10
    "cache_write_tokens",  # 11
    "ttft_ms",  # 12
    "tool_errors",  # 13
    "request_hash",  # 14
    "retry_count",  # 15
    "long_context",  # 16
    "cache_ttl",  # 17
    "usage_raw",  # 18
    "error_message",  # 19
    "requested_model",  # 20
)
_BY_ATTR = attrgetter(*_FIELDS)
_BY_KEY = itemgetter(*_FIELDS)
_BY_INDEX = itemgetter(*(EVENT_COLUMNS.index(f) for f in _FIELDS))
_N_COLUMNS = len(EVENT_COLUMNS)


def _rows(events: Sequence[Any]) -> list[tuple]:
    first = events[0]
    kind = type(first)
    if kind is tuple and len(first) == _N_COLUMNS:
        return list(map(_BY_INDEX, events))
    if kind is ExchangeEvent:
        try:  # pydantic keeps fields in __dict__: item lookups are twice as fast as attributes
            return [_BY_KEY(e.__dict__) for e in events]
        except (KeyError, AttributeError):
            pass
    if kind is dict or isinstance(first, Mapping):
        try:
            return list(map(_BY_KEY, events))
        except KeyError:
            return [tuple(e.get(f) for f in _FIELDS) for e in events]
    try:
        return list(map(_BY_ATTR, events))
    except AttributeError:
        return [tuple(getattr(e, f, None) for f in _FIELDS) for e in events]


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, _UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def _fix_times(rows: list[tuple]) -> list[tuple]:
    out = []
    for r in rows:
        out.append(r[:1] + (_as_datetime(r[1]), _as_datetime(r[2])) + r[3:])
    return out


def _ordered(rows: list[tuple]) -> list[tuple]:
    """Sort by started_at in place (timsort is linear on ascending or descending input)."""
    try:
        rows.sort(key=_STARTED)
    except TypeError:  # a missing timestamp
        rows.sort(key=lambda r: (0,) if r[1] is None else (1, r[1]))
    return rows


_STARTED = itemgetter(1)


def _align_now(now: datetime, sample: datetime | None) -> datetime:
    """`now` in the same flavour (aware / naive UTC) as the events' timestamps."""
    if sample is None:
        return now
    if sample.tzinfo is None:
        return now.astimezone(_UTC).replace(tzinfo=None) if now.tzinfo is not None else now
    return now if now.tzinfo is not None else now.replace(tzinfo=_UTC)


def _error_kind(status: int | None, outcome: str | None, error_type: str | None, message: str | None) -> str | None:
    failed = outcome not in (None, "ok") or (status is not None and status >= 400)
    if not failed:
        return None
    if outcome == "client_aborted":
        return "client_aborted"
    if message and message.startswith(EXCEEDED_PREFIX):  # refused by the gateway (a 429, 402 for Codex)
        return "budget"
    et = error_type or ""
    if status == 429 or et == "rate_limit_error":
        return "rate_limit"
    if status == 529 or et == "overloaded_error":
        return "overloaded"
    if status in (401, 403) or et in ("authentication_error", "permission_error"):
        return "auth"
    if status == 402 or et == "billing_error":
        return "billing"
    if status == 413 or et == "request_too_large":
        return "context_overflow"
    if status == 400 and message:
        m = message.lower()
        if any(w in m for w in _OVERFLOW_WORDS):
            return "context_overflow"
    if status is not None and status >= 500:
        return "server"
    if outcome in ("stream_error", "upstream_aborted"):
        return "stream"
    if outcome == "proxy_error":
        return "proxy"
    return "client"


def _compaction_in_raw(raw: Any) -> tuple[bool, int | None]:
    """(usage_raw reports a compaction pass, whole prompt of the last pass if given)."""
    if type(raw) is str:
        try:
            raw = json.loads(raw)
        except ValueError:
            return False, None
    if type(raw) is not dict:
        return False, None
    its = raw.get("iterations")
    if not its and isinstance(raw.get("usage"), dict):
        its = raw["usage"].get("iterations")
    if not isinstance(its, list) or not its:
        return False, None
    if not any(isinstance(it, dict) and "compaction" in str(it.get("type", "")) for it in its):
        return False, None
    last = its[-1]
    if isinstance(last, dict) and "input_tokens" in last:
        after = (
            (last.get("input_tokens") or 0)
            + (last.get("cache_read_input_tokens") or 0)
            + (last.get("cache_creation_input_tokens") or 0)
        )
        return True, after
    return True, None


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def _k(tokens: float) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:.2f}M".replace(".00M", "M")
    if tokens >= 1_000:
        return f"{tokens / 1_000:.0f}k"
    return f"{tokens:.0f}"


def _dur(minutes: float) -> str:
    if minutes >= 90:
        return f"{minutes / 60:.1f} h"
    return f"{minutes:.0f} min"


# --- the assessment ------------------------------------------------------------------------------


def assess_session(
    events: Sequence[Any],
    *,
    now: datetime,
    session_id: str | None = None,
    first_seen: datetime | None = None,
    total_turns: int | None = None,
    baseline_ttft_ms: float | None = None,
    budget_fraction: float | None = None,
    budget_rate: float | None = None,
    budget_label: str = "budget",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> SessionHealth:
    """Score one session from its recent events (see the module docstring for the input).

    budget_fraction: share of a budget already used (0..1, may exceed 1), e.g. the 5 h window
    utilization or spent / daily budget. budget_rate: share used per minute at the recent pace;
    with both, `budget_minutes_left` = (1 - fraction) / rate.
    """
    t = thresholds
    h = SessionHealth(session_id=session_id)
    if budget_fraction is not None:
        _budget(h, t, budget_fraction, budget_rate, budget_label)
    if not events:
        return _finish(h, t)

    rows = _rows(events)
    if type(rows[0][1]) is not datetime or (rows[0][2] is not None and type(rows[0][2]) is not datetime):
        rows = _fix_times(rows)
    rows = _ordered(rows)
    last_row = rows[-1]
    now = _align_now(now, last_row[1])
    if first_seen is not None:
        first_seen = _align_now(_as_datetime(first_seen), last_row[1])  # type: ignore[arg-type]

    last_end = last_row[2] or last_row[1]
    if last_end is not None:
        h.idle_seconds = max(0.0, (now - last_end).total_seconds())

    turns = [r for r in rows if r[0] in TURN_APIS]
    h.turns = n_turns = len(turns)
    if not n_turns:
        return _finish(h, t)

    # main thread: the parent agent's turns (subagents have their own, smaller contexts)
    agents = {r[5] for r in turns}
    if len(agents) > 1:
        main_agent = None if None in agents else turns[-1][5]
        track = [r for r in turns if r[5] == main_agent]
    else:
        track = turns
    # main turns with usage, and their whole prompts
    urows = [r for r in track if r[9] is not None or r[10] is not None or r[11] is not None]
    ps = [(r[9] or 0) + (r[10] or 0) + (r[11] or 0) for r in urows]
    n_uses = len(urows)

    # compactions: usage_raw says so, or the prompt dropped sharply and stayed down
    ratio, min_prompt = t.compaction_ratio, t.compaction_min_prompt
    flagged = [j for j, r in enumerate(urows) if r[18] is not None and _mentions_iterations(r[18])]
    dropped = bool(flagged) or (
        n_uses > 1
        and min(ps) < ratio * max(ps)  # cheap test first: no drop is possible without it
        and any(b < ratio * a and a >= min_prompt for a, b in zip(ps, ps[1:]))
    )
    compaction_use = -1  # index in urows of the last compaction
    if not dropped:
        ctx_j = n_uses - 1
        since = ps
    else:
        ctx_j, compaction_use, since, h.compactions = _walk_compactions(urows, ps, t)

    if ctx_j >= 0:
        ctx_row = urows[ctx_j]
        h.context_tokens = ctx = since[-1]
        model = ctx_row[3] or ctx_row[20]
        provider = ctx_row[4]
        h.model, h.provider = model, provider
        long_ctx = any([r[16] for r in turns[-t.recent_requests :]])
        window = prices.context_window(model, provider, long_ctx) if model else None
        h.context_window = window
        if window:
            h.context_fill = fill = ctx / window
            if len(since) >= 3:
                pts = since[-t.growth_points :]
                growth = max(0.0, (pts[-1] - pts[0]) / (len(pts) - 1))
                h.growth_per_turn = growth
                if growth > 0:
                    h.turns_left = max(0, int((window - ctx) / growth))
            _context(h, t, fill, ctx, window)
    else:
        ctx_row = ctx = None
        h.model = turns[-1][3] or turns[-1][20]
        h.provider = turns[-1][4]

    # context rot: turns and duration since the last compaction (or the session start)
    if compaction_use >= 0:
        comp_row = urows[compaction_use]
        h.turns_since_compaction = n_turns - 1 - _index_of(turns, comp_row)
        start = comp_row[1]
    else:
        h.turns_since_compaction = max(total_turns or 0, n_turns)
        start = first_seen if first_seen is not None else rows[0][1]
    if start is not None and last_end is not None:
        h.minutes_since_compaction = max(0.0, (last_end - start).total_seconds() / 60.0)
    if h.turns_since_compaction >= t.rot_turns_info or (h.minutes_since_compaction or 0.0) >= t.rot_minutes_info:
        _rot(h, t)

    # prompt cache
    recent_n = t.recent_requests
    ttl_s = t.cache_ttl_s
    ttls = [r[17] for r in urows[-recent_n:] if r[17] is not None]
    if ttls and ttls[-1] == "1h":
        ttl_s = t.cache_ttl_1h_s
    h.cache_ttl_seconds = ttl_s
    first_recent = max(0, n_uses - recent_n, compaction_use + 1 if compaction_use >= 0 else 0)
    recent_urows = urows[first_recent:]
    uses_cache = any([r[10] or r[11] for r in urows[-recent_n:]])
    if recent_urows:
        sum_prompt = sum(ps[first_recent:])
        if sum_prompt:
            h.cache_read_share = sum([r[10] or 0 for r in recent_urows]) / sum_prompt
            if (
                uses_cache
                and h.cache_read_share < t.cache_share_warn
                and len(recent_urows) >= t.cache_share_min_turns
                and sum_prompt / len(recent_urows) >= t.cache_share_min_prompt
            ):
                _cache_share(h, t, len(recent_urows))
    idle = h.idle_seconds
    if uses_cache and ctx is not None and ctx >= t.cache_min_prompt and idle is not None and idle > ttl_s:
        h.cache_cold = True
        _cache_cold(h, t, ctx, ttl_s, ctx_row)

    # recent turns: errors, tool failures, retries
    recent = turns[-recent_n:]
    first_at = recent[0][1]
    if first_at is None or (now - first_at).total_seconds() > t.recent_horizon_min * 60.0:
        cutoff = now - timedelta(minutes=t.recent_horizon_min)
        recent = [r for r in recent if r[1] is None or r[1] >= cutoff]
    if recent:
        _recent_problems(h, t, recent, now)

    # slowing down
    ttfts = [r[12] for r in urows if r[12] is not None and r[7] == "ok"]
    if len(ttfts) >= 3:
        _slowdown(h, t, ttfts, baseline_ttft_ms)

    return _finish(h, t)


def _mentions_iterations(raw: Any) -> bool:
    if type(raw) is dict:
        return "iterations" in raw or "usage" in raw
    if type(raw) is str:
        return '"iterations"' in raw
    return False


def _index_of(rows: list[tuple], row: tuple) -> int:
    for i in range(len(rows) - 1, -1, -1):
        if rows[i] is row:
            return i
    return 0


def _walk_compactions(urows: list[tuple], ps: list[int], t: Thresholds) -> tuple[int, int, list[int], int]:
    """The slow path when a compaction is possible: (index of the context row, index of the last
    compaction or -1, main prompts since it, number of compactions)."""
    ratio, min_prompt, recover = t.compaction_ratio, t.compaction_min_prompt, t.compaction_recover_ratio
    ctx: int | None = None
    ctx_j = -1
    prev_model = None
    compaction_j = -1
    count = 0
    since: list[int] = []
    n = len(urows)
    for j in range(n):
        r = urows[j]
        p = ps[j]
        compacted = False
        raw = r[18]
        if raw is not None and _mentions_iterations(raw):
            compacted, after = _compaction_in_raw(raw)
            if compacted and after is not None:
                p = after
        if not compacted and ctx is not None and ctx >= min_prompt and p < ratio * ctx:
            if r[3] != prev_model:
                continue  # another model's side call (title, summary): not this context
            if j + 1 < n and ps[j + 1] >= recover * ctx:
                continue  # a dip the next turn recovers from: a side call
            compacted = True
        if compacted:
            count += 1
            compaction_j = j
            since = []
        ctx = p
        ctx_j = j
        prev_model = r[3]
        since.append(p)
    return ctx_j, compaction_j, since, count


def _context(h: SessionHealth, t: Thresholds, fill: float, ctx: int, window: int) -> None:
    if fill >= t.fill_info:
        what = f"context {fill:.0%} full ({_k(ctx)} of {_k(window)} tokens)"
        if fill >= t.fill_critical:
            span = max(1e-9, 1.0 - t.fill_critical)
            pen = t.fill_penalty_warn + (t.fill_penalty_full - t.fill_penalty_warn) * min(1.0, (fill - t.fill_critical) / span)
            h.reasons.append(
                Reason(
                    "context_fill",
                    "critical",
                    round(pen),
                    what,
                    f"{what}: compact now (/compact) or start a fresh session; answers degrade and auto-compaction "
                    "or a 'prompt too long' error is close",
                )
            )
        elif fill >= t.fill_warn:
            pen = t.fill_penalty_info + (t.fill_penalty_warn - t.fill_penalty_info) * (fill - t.fill_warn) / (t.fill_critical - t.fill_warn)
            h.reasons.append(
                Reason(
                    "context_fill",
                    "warn",
                    round(pen),
                    what,
                    f"{what}: compact (/compact) at the next natural break, or start a fresh session for the next task",
                )
            )
        else:
            pen = t.fill_penalty_info * (fill - t.fill_info) / (t.fill_warn - t.fill_info)
            h.reasons.append(
                Reason(
                    "context_fill",
                    "info",
                    round(pen),
                    what,
                    "keep tasks focused; start a fresh session for unrelated work",
                )
            )
    left = h.turns_left
    if left is not None and left <= t.turns_left_info and fill < 1.0:
        growth = h.growth_per_turn or 0.0
        severity: Severity = "warn" if left <= t.turns_left_warn else "info"
        h.reasons.append(
            Reason(
                "context_growth",
                severity,
                t.growth_penalty_warn if severity == "warn" else t.growth_penalty_info,
                f"~{left} turns left at +{_k(growth)} tokens per turn",
                "compact (/compact) before the window fills: a forced compaction in the middle of a task loses detail",
            )
        )


def _rot(h: SessionHealth, t: Thresholds) -> None:
    if h.context_fill is not None and h.context_fill < t.rot_min_fill:
        return
    turns, minutes = h.turns_since_compaction, h.minutes_since_compaction or 0.0
    if turns >= t.rot_turns_warn or minutes >= t.rot_minutes_warn:
        severity: Severity = "warn"
        pen = t.rot_penalty_warn
    elif turns >= t.rot_turns_info or minutes >= t.rot_minutes_info:
        severity, pen = "info", t.rot_penalty_info
    else:
        return
    since = "since the last compaction" if h.compactions else "since the session started"
    h.reasons.append(
        Reason(
            "context_rot",
            severity,
            pen,
            f"{turns} turns / {_dur(minutes)} {since}",
            "long histories dilute the model's attention (context rot): /compact with a note on the current goal, "
            "or start a fresh session for the next task",
        )
    )


def _cache_cold(h: SessionHealth, t: Thresholds, ctx: int, ttl_s: float, ctx_row: tuple | None) -> None:
    idle = h.idle_seconds or 0.0
    extra = None
    if ctx_row is not None:
        model, provider = ctx_row[3] or ctx_row[20], ctx_row[4]
        extra = prices.cache_miss_extra_usd(provider, model, ctx, one_hour=ttl_s >= t.cache_ttl_1h_s, at=ctx_row[1])
    cost = f" (about ${extra:.2f} more than a warm turn)" if extra else ""
    severity: Severity = "warn" if ctx >= t.cache_cold_warn_tokens else "info"
    h.reasons.append(
        Reason(
            "cache_cold",
            severity,
            t.cache_cold_penalty_warn if severity == "warn" else t.cache_cold_penalty_info,
            f"prompt cache expired: idle {_dur(idle / 60.0)} > {_dur(ttl_s / 60.0)} TTL; the next turn re-sends "
            f"{_k(ctx)} tokens uncached{cost}",
            "switching tasks? start a fresh session (or /clear) instead of resuming; otherwise expect one slower, "
            "pricier turn",
        )
    )


def _recent_problems(h: SessionHealth, t: Thresholds, recent: list[tuple], now: datetime) -> None:
    """Errors, tool failures and retries over the recent turns (already cut to the horizon)."""
    failed = [r for r in recent if r[7] != "ok" or (r[6] is not None and r[6] >= 400)]
    n_recent = len(recent)
    if failed:
        score = 0.0
        kinds: dict[str, int] = {}
        half_life_s = t.error_half_life_min * 60.0
        for r in failed:
            kind = _error_kind(r[6], r[7], r[8], r[19])
            if kind is not None:
                kinds[kind] = kinds.get(kind, 0) + 1
                started = r[1]
                age = max(0.0, (now - started).total_seconds()) if started is not None else 0.0
                score += ERROR_WEIGHTS[kind] * 0.5 ** (age / half_life_s)
        h.recent_errors = n = sum(kinds.values())
        h.error_kinds = kinds
        h.error_score = round(score, 3)
        last = recent[-1]
        last_kind = _error_kind(last[6], last[7], last[8], last[19]) if last is failed[-1] else None
        if last_kind in HARD_ERRORS:
            h.reasons.append(
                Reason(
                    "errors",
                    "critical",
                    t.hard_error_penalty,
                    f"the last request failed: {ERROR_LABELS[last_kind]}",
                    ERROR_ADVICE[last_kind],
                )
            )
        elif kinds and score >= t.errors_info:
            if score >= t.errors_critical:
                severity: Severity = "critical" if last_kind is not None else "warn"  # last one ok: recovering
            elif score >= t.errors_warn:
                severity = "warn"
            else:
                severity = "info"
            top = max(kinds, key=lambda k: (kinds[k] * ERROR_WEIGHTS[k], kinds[k]))
            parts = ", ".join(f"{c}x {ERROR_LABELS[k]}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]))
            h.reasons.append(
                Reason(
                    "errors",
                    severity,
                    min(t.error_penalty_max, round(t.error_penalty_per_unit * score)),
                    f"{n} failed request{'s' if n != 1 else ''} among the last {n_recent}: {parts}",
                    ERROR_ADVICE[top],
                )
            )

    # tool failures; a retried request (same hash as the one before) reports the same failures
    hashes = [r[14] for r in recent if r[14] is not None]
    distinct = len(set(hashes))
    if distinct == len(hashes):
        tool_errors = sum([r[13] for r in recent if r[13]])
        repeats = 1 if hashes else 0
    else:
        tool_errors = 0
        prev = None
        counts: dict[str, int] = {}
        for r in recent:
            rh = r[14]
            if r[13] and (rh is None or rh != prev):
                tool_errors += r[13]
            if rh is not None:
                counts[rh] = counts.get(rh, 0) + 1
            prev = rh
        repeats = max(counts.values())
    h.tool_errors = tool_errors
    if tool_errors >= t.tool_errors_info:
        severity = "warn" if tool_errors >= t.tool_errors_warn else "info"
        h.reasons.append(
            Reason(
                "tool_errors",
                severity,
                min(t.tool_penalty_max, t.tool_penalty_per_error * tool_errors),
                f"{tool_errors} failed tool calls in the last {n_recent} requests",
                "the agent may be stuck on something failing: look at what it is attempting, give it a hint, "
                "or interrupt (Esc) and redirect it",
            )
        )

    # retry loops: one request body sent again and again, or a client retry counter climbing
    retries = [r[15] for r in recent if r[15]]
    if retries:
        max_retry = max(retries)
        repeats = max(repeats, max_retry + 1)
    h.retry_repeats = repeats
    if repeats >= t.retry_repeats_warn:
        h.retry_loop = True
        severity = "critical" if repeats >= t.retry_repeats_critical else "warn"
        h.reasons.append(
            Reason(
                "retry_loop",
                severity,
                min(t.retry_penalty_max, t.retry_penalty + t.retry_penalty_per_repeat * (repeats - t.retry_repeats_warn)),
                f"the same request was sent {repeats} times",
                "the client keeps retrying one request: see the errors; if it does not recover, interrupt and retry "
                "later or switch model",
            )
        )


def _slowdown(h: SessionHealth, t: Thresholds, ttfts: list[float], baseline: float | None) -> None:
    n = len(ttfts)
    if baseline is not None:
        k = min(t.ttft_points, n)
        early = float(baseline)
    elif n >= 6:
        k = min(t.ttft_points, n // 2)
        early = _median(ttfts[:k])
    else:
        return
    recent = _median(ttfts[-k:])
    h.ttft_early_ms, h.ttft_recent_ms = early, recent
    if early <= 0:
        return
    ratio = recent / early
    h.ttft_ratio = round(ratio, 2)
    if ratio >= t.ttft_ratio_warn and recent - early >= t.ttft_min_increase_ms:
        h.reasons.append(
            Reason(
                "slowdown",
                "warn",
                t.ttft_penalty_high if ratio >= t.ttft_ratio_high else t.ttft_penalty,
                f"first token now takes {recent / 1000:.1f} s, {ratio:.1f}x the session's early {early / 1000:.1f} s",
                "a large context or a loaded provider slows every turn: compact (/compact), or retry later",
            )
        )


def _cache_share(h: SessionHealth, t: Thresholds, n: int) -> None:
    h.reasons.append(
        Reason(
            "cache_share",
            "warn",
            t.cache_share_penalty,
            f"only {h.cache_read_share:.0%} of the prompt was read from cache over the last {n} requests",
            "something keeps invalidating the prompt cache (a changing system prompt, tool list, or timestamp "
            "near the start): keep the prompt prefix stable; each miss bills the whole prompt again",
        )
    )


def _budget(h: SessionHealth, t: Thresholds, fraction: float, rate: float | None, label: str) -> None:
    h.budget_fraction = fraction
    left = None
    if rate is not None and rate > 0:
        left = max(0.0, (1.0 - fraction) / rate)
        h.budget_minutes_left = left
    if fraction >= 1.0:
        severity: Severity = "critical"
        pen = t.budget_penalty_exhausted
    elif fraction >= t.budget_warn or (left is not None and left <= t.budget_minutes_warn):
        severity, pen = "warn", t.budget_penalty_warn
    elif fraction >= t.budget_info or (left is not None and left <= t.budget_minutes_info):
        severity, pen = "info", t.budget_penalty_info
    else:
        return
    msg = f"{label} {fraction:.0%} used"
    if left is not None and fraction < 1.0:
        msg += f", ~{_dur(left)} left at the current pace"
    h.reasons.append(
        Reason(
            "budget",
            severity,
            pen,
            msg,
            "slow down (fewer parallel agents), switch to a cheaper model, or raise the budget",
        )
    )


def _rank_key(r: Reason) -> tuple[int, int]:
    return (-r.penalty, -_SEV_RANK[r.severity])


_RANK_KEY = _rank_key


def _finish(h: SessionHealth, t: Thresholds) -> SessionHealth:
    reasons = h.reasons
    if not reasons:
        return h
    if len(reasons) > 1:
        reasons.sort(key=_RANK_KEY)
    total = 0
    worst = 0
    for r in reasons:
        total += r.penalty
        sev = _SEV_RANK[r.severity]
        if sev > worst:
            worst = sev
    h.score = score = max(0, min(100, 100 - total))
    if score < t.score_critical or worst == 2:
        h.status = "critical"
    elif score < t.score_degraded or worst == 1:
        h.status = "degraded"
    return h


def assess_all(
    events_by_session: Mapping[str, Sequence[Any]],
    now: datetime,
    *,
    aggregates: Mapping[str, Any] | None = None,
    budget_fraction: float | None = None,
    budget_rate: float | None = None,
    budget_label: str = "budget",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, SessionHealth]:
    """`assess_session` for every session. `aggregates[session_id]` (a mapping or an object) may
    carry `first_seen`, `total_turns` and `baseline_ttft_ms` for that session."""
    out: dict[str, SessionHealth] = {}
    for sid, events in events_by_session.items():
        first_seen = total_turns = baseline = None
        if aggregates is not None:
            agg = aggregates.get(sid)
            if agg is not None:
                if isinstance(agg, Mapping):
                    first_seen, total_turns, baseline = agg.get("first_seen"), agg.get("total_turns"), agg.get("baseline_ttft_ms")
                else:
                    first_seen = getattr(agg, "first_seen", None)
                    total_turns = getattr(agg, "total_turns", None)
                    baseline = getattr(agg, "baseline_ttft_ms", None)
        out[sid] = assess_session(
            events,
            now=now,
            session_id=sid,
            first_seen=first_seen,
            total_turns=total_turns,
            baseline_ttft_ms=baseline,
            budget_fraction=budget_fraction,
            budget_rate=budget_rate,
            budget_label=budget_label,
            thresholds=thresholds,
        )
    return out
