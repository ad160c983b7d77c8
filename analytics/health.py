"""Session health: a pure score over one session's recent exchanges.

`assess_session(events, now=...)` looks at the last events of one session (ExchangeEvent
instances, dicts with its field names, `SELECT *` rows of the events table, `HealthRow`s, or any
object with those attributes) and returns a `SessionHealth`: a 0-100 score, a status, ranked
reasons with advice, and the metrics behind them. docs/health.md explains every factor and threshold.

Expected input (what the dashboard should query every refresh):
- the last N events of the session (N = 50 is plenty; ascending or descending by `started_at`),
  at least the columns of `health_rules.HEALTH_FIELDS`,
- optionally `first_seen` (the session's first `started_at`) and `total_turns` (its count of rows
  with a turn api): without them, context rot is measured over the events given only,
- optionally `baseline_ttft_ms` (median TTFT of the session's first turns) when the early events
  are no longer in the window,
- optionally `conflicts`: files this session edited that another active session edited too
  (analytics/collisions.py, one query for all sessions: the dashboard passes each its own).

No I/O, no globals changed. The rules shared with the status line (thresholds, error kinds and
weights, the verdicts of context fill, errors and a cold cache, score and status) live in
analytics/health_rules.py; this module applies them and writes the reasons' messages and advice.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from operator import attrgetter, itemgetter
from typing import Any

from . import prices
from .apis import TURN_APIS
from .events import EVENT_COLUMNS, ExchangeEvent
from .health_rules import (
    DEFAULT_THRESHOLDS,
    ERROR_LABELS,
    ERROR_WEIGHTS,
    HARD_ERRORS,
    HEALTH_FIELDS,
    HealthRow,
    Severity,
    Status,
    Thresholds,
    cache_cold_verdict,
    cache_ttl_seconds,
    conflict_verdict,
    error_verdict,
    fill_verdict,
    has_usage,
    main_thread,
    prompt_tokens,
    rank_key,
    score_and_status,
    tally_errors,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ERROR_LABELS",
    "ERROR_WEIGHTS",
    "HARD_ERRORS",
    "Reason",
    "SessionHealth",
    "Thresholds",
    "TURN_APIS",
    "assess_all",
    "assess_session",
    "handoff_command",
]

_UTC = timezone.utc

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


@dataclass(slots=True)
class Reason:
    factor: str  # one of health_rules.FACTORS
    severity: Severity
    penalty: int
    message: str
    advice: str
    kind: str | None = None  # errors: the error kind it is about (a key of health_rules.ERROR_WEIGHTS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "severity": self.severity,
            "penalty": self.penalty,
            "message": self.message,
            "advice": self.advice,
            "kind": self.kind,
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
    # files another active session edited too: path, file, other_session, other_label, other_at, at
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if name == "reasons":
                value = [r.to_dict() for r in value]
            elif name == "error_kinds":
                value = dict(value)
            elif name == "conflicts":
                value = [dict(c) for c in value]
            out[name] = value
        return out


# --- input normalization -------------------------------------------------------------------------

_BY_ATTR = attrgetter(*HEALTH_FIELDS)
_BY_KEY = itemgetter(*HEALTH_FIELDS)
_BY_INDEX = itemgetter(*(EVENT_COLUMNS.index(f) for f in HEALTH_FIELDS))
_N_COLUMNS = len(EVENT_COLUMNS)
_new_row = partial(tuple.__new__, HealthRow)  # a HealthRow from a tuple of values, without _make's checks


def _rows(events: Sequence[Any]) -> list[HealthRow]:
    first = events[0]
    kind = type(first)
    if kind is HealthRow:  # the dashboard's query
        return list(events)
    if kind is tuple:
        if len(first) != _N_COLUMNS:
            raise TypeError(f"an event as a tuple of {len(first)} values: a tuple must be a SELECT * row of the events "
                            f"table ({_N_COLUMNS} columns); pass HealthRows, dicts or objects with named fields")
        return list(map(_new_row, map(_BY_INDEX, events)))
    if kind is ExchangeEvent:
        try:  # pydantic keeps fields in __dict__: item lookups are twice as fast as attributes
            return [_new_row(_BY_KEY(e.__dict__)) for e in events]
        except (KeyError, AttributeError):
            pass
    if kind is dict or isinstance(first, Mapping):
        try:
            return list(map(_new_row, map(_BY_KEY, events)))
        except KeyError:  # a partial dict: what it lacks is unknown
            return [_new_row(tuple(e.get(f) for f in HEALTH_FIELDS)) for e in events]
    try:
        return list(map(_new_row, map(_BY_ATTR, events)))
    except AttributeError:
        return [_new_row(tuple(getattr(e, f, None) for f in HEALTH_FIELDS)) for e in events]


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, _UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def _fix_times(rows: list[HealthRow]) -> list[HealthRow]:
    return [r._replace(started_at=_as_datetime(r.started_at), ended_at=_as_datetime(r.ended_at)) for r in rows]


def _ordered(rows: list[HealthRow]) -> list[HealthRow]:
    """Sort by started_at in place (timsort is linear on ascending or descending input)."""
    try:
        rows.sort(key=_STARTED)
    except TypeError:  # a missing timestamp
        rows.sort(key=lambda r: (0,) if r.started_at is None else (1, r.started_at))
    return rows


_STARTED = attrgetter("started_at")


def _align_now(now: datetime, sample: datetime | None) -> datetime:
    """`now` in the same flavour (aware / naive UTC) as the events' timestamps."""
    if sample is None:
        return now
    if sample.tzinfo is None:
        return now.astimezone(_UTC).replace(tzinfo=None) if now.tzinfo is not None else now
    return now if now.tzinfo is not None else now.replace(tzinfo=_UTC)


