"""The rules of session health, in one place: what the health model (analytics/health.py) and
the status line (analytics/statusline.py) both decide by.

- `HEALTH_FIELDS`: the event columns the health model reads, and `HealthRow`, a row of them
  read by name (the dashboard's query is built from the same list);
- `Thresholds`: every number of the model (docs/health.md explains each one);
- error kinds: `error_kind` classifies a failed request, `ERROR_WEIGHTS` weighs it,
  `HARD_ERRORS` are the ones a session cannot get past alone, `ERROR_LABELS` name them;
- `FACTORS`: the kinds of reasons the health model gives;
- the verdicts of the factors the status line checks too (context fill, recent errors, a cold
  prompt cache, a file another session edits too): a severity and a penalty each; and how
  penalties and severities make a score and a status, and which session needs attention first.

The texts of the reasons are not here: health.py writes the messages and advice, llmsm.cli.format
the few words of the dashboard and the status line.

Standard library only and cheap to import (`Thresholds` is a NamedTuple: a frozen dataclass of
this size costs the status line ~5 ms to create): the status line runs every few seconds and
must not load pydantic or genai-prices, which health.py needs for context windows and prices.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Any, Literal, NamedTuple

__all__ = [
    "BUDGET_REFUSAL_PREFIX",
    "DEFAULT_THRESHOLDS",
    "ERROR_LABELS",
    "ERROR_WEIGHTS",
    "HARD_ERRORS",
    "HEALTH_FIELDS",
    "HealthRow",
    "SEVERITY_RANK",
    "STATUS_RANK",
    "Thresholds",
    "FACTORS",
    "attention_key",
    "cache_cold_verdict",
    "conflict_verdict",
    "cache_ttl_seconds",
    "error_kind",
    "error_verdict",
    "fill_verdict",
    "has_usage",
    "main_thread",
    "prompt_tokens",
    "rank_key",
    "score_and_status",
    "tally_errors",
]

Severity = Literal["info", "warn", "critical"]
Status = Literal["healthy", "degraded", "critical"]

# The columns of `events` the health model reads, by name. health.assess_session turns every
# input (ExchangeEvent, dict, SELECT * row, object) into a HealthRow; the dashboard selects
# exactly these (analytics/dashboard.py builds its SELECT from this list and checks the names).
HEALTH_FIELDS: tuple[str, ...] = (
    "api", "started_at", "ended_at", "model", "requested_model", "provider", "agent_id",
    "status_code", "outcome", "error_type", "error_message",
    "input_tokens", "cache_read_tokens", "cache_write_tokens", "long_context", "cache_ttl", "usage_raw",
    "ttft_ms", "tool_errors", "request_hash", "retry_count", "session_id",
)
HealthRow = namedtuple("HealthRow", HEALTH_FIELDS)


class Thresholds(NamedTuple):
    """Every number the score uses. docs/health.md explains each one. Immutable; change one with
    `Thresholds(fill_warn=0.6)` or `DEFAULT_THRESHOLDS._replace(fill_warn=0.6)`."""

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

    # file conflicts (analytics/collisions.py): two sessions active within the last 15 minutes
    # that both edited or wrote the same file within the last 2 hours
    conflict_active_min: float = 15.0
    conflict_edits_min: float = 120.0
    conflict_penalty: int = 15


DEFAULT_THRESHOLDS = Thresholds()

# The kinds of reasons (`Reason.factor`), in the order docs/health.md explains them.
FACTORS: tuple[str, ...] = (
    "context_fill", "context_growth", "context_rot", "cache_cold", "cache_share", "errors", "tool_errors",
    "retry_loop", "slowdown", "budget", "file_conflict",
)

SEVERITY_RANK: dict[str, int] = {"info": 0, "warn": 1, "critical": 2}
STATUS_RANK: dict[str, int] = {"critical": 0, "degraded": 1, "healthy": 2}  # the most urgent first

# --- error kinds ---------------------------------------------------------------------------------

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
# The last request failed this way: the session cannot continue without its user.
HARD_ERRORS = frozenset({"auth", "billing", "budget", "context_overflow"})
# What each kind is called wherever it is shown (reasons, dashboard, status line).
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
# How the gateway's own budget refusal begins: budgets.EXCEEDED_PREFIX (a test keeps them equal;
# importing that module costs the status line ~5 ms).
BUDGET_REFUSAL_PREFIX = "llmsm budget exceeded:"
# A 400 whose message says one of these is a prompt that no longer fits: Anthropic's "prompt is
# too long", OpenAI's "maximum context length", Gemini's "exceeds the maximum number of tokens".
_OVERFLOW_WORDS = ("too long", "context length", "context window", "maximum context", "too many tokens", "exceeds the")


def error_kind(status: int | None, outcome: str | None, error_type: str | None, message: str | None) -> str | None:
    """The kind of a failed request (a key of ERROR_WEIGHTS), None when it did not fail."""
    failed = outcome not in (None, "ok") or (status is not None and status >= 400)
    if not failed:
        return None
    if outcome == "client_aborted":
        return "client_aborted"
    if message and message.startswith(BUDGET_REFUSAL_PREFIX):  # refused by the gateway (a 429, 402 for Codex)
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


def tally_errors(recent: list[Any], now: datetime, t: Thresholds = DEFAULT_THRESHOLDS) -> tuple[dict[str, int], float, str | None]:
    """Over the recent turns (oldest first; rows with status_code, outcome, error_type,
    error_message, started_at): the count per error kind, the error score (weights decayed
    by age with the half-life), and the kind of the last turn (None when it succeeded)."""
    kinds: dict[str, int] = {}
    score = 0.0
    half_life_s = t.error_half_life_min * 60.0
    kind = None
    for r in recent:
        status = r.status_code
        if r.outcome == "ok" and (status is None or status < 400):
            kind = None
            continue
        kind = error_kind(status, r.outcome, r.error_type, r.error_message)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
            started = r.started_at
            age = max(0.0, (now - started).total_seconds()) if started is not None else 0.0
            score += ERROR_WEIGHTS[kind] * 0.5 ** (age / half_life_s)
    return kinds, score, kind


def top_error_kind(kinds: dict[str, int]) -> str:
    """The kind that weighs most among the recent errors (then the most frequent)."""
    return max(kinds, key=lambda k: (kinds[k] * ERROR_WEIGHTS[k], kinds[k]))


def error_verdict(
    kinds: dict[str, int], score: float, last_kind: str | None, t: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Severity, int, str] | None:
    """The errors factor from `tally_errors`: (severity, penalty, the kind it is about), or None.
    A hard error on the last turn is critical at once; otherwise the score decides, and a
    session whose last turn succeeded is recovering (critical lowered to warn)."""
    if last_kind in HARD_ERRORS:
        return "critical", t.hard_error_penalty, last_kind
    if not kinds or score < t.errors_info:
        return None
    if score >= t.errors_critical:
        severity: Severity = "critical" if last_kind is not None else "warn"
    elif score >= t.errors_warn:
        severity = "warn"
    else:
        severity = "info"
    return severity, min(t.error_penalty_max, round(t.error_penalty_per_unit * score)), top_error_kind(kinds)


# --- context and cache ---------------------------------------------------------------------------


def has_usage(r: Any) -> bool:
    return r.input_tokens is not None or r.cache_read_tokens is not None or r.cache_write_tokens is not None


def prompt_tokens(r: Any) -> int:
    """The whole prompt of a turn: llmsm's input_tokens is the uncached part."""
    return (r.input_tokens or 0) + (r.cache_read_tokens or 0) + (r.cache_write_tokens or 0)


