"""analytics/health.py: each factor on crafted event sequences."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from llmsm.analytics import prices, store
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.health import DEFAULT_THRESHOLDS, SessionHealth, Thresholds, assess_all, assess_session

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"


@pytest.fixture(autouse=True)
def _no_user_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSM_PRICES", str(tmp_path / "absent-prices.toml"))
    prices.set_default_overrides(None)


def turn(at: datetime, prompt: int, **kw) -> ExchangeEvent:
    """A successful Claude Code style turn: almost all of the prompt read from cache."""
    fields = dict(
        session_id="s1", provider="anthropic", api="messages", model=SONNET, started_at=at,
        ended_at=at + timedelta(seconds=6), status_code=200, outcome="ok", input_tokens=8,
        cache_read_tokens=max(0, prompt - 1_508), cache_write_tokens=min(prompt, 1_500), output_tokens=400,
        usage_source="reported", ttft_ms=1_500.0, tool_errors=0, request_hash=f"h-{at.timestamp()}-{prompt}",
        cache_ttl="5m",
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


def failed(at: datetime, status: int, **kw) -> ExchangeEvent:
    fields = dict(
        session_id="s1", provider="anthropic", api="messages", model=SONNET, started_at=at,
        ended_at=at + timedelta(seconds=1), status_code=status, outcome="http_error",
        request_hash=f"e-{at.timestamp()}",
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


def session(prompts: list[int], *, end: datetime = NOW - timedelta(seconds=30), step_s: float = 20, **kw) -> list[ExchangeEvent]:
    start = end - timedelta(seconds=step_s * (len(prompts) - 1))
    return [turn(start + timedelta(seconds=step_s * i), p, **kw) for i, p in enumerate(prompts)]


def stored_rows(db, events: list[ExchangeEvent]) -> list[tuple]:
    """The events as `SELECT * FROM events` gives them back from a real database, in their order."""
    store.insert_events(db, events)
    con = store.open_for_query(db)
    try:
        rows = con.execute("SELECT * FROM events").fetchall()
    finally:
        con.close()
    order = {event.id: i for i, event in enumerate(events)}
    return sorted((row for row in rows if row[0] in order), key=lambda row: order[row[0]])


def factors(h: SessionHealth) -> list[str]:
    return [r.factor for r in h.reasons]


def test_healthy_session_stays_healthy():
    h = assess_session(session(list(range(30_000, 45_000, 1_000))), now=NOW)
    assert h.status == "healthy"
    assert h.score == 100
    assert h.reasons == []
    assert h.context_window == 200_000
    assert h.context_tokens == 44_000
    assert h.context_fill == pytest.approx(0.22)
    assert h.growth_per_turn == pytest.approx(1_000)
    assert h.turns_left == 156
    assert h.turns == 15 and h.compactions == 0
    assert h.cache_read_share > 0.9 and not h.cache_cold
    assert h.recent_errors == 0 and h.tool_errors == 0 and not h.retry_loop
    json.dumps(h.to_dict())


def test_nearly_full_context_is_critical_and_first():
    events = session([150_000, 160_000, 170_000, 180_000])
    h = assess_session(events, now=NOW)
    assert h.status == "critical"
    assert h.context_tokens == 180_000 and h.context_fill == pytest.approx(0.9)
    top = h.reasons[0]
    assert top.factor == "context_fill" and top.severity == "critical"
    assert "90%" in top.message and "/compact" in top.advice
    assert all("llmsm handoff SESSION --start" in r.advice for r in h.reasons if r.factor.startswith("context_"))
    named = assess_session(events, now=NOW, session_id="5f1c2a9e-1111")  # the exact command, with its id
    assert all("llmsm handoff 5f1c2a9e-1111 --start" in r.advice for r in named.reasons if r.factor.startswith("context_"))
    assert "context_growth" in factors(h)  # 2 turns left at +10k per turn
    assert h.turns_left == 2
    # the same prompt with the 1M beta is fine
    h1m = assess_session(session([150_000, 160_000, 170_000, 180_000], long_context=True), now=NOW)
    assert h1m.context_window == 1_000_000
    assert "context_fill" not in factors(h1m) and h1m.status == "healthy"


def test_context_fill_levels():
    warn = assess_session(session([150_000]), now=NOW)  # 75 %
    assert warn.reasons[0].factor == "context_fill" and warn.reasons[0].severity == "warn"
    assert warn.status == "degraded"
    info = assess_session(session([110_000]), now=NOW)  # 55 %
    assert info.reasons[0].severity == "info" and info.status == "healthy"


def test_compaction_resets_rot():
    start = NOW - timedelta(hours=5)
    prompts = [100_000 + 1_000 * i for i in range(30)]
    long_run = session(prompts)
    h = assess_session(long_run, now=NOW, first_seen=start, total_turns=250)
    assert h.compactions == 0 and h.turns_since_compaction == 250
    rot = [r for r in h.reasons if r.factor == "context_rot"]
    assert rot and rot[0].severity == "warn" and "since the session started" in rot[0].message

    # the prompt drops from 129k to 20k and stays small: a compaction
    compacted = session(prompts[:25] + [20_000, 21_000, 22_000, 23_000, 24_000])
    h2 = assess_session(compacted, now=NOW, first_seen=start, total_turns=250)
    assert h2.compactions == 1
    assert h2.turns_since_compaction == 4
    assert h2.minutes_since_compaction < 2
    assert h2.context_tokens == 24_000
    assert "context_rot" not in factors(h2)


def test_side_call_dip_is_not_a_compaction():
    events = session([120_000, 121_000, 122_000, 123_000])
    # a small title/summary call on another model, then the main thread continues
    side = turn(events[-1].started_at + timedelta(seconds=5), 3_000, model="claude-haiku-4-5-20251001")
    nxt = turn(events[-1].started_at + timedelta(seconds=20), 124_000)
    h = assess_session([*events, side, nxt], now=NOW)
    assert h.compactions == 0 and h.context_tokens == 124_000
    # same model dip that recovers on the next turn
    dip = turn(events[-1].started_at + timedelta(seconds=5), 3_000)
    h2 = assess_session([*events, dip, nxt], now=NOW)
    assert h2.compactions == 0 and h2.context_tokens == 124_000
    # the side call being the latest turn still reports the main context
    h3 = assess_session([*events, side], now=NOW)
    assert h3.context_tokens == 123_000 and h3.model == SONNET


def test_compaction_from_usage_iterations(tmp_path):
    events = session([150_000, 160_000, 170_000])
    raw = {"input_tokens": 9_000, "iterations": [
        {"type": "compaction", "input_tokens": 171_000, "output_tokens": 3_000},
        {"type": "message", "input_tokens": 9_000, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    ]}
    # billed usage (the columns) is the sum over passes; the context afterwards is the last pass
    comp = turn(NOW - timedelta(seconds=10), 0, input_tokens=180_000, cache_read_tokens=0, cache_write_tokens=0, usage_raw=raw)
    h = assess_session([*events, comp], now=NOW)
    assert h.compactions == 1 and h.context_tokens == 9_000 and h.turns_since_compaction == 0
    assert "context_fill" not in factors(h)
    # the same from a DB row where usage_raw is JSON text
    h_rows = assess_session(stored_rows(tmp_path / "h.duckdb", [*events, comp]), now=NOW)
    assert h_rows.compactions == 1 and h_rows.context_tokens == 9_000


def test_cold_cache_5m_vs_1h():
    end = NOW - timedelta(minutes=6)
    prompts = [90_000, 95_000, 100_000]
    h = assess_session(session(prompts, end=end), now=NOW)
    assert h.cache_cold and h.idle_seconds == pytest.approx(354)
    cold = [r for r in h.reasons if r.factor == "cache_cold"]
    assert cold and cold[0].severity == "warn" and "100k" in cold[0].message and "$" in cold[0].message
    assert h.status == "degraded"

    h1h = assess_session(session(prompts, end=end, cache_ttl="1h"), now=NOW)
    assert not h1h.cache_cold and h1h.cache_ttl_seconds == 3600
    assert "cache_cold" not in factors(h1h) and h1h.status == "healthy"

    # no caching at all: nothing to go cold
    plain = session(prompts, end=end, cache_ttl=None)
    for e in plain:
        e.input_tokens, e.cache_read_tokens, e.cache_write_tokens = e.usage().prompt_tokens, 0, 0
    assert not assess_session(plain, now=NOW).cache_cold


def test_low_cache_read_share():
    events = session([60_000, 61_000, 62_000, 63_000, 64_000])
    for e in events[1:]:  # the cache is written every time but never read back
        e.input_tokens, e.cache_read_tokens, e.cache_write_tokens = 1_000, 0, e.usage().prompt_tokens - 1_000
    h = assess_session(events, now=NOW)
    assert h.cache_read_share < 0.5
    assert "cache_share" in factors(h)


def test_repeated_529s():
    events = session([40_000, 41_000, 42_000], end=NOW - timedelta(minutes=3))
    errs = [failed(NOW - timedelta(seconds=100 - 15 * i), 529, error_type="overloaded_error") for i in range(5)]
    h = assess_session([*events, *errs], now=NOW)
    assert h.status == "critical"
    assert h.error_kinds == {"overloaded": 5} and h.recent_errors == 5
    assert h.reasons[0].factor == "errors" and h.reasons[0].severity == "critical"
    assert "overloaded" in h.reasons[0].message and "wait" in h.reasons[0].advice

    # the next request went through: recovering, degraded not critical
    ok = turn(NOW - timedelta(seconds=5), 43_000)
    h2 = assess_session([*events, *errs, ok], now=NOW)
    assert h2.status == "degraded"
    assert [r for r in h2.reasons if r.factor == "errors"][0].severity == "warn"

    # the same errors two hours ago do not count
    old = [failed(NOW - timedelta(hours=2, seconds=i), 529) for i in range(5)]
    h3 = assess_session([*old, *session([40_000, 41_000, 42_000])], now=NOW)
    assert h3.recent_errors == 0 and h3.status == "healthy"


def test_error_weights_decay_and_kinds():
    one = assess_session([*session([40_000, 41_000]), failed(NOW - timedelta(seconds=5), 429)], now=NOW)
    assert one.error_kinds == {"rate_limit": 1}
    assert [r.severity for r in one.reasons if r.factor == "errors"] == ["info"]  # one transient error
    assert one.status == "healthy"
    two = assess_session([*session([40_000, 41_000]), failed(NOW - timedelta(seconds=9), 429), failed(NOW - timedelta(seconds=5), 429)], now=NOW)
    assert [r.severity for r in two.reasons if r.factor == "errors"] == ["warn"]
    # an error loses half its weight every 15 minutes
    older = assess_session([*session([40_000], end=NOW - timedelta(minutes=31)), failed(NOW - timedelta(minutes=30), 429)], now=NOW)
    assert older.error_score == pytest.approx(0.25, abs=0.01) and "errors" not in factors(older)
    aborted = assess_session([*session([40_000, 41_000]), failed(NOW - timedelta(seconds=5), None, outcome="client_aborted")], now=NOW)
    assert aborted.error_kinds == {"client_aborted": 1} and "errors" not in factors(aborted)  # Esc is not a problem
    stream = failed(NOW - timedelta(seconds=5), 200, outcome="stream_error", error_type="overloaded_error")
    assert assess_session([*session([40_000]), stream], now=NOW).error_kinds == {"overloaded": 1}


def test_hard_errors_are_critical_at_once():
    too_long = failed(NOW - timedelta(seconds=5), 400, error_type="invalid_request_error",
                      error_message="prompt is too long: 210000 tokens > 200000 maximum")
    h = assess_session([*session([190_000]), too_long], now=NOW)
    assert h.status == "critical" and h.error_kinds == {"context_overflow": 1}
    assert any(r.factor == "errors" and "compact" in r.advice for r in h.reasons)
    auth = assess_session([*session([10_000]), failed(NOW, 401)], now=NOW)
    assert auth.status == "critical" and "log in" in auth.reasons[0].advice


def test_a_budget_refusal_is_its_own_hard_error():
    """llmsm's own refusal (a 429, a 402 for Codex) is neither a rate limit nor billing: the
    session waits for its user to raise the budget, and the advice says how."""
    from llmsm.analytics import budgets, health_rules

    msg = f"{budgets.EXCEEDED_PREFIX} label 'x' has used 2,326 of its 2,000 tokens (budget ab12cd34); ..."
    for status, error_type in ((429, "rate_limit_error"), (402, "insufficient_quota")):
        refused = failed(NOW - timedelta(seconds=5), status, error_type=error_type, error_message=msg)
        h = assess_session([*session([40_000]), refused], now=NOW)
        assert h.error_kinds == {"budget": 1} and h.status == "critical"
        assert "llmsm budget set" in h.reasons[0].advice
        assert health_rules.error_kind(status, "http_error", error_type, msg) == "budget"
    assert health_rules.BUDGET_REFUSAL_PREFIX == budgets.EXCEEDED_PREFIX
    # the provider's own rate limit stays a rate limit
    assert health_rules.error_kind(429, "http_error", "rate_limit_error", "Number of requests exceeded") == "rate_limit"


def test_tool_errors():
    events = session([40_000 + 1_000 * i for i in range(8)])
    for e in events[-3:]:
        e.tool_errors = 2
    h = assess_session(events, now=NOW)
    assert h.tool_errors == 6
    r = [r for r in h.reasons if r.factor == "tool_errors"][0]
    assert r.severity == "warn" and "6 failed tool calls" in r.message
    assert h.status == "degraded"


def test_retry_loop():
    events = session([40_000, 41_000, 42_000], end=NOW - timedelta(minutes=2))
    again = [failed(NOW - timedelta(seconds=60 - 10 * i), 500, request_hash="same-body") for i in range(4)]
    h = assess_session([*events, *again], now=NOW)
    assert h.retry_loop and h.retry_repeats == 4
    assert "retry_loop" in factors(h)
    assert h.error_kinds == {"server": 4}
    # x-stainless-retry-count style counters say the same
    counted = assess_session([*events, failed(NOW, 529, retry_count=5)], now=NOW)
    assert counted.retry_loop and counted.retry_repeats == 6
    assert [r.severity for r in counted.reasons if r.factor == "retry_loop"] == ["critical"]


def test_ttft_slowing_down():
    events = session([40_000 + 500 * i for i in range(12)])
    for e in events[:6]:
        e.ttft_ms = 1_000.0
    for e in events[6:]:
        e.ttft_ms = 5_000.0
    h = assess_session(events, now=NOW)
    assert h.ttft_early_ms == 1_000 and h.ttft_recent_ms == 5_000 and h.ttft_ratio == 5.0
    slow = [r for r in h.reasons if r.factor == "slowdown"]
    assert slow and slow[0].penalty == DEFAULT_THRESHOLDS.ttft_penalty_high
    # a small absolute change is noise
    for e in events[6:]:
        e.ttft_ms = 2_500.0
    assert "slowdown" not in factors(assess_session(events, now=NOW))
    # an early baseline from the caller
    recent_only = events[-4:]
    for e in recent_only:
        e.ttft_ms = 6_000.0
    assert "slowdown" in factors(assess_session(recent_only, now=NOW, baseline_ttft_ms=1_000))


def test_budget_forecast():
    h = assess_session(session([40_000]), now=NOW, budget_fraction=0.95, budget_rate=0.01, budget_label="5h limit")
    assert h.budget_minutes_left == pytest.approx(5)
    r = [r for r in h.reasons if r.factor == "budget"][0]
    assert r.severity == "warn" and "5h limit 95% used" in r.message
    over = assess_session(session([40_000]), now=NOW, budget_fraction=1.02)
    assert over.status == "critical"


def test_non_turn_apis_are_ignored_for_usage():
    events = session([40_000, 41_000])
    preflight = ExchangeEvent(session_id="s1", api="other", method="HEAD", started_at=NOW - timedelta(seconds=2))
    count = ExchangeEvent(session_id="s1", provider="anthropic", api="count_tokens", model=SONNET,
                          started_at=NOW - timedelta(seconds=1), counted_tokens=190_000, status_code=200)
    h = assess_session([*events, preflight, count], now=NOW)
    assert h.turns == 2 and h.context_tokens == 41_000 and h.status == "healthy"


def test_subagents_do_not_set_the_context():
    main = session([150_000, 152_000, 154_000], end=NOW - timedelta(seconds=60))
    sub = session([5_000, 9_000, 14_000], end=NOW - timedelta(seconds=5), agent_id="sub-1")
    h = assess_session([*main, *sub], now=NOW)
    assert h.context_tokens == 154_000 and h.compactions == 0


def test_input_kinds_and_order_agree(tmp_path):
    events = session([60_000, 70_000, 80_000, 150_000, 160_000])
    events[-1].tool_errors = 3
    ref = assess_session(events, now=NOW).to_dict()
    dicts = [e.model_dump() for e in events]
    rows = stored_rows(tmp_path / "h.duckdb", events)
    assert assess_session(dicts, now=NOW).to_dict() == ref
    assert assess_session(rows, now=NOW).to_dict() == ref
    assert assess_session(list(reversed(events)), now=NOW).to_dict() == ref
    # ISO strings and naive UTC timestamps (DuckDB TIMESTAMP)
    iso = [{**d, "started_at": d["started_at"].isoformat(), "ended_at": d["ended_at"].isoformat()} for d in dicts]
    assert assess_session(iso, now=NOW).to_dict() == ref
    naive = [{**d, "started_at": d["started_at"].replace(tzinfo=None), "ended_at": d["ended_at"].replace(tzinfo=None)} for d in dicts]
    assert assess_session(naive, now=NOW).to_dict() == ref
    # partial dicts work too (missing keys are None)
    slim = [{k: d[k] for k in ("api", "started_at", "model", "provider", "input_tokens", "cache_read_tokens",
                               "cache_write_tokens", "outcome", "status_code")} for d in dicts]
    assert assess_session(slim, now=NOW).context_tokens == ref["context_tokens"]


def test_a_tuple_must_be_a_whole_events_row():
    """Fields are read by name: a bare tuple can only be a SELECT * row (its columns are known);
    any other tuple is refused instead of being read as all None."""
    with pytest.raises(TypeError, match="SELECT \\* row"):
        assess_session([("messages", NOW, NOW, SONNET)], now=NOW)


def test_empty_and_json():
    h = assess_session([], now=NOW, session_id="x")
    assert h.score == 100 and h.status == "healthy" and h.session_id == "x"
    d = assess_session(session([180_000]), now=NOW).to_dict()
    text = json.dumps(d)
    assert json.loads(text)["reasons"][0]["factor"] == "context_fill"


def test_thresholds_are_configurable():
    strict = Thresholds(fill_info=0.1, fill_warn=0.15, fill_critical=0.2)
    h = assess_session(session([45_000]), now=NOW, thresholds=strict)
    assert h.status == "critical"


def test_assess_all_over_a_thousand_sessions(tmp_path):
    # How fast it is: benchmarks/bench_dashboard.py (a refresh of 1,000 sessions), not a timed test.
    sessions = {}
    for i in range(1_000):
        prompts = [20_000 + 3_000 * k + 500 * (i % 7) for k in range(20)]
        evs = session(prompts, end=NOW - timedelta(seconds=5 + i % 900), session_id=f"s{i}")
        if i % 10 == 0:
            evs[-1] = failed(evs[-1].started_at, 529)
        sessions[f"s{i}"] = evs
    rows = iter(stored_rows(tmp_path / "h.duckdb", [e for evs in sessions.values() for e in evs]))
    sessions = {sid: [next(rows) for _ in evs] for sid, evs in sessions.items()}  # as the dashboard reads them
    agg = {"s1": {"first_seen": NOW - timedelta(hours=6), "total_turns": 300}}
    out = assess_all(sessions, NOW, aggregates=agg)
    assert len(out) == 1_000 and out["s1"].turns_since_compaction == 300
    assert "context_rot" in factors(out["s1"])