def compaction_points(urows: Sequence[Any], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[int]:
    """The indices of `urows` (main-thread turns with usage, oldest first: `main_thread` of the
    turns, `has_usage`) where the context was compacted, by the rule `assess_session` counts
    compactions with (usage_raw reports a compaction pass, or the prompt dropped sharply and
    stayed down)."""
    rows = list(urows)
    points: list[int] = []
    if rows:
        _walk_compactions(rows, [prompt_tokens(r) for r in rows], thresholds, points)
    return points


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
    conflicts: Sequence[Mapping[str, Any]] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> SessionHealth:
    """Score one session from its recent events (see the module docstring for the input).

    budget_fraction: share of a budget already used (0..1, may exceed 1), e.g. the 5 h window
    utilization or spent / daily budget. budget_rate: share used per minute at the recent pace;
    with both, `budget_minutes_left` = (1 - fraction) / rate. conflicts: this session's from
    collisions.find_conflicts (the most recent first).
    """
    t = thresholds
    h = SessionHealth(session_id=session_id)
    if budget_fraction is not None:
        _budget(h, t, budget_fraction, budget_rate, budget_label)
    if conflicts:
        _conflicts(h, t, conflicts)
    if not events:
        return _finish(h, t)

    rows = _rows(events)
    first = rows[0]
    if type(first.started_at) is not datetime or (first.ended_at is not None and type(first.ended_at) is not datetime):
        rows = _fix_times(rows)
    rows = _ordered(rows)
    last_row = rows[-1]
    now = _align_now(now, last_row.started_at)
    if first_seen is not None:
        first_seen = _align_now(_as_datetime(first_seen), last_row.started_at)  # type: ignore[arg-type]

    last_end = last_row.ended_at or last_row.started_at
    if last_end is not None:
        h.idle_seconds = max(0.0, (now - last_end).total_seconds())

    turns = [r for r in rows if r.api in TURN_APIS]
    h.turns = n_turns = len(turns)
    if not n_turns:
        return _finish(h, t)

    # main turns with usage, and their whole prompts
    urows = [r for r in main_thread(turns) if has_usage(r)]
    ps = [prompt_tokens(r) for r in urows]
    n_uses = len(urows)

    # compactions: usage_raw says so, or the prompt dropped sharply and stayed down
    ratio, min_prompt = t.compaction_ratio, t.compaction_min_prompt
    flagged = [j for j, r in enumerate(urows) if r.usage_raw is not None and _mentions_iterations(r.usage_raw)]
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
        model = ctx_row.model or ctx_row.requested_model
        provider = ctx_row.provider
        h.model, h.provider = model, provider
        long_ctx = any([r.long_context for r in turns[-t.recent_requests :]])
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
        h.model = turns[-1].model or turns[-1].requested_model
        h.provider = turns[-1].provider

    # context rot: turns and duration since the last compaction (or the session start)
    if compaction_use >= 0:
        comp_row = urows[compaction_use]
        h.turns_since_compaction = n_turns - 1 - _index_of(turns, comp_row)
        start = comp_row.started_at
    else:
        h.turns_since_compaction = max(total_turns or 0, n_turns)
        start = first_seen if first_seen is not None else rows[0].started_at
    if start is not None and last_end is not None:
        h.minutes_since_compaction = max(0.0, (last_end - start).total_seconds() / 60.0)
    if h.turns_since_compaction >= t.rot_turns_info or (h.minutes_since_compaction or 0.0) >= t.rot_minutes_info:
        _rot(h, t)

    # prompt cache
    recent_n = t.recent_requests
    h.cache_ttl_seconds = ttl_s = cache_ttl_seconds([r.cache_ttl for r in urows[-recent_n:]], t)
    first_recent = max(0, n_uses - recent_n, compaction_use + 1 if compaction_use >= 0 else 0)
    recent_urows = urows[first_recent:]
    uses_cache = any([r.cache_read_tokens or r.cache_write_tokens for r in urows[-recent_n:]])
    if recent_urows:
        sum_prompt = sum(ps[first_recent:])
        if sum_prompt:
            h.cache_read_share = sum([r.cache_read_tokens or 0 for r in recent_urows]) / sum_prompt
            if (
                uses_cache
                and h.cache_read_share < t.cache_share_warn
                and len(recent_urows) >= t.cache_share_min_turns
                and sum_prompt / len(recent_urows) >= t.cache_share_min_prompt
            ):
                _cache_share(h, t, len(recent_urows))
    cold = cache_cold_verdict(uses_cache, ctx, h.idle_seconds, ttl_s, t)
    if cold is not None:
        h.cache_cold = True
        _cache_cold(h, t, cold, ctx, ttl_s, ctx_row)  # type: ignore[arg-type]

    # recent turns: errors, tool failures, retries
    recent = turns[-recent_n:]
    first_at = recent[0].started_at
    if first_at is None or (now - first_at).total_seconds() > t.recent_horizon_min * 60.0:
        cutoff = now - timedelta(minutes=t.recent_horizon_min)
        recent = [r for r in recent if r.started_at is None or r.started_at >= cutoff]
    if recent:
        _recent_problems(h, t, recent, now)

    # slowing down
    ttfts = [r.ttft_ms for r in urows if r.ttft_ms is not None and r.outcome == "ok"]
    if len(ttfts) >= 3:
        _slowdown(h, t, ttfts, baseline_ttft_ms)

    return _finish(h, t)


def _mentions_iterations(raw: Any) -> bool:
    if type(raw) is dict:
        return "iterations" in raw or "usage" in raw
    if type(raw) is str:
        return '"iterations"' in raw
    return False


def _index_of(rows: list[HealthRow], row: HealthRow) -> int:
    for i in range(len(rows) - 1, -1, -1):
        if rows[i] is row:
            return i
    return 0


def _walk_compactions(
    urows: list[HealthRow], ps: list[int], t: Thresholds, points: list[int] | None = None,
) -> tuple[int, int, list[int], int]:
    """The slow path when a compaction is possible: (index of the context row, index of the last
    compaction or -1, main prompts since it, number of compactions); `points` (when given)
    receives the index of every compaction."""
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
        raw = r.usage_raw
        if raw is not None and _mentions_iterations(raw):
            compacted, after = _compaction_in_raw(raw)
            if compacted and after is not None:
                p = after
        if not compacted and ctx is not None and ctx >= min_prompt and p < ratio * ctx:
            if r.model != prev_model:
                continue  # another model's side call (title, summary): not this context
            if j + 1 < n and ps[j + 1] >= recover * ctx:
                continue  # a dip the next turn recovers from: a side call
            compacted = True
        if compacted:
            count += 1
            compaction_j = j
            if points is not None:
                points.append(j)
            since = []
        ctx = p
        ctx_j = j
        prev_model = r.model
        since.append(p)
    return ctx_j, compaction_j, since, count


_FILL_ADVICE = {
    "critical": "{what}: compact now (/compact) or carry the work into a fresh session: {handoff}; answers "
    "degrade and auto-compaction or a 'prompt too long' error is close",
    "warn": "{what}: compact (/compact) at the next natural break, or start the next task in a fresh session "
    "from a brief of this one: {handoff}",
    "info": "keep tasks focused; start a fresh session for unrelated work (with this one's brief: {handoff})",
}


def handoff_command(session_id: str | None) -> str:
    """The command that starts a fresh session from a brief of this one (docs/handoff.md)."""
    return f"llmsm handoff {shlex.quote(session_id) if session_id else 'SESSION'} --start"


def _context(h: SessionHealth, t: Thresholds, fill: float, ctx: int, window: int) -> None:
    verdict = fill_verdict(fill, t)
    if verdict is not None:
        severity, pen = verdict
        what = f"context {fill:.0%} full ({_k(ctx)} of {_k(window)} tokens)"
        advice = _FILL_ADVICE[severity].format(what=what, handoff=handoff_command(h.session_id))
        h.reasons.append(Reason("context_fill", severity, pen, what, advice))
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
                "compact (/compact) before the window fills, or move to a fresh session with this one's brief: "
                f"{handoff_command(h.session_id)}; a forced compaction in the middle of a task loses detail",
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
            f"or carry the work into a fresh session: {handoff_command(h.session_id)}",
        )
    )