def main_thread(turns: list[Any]) -> list[Any]:
    """The parent agent's turns: subagents (rows with an agent_id) have their own, smaller
    contexts. The turns without agent_id when there are any, else those of the last turn's agent."""
    agents = {r.agent_id for r in turns}
    if len(agents) <= 1:
        return turns
    main_agent = None if None in agents else turns[-1].agent_id
    return [r for r in turns if r.agent_id == main_agent]


def fill_verdict(fill: float, t: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Severity, int] | None:
    """Context fill (whole prompt / window): (severity, penalty), None below fill_info. The
    penalty rises linearly within each band."""
    if fill >= t.fill_critical:
        span = max(1e-9, 1.0 - t.fill_critical)
        pen = t.fill_penalty_warn + (t.fill_penalty_full - t.fill_penalty_warn) * min(1.0, (fill - t.fill_critical) / span)
        return "critical", round(pen)
    if fill >= t.fill_warn:
        pen = t.fill_penalty_info + (t.fill_penalty_warn - t.fill_penalty_info) * (fill - t.fill_warn) / (t.fill_critical - t.fill_warn)
        return "warn", round(pen)
    if fill >= t.fill_info:
        return "info", round(t.fill_penalty_info * (fill - t.fill_info) / (t.fill_warn - t.fill_info))
    return None