def _cache_cold(h: SessionHealth, t: Thresholds, verdict: tuple[Severity, int], ctx: int, ttl_s: float,
                ctx_row: HealthRow | None) -> None:
    idle = h.idle_seconds or 0.0
    extra = None
    if ctx_row is not None:
        model, provider = ctx_row.model or ctx_row.requested_model, ctx_row.provider
        extra = prices.cache_miss_extra_usd(provider, model, ctx, one_hour=ttl_s >= t.cache_ttl_1h_s, at=ctx_row.started_at)
    cost = f" (about ${extra:.2f} more than a warm turn)" if extra else ""
    severity, pen = verdict
    h.reasons.append(
        Reason(
            "cache_cold",
            severity,
            pen,
            f"prompt cache expired: idle {_dur(idle / 60.0)} > {_dur(ttl_s / 60.0)} TTL; the next turn re-sends "
            f"{_k(ctx)} tokens uncached{cost}",
            "switching tasks? start a fresh session (or /clear) instead of resuming; otherwise expect one slower, "
            "pricier turn",
        )
    )


def _recent_problems(h: SessionHealth, t: Thresholds, recent: list[HealthRow], now: datetime) -> None:
    """Errors, tool failures and retries over the recent turns (already cut to the horizon)."""
    n_recent = len(recent)
    kinds, score, last_kind = tally_errors(recent, now, t)
    if kinds:
        h.recent_errors = n = sum(kinds.values())
        h.error_kinds = kinds
        h.error_score = round(score, 3)
        verdict = error_verdict(kinds, score, last_kind, t)
        if verdict is not None:
            severity, pen, kind = verdict
            if last_kind in HARD_ERRORS:
                message = f"the last request failed: {ERROR_LABELS[kind]}"
            else:
                parts = ", ".join(f"{c}x {ERROR_LABELS[k]}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]))
                message = f"{n} failed request{'s' if n != 1 else ''} among the last {n_recent}: {parts}"
            h.reasons.append(Reason("errors", severity, pen, message, ERROR_ADVICE[kind], kind))

    # tool failures; a retried request (same hash as the one before) reports the same failures
    hashes = [r.request_hash for r in recent if r.request_hash is not None]
    distinct = len(set(hashes))
    if distinct == len(hashes):
        tool_errors = sum([r.tool_errors for r in recent if r.tool_errors])
        repeats = 1 if hashes else 0
    else:
        tool_errors = 0
        prev = None
        counts: dict[str, int] = {}
        for r in recent:
            rh = r.request_hash
            if r.tool_errors and (rh is None or rh != prev):
                tool_errors += r.tool_errors
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
    retries = [r.retry_count for r in recent if r.retry_count]
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


def _conflicts(h: SessionHealth, t: Thresholds, conflicts: Sequence[Mapping[str, Any]]) -> None:
    h.conflicts = [dict(c) for c in conflicts]
    verdict = conflict_verdict(len(h.conflicts), t)
    if verdict is None:
        return
    first = h.conflicts[0]
    other = first["other_session"]
    name = f"{first['other_label']} ({other})" if first.get("other_label") else other
    message = f"{first['path']} was also edited by session {name}"
    files = {c["file"] for c in h.conflicts}
    others = {c["other_session"] for c in h.conflicts}
    if len(files) > 1:
        message += f"; {len(files) - 1} more file{'s' if len(files) > 2 else ''} shared"
    if len(others) > 1:
        message += f" with {len(others)} sessions"
    severity, pen = verdict
    h.reasons.append(
        Reason(
            "file_conflict",
            severity,
            pen,
            message,
            "two sessions are changing the same file: re-read it before the next edit, and give each session "
            "its own files or its own git worktree (`git worktree add`)",
        )
    )


def _rank_key(r: Reason) -> tuple[int, int]:
    return rank_key(r.penalty, r.severity)


def _finish(h: SessionHealth, t: Thresholds) -> SessionHealth:
    reasons = h.reasons
    if not reasons:
        return h
    if len(reasons) > 1:
        reasons.sort(key=_rank_key)
    h.score, h.status = score_and_status([(r.penalty, r.severity) for r in reasons], t)
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