def cache_ttl_seconds(cache_ttls: list[str | None], t: Thresholds = DEFAULT_THRESHOLDS) -> float:
    """The prompt cache's lifetime from the recent main turns' cache_ttl (oldest first): 1 h
    when the latest one that says asked for '1h', else 5 min."""
    for ttl in reversed(cache_ttls):
        if ttl is not None:
            return t.cache_ttl_1h_s if ttl == "1h" else t.cache_ttl_s
    return t.cache_ttl_s


def cache_cold_verdict(
    uses_cache: bool, context_tokens: int | None, idle_seconds: float | None, ttl_s: float,
    t: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Severity, int] | None:
    """The prompt cache has expired (idle longer than its TTL) on a session that caches a prompt
    worth caching: (severity, penalty), else None."""
    if not uses_cache or context_tokens is None or context_tokens < t.cache_min_prompt:
        return None
    if idle_seconds is None or idle_seconds <= ttl_s:
        return None
    if context_tokens >= t.cache_cold_warn_tokens:
        return "warn", t.cache_cold_penalty_warn
    return "info", t.cache_cold_penalty_info


def conflict_verdict(conflicts: int, t: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Severity, int] | None:
    """Files this session edited that another active session edited too: a warning (the other
    session may overwrite the change, or work from a version that is gone), else None."""
    if conflicts <= 0:
        return None
    return "warn", t.conflict_penalty


# --- score and status ----------------------------------------------------------------------------


def rank_key(penalty: int, severity: str) -> tuple[int, int]:
    """Reasons in order: the largest penalty first, then the most severe."""
    return (-penalty, -SEVERITY_RANK[severity])


def score_and_status(reasons: list[tuple[int, str]], t: Thresholds = DEFAULT_THRESHOLDS) -> tuple[int, Status]:
    """(score, status) from the reasons' (penalty, severity): score = 100 - the penalties, within
    0..100; critical below score_critical or with a critical reason, degraded below
    score_degraded or with a warning (the user should see it even when its penalty is small),
    else healthy."""
    total = 0
    worst = 0
    for penalty, severity in reasons:
        total += penalty
        rank = SEVERITY_RANK[severity]
        if rank > worst:
            worst = rank
    score = max(0, min(100, 100 - total))
    if score < t.score_critical or worst == 2:
        return score, "critical"
    if score < t.score_degraded or worst == 1:
        return score, "degraded"
    return score, "healthy"


def attention_key(status: str, score: int, last_seen: datetime | None) -> tuple:
    """Sessions in order of need: critical, then degraded, then healthy; the lowest score, then
    the most recently active first."""
    last = last_seen.timestamp() if last_seen is not None else 0.0
    return (STATUS_RANK.get(status, 3), score, -last)
