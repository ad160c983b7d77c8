"""`llmsm health` and `llmsm statusline` give the same verdict on the same rows: one real DuckDB
file per case, read by the dashboard frame (what `llmsm health` shows) and by the status line's
quick check, evaluated at the same moment."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmsm.analytics import health_rules, prices
from llmsm.analytics.dashboard import read_frame
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.statusline import statusline
from llmsm.analytics.store import insert_events
from llmsm.cli.format import format_statusline, short_reason, statusline_reason

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
SONNET = "claude-sonnet-4-5-20250929"
GPT = "gpt-4o-2024-08-06"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the status line's context-window cache
    monkeypatch.setenv("LLMSM_PRICES", str(tmp_path / "absent-prices.toml"))
    prices.set_default_overrides(None)


def anthropic_turn(sid: str, ago: timedelta, prompt: int, **kw) -> ExchangeEvent:
    """A Claude Code style turn: almost all of the prompt read from cache."""
    at = NOW - ago
    fields = dict(
        session_id=sid, label=sid, client="claude-code", provider="anthropic", api="messages", model=SONNET,
        requested_model=SONNET, started_at=at, ended_at=at + timedelta(seconds=4), status_code=200, outcome="ok",
        input_tokens=8, cache_read_tokens=max(0, prompt - 1_508), cache_write_tokens=min(prompt, 1_500),
        output_tokens=300, usage_source="reported", request_hash=uuid.uuid4().hex, cache_ttl="5m",
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


def openai_turn(sid: str, ago: timedelta, prompt: int, **kw) -> ExchangeEvent:
    at = NOW - ago
    fields = dict(
        session_id=sid, label=sid, client="openai-python", provider="openai", api="chat_completions", model=GPT,
        requested_model="gpt-4o", started_at=at, ended_at=at + timedelta(seconds=3), status_code=200, outcome="ok",
        input_tokens=prompt, cache_read_tokens=0, output_tokens=200, usage_source="reported",
        request_hash=uuid.uuid4().hex,
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


def failure(turn, sid: str, ago: timedelta, status: int, error_type: str | None, message: str | None) -> ExchangeEvent:
    """A failed request: no usage, the provider's error."""
    return turn(sid, ago, 0, status_code=status, outcome="http_error", error_type=error_type, error_message=message,
                input_tokens=None, cache_read_tokens=None, cache_write_tokens=None, output_tokens=None,
                usage_source="none", ended_at=NOW - ago + timedelta(milliseconds=300))


S = timedelta(seconds=1)
OVERFLOW = ("This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 "
            "tokens. Please reduce the length of the messages.")

# case -> (events of one session, the verdict: status, top factor, error kind)
CASES = {
    "openai-context-length-400": (
        [*(openai_turn("overflow", (60 - 10 * i) * S, 20_000 + 1_000 * i) for i in range(3)),
         failure(openai_turn, "overflow", 5 * S, 400, "invalid_request_error", OVERFLOW)],
        ("critical", "errors", "context_overflow"),
    ),
    "billing-402": (
        [*(anthropic_turn("billing", (60 - 10 * i) * S, 20_000 + 1_000 * i) for i in range(3)),
         failure(anthropic_turn, "billing", 5 * S, 402, None, "Insufficient credits: add credits to continue")],
        ("critical", "errors", "billing"),
    ),
    "overloaded-529s": (
        [anthropic_turn("storm", 90 * S, 20_000),
         *(failure(anthropic_turn, "storm", (40 - 10 * i) * S, 529, "overloaded_error", "Overloaded") for i in range(4))],
        ("critical", "errors", "overloaded"),
    ),
    "two-429s": (
        [*(anthropic_turn("limited", (90 - 20 * i) * S, 20_000 + 1_000 * i) for i in range(2)),
         *(failure(anthropic_turn, "limited", (20 - 10 * i) * S, 429, "rate_limit_error", "Too many requests") for i in range(2))],
        ("degraded", "errors", "rate_limit"),
    ),
    "context-90-percent": (  # growing 10k a turn: the full model adds "~2 turns left", the status is the same
        [anthropic_turn("full", (80 - 20 * i) * S, p) for i, p in enumerate([150_000, 160_000, 170_000, 180_000])],
        ("critical", "context_fill", None),
    ),
    "context-75-percent": (
        [anthropic_turn("filling", (80 - 20 * i) * S, p) for i, p in enumerate([148_000, 149_000, 150_000])],
        ("degraded", "context_fill", None),
    ),
    "cold-cache": (
        [anthropic_turn("coffee", timedelta(minutes=8) + (40 - 10 * i) * S, 60_000 + 500 * i) for i in range(5)],
        ("degraded", "cache_cold", None),
    ),
    "calm": (
        [anthropic_turn("calm", (60 - 20 * i) * S, 10_000 + 500 * i) for i in range(3)],
        ("healthy", None, None),
    ),
}


QUICK_FACTORS = {"context_fill", "errors", "cache_cold"}  # what the status line checks of the model


def both(db: Path):
    """What `llmsm health` shows first (the frame of the last 60 minutes, the most urgent first)
    and what the status line says, both as of NOW."""
    frame = read_frame(db, at=NOW, window_minutes=60.0, timeout=5)
    return frame.sessions, statusline(db, now=NOW)


@pytest.mark.parametrize("case", list(CASES))
def test_health_and_statusline_agree(tmp_path, case):
    events, (status, factor, kind) = CASES[case]
    db = tmp_path / f"{case}.duckdb"
    insert_events(db, events)
    sessions, line = both(db)
    [row] = sessions
    h = row.health
    top = h.reasons[0] if h.reasons else None
    assert (h.status, top and top.factor, top and top.kind) == (status, factor, kind), h.reasons
    assert line.note is None and line.recent == 1 and line.worst_status == status
    if status == "healthy":
        assert line.worst is None and "all healthy" in format_statusline(line)
        return
    q = line.worst
    assert line.worst_name == row.name
    assert (q.status, q.factor, q.error_kind) == (h.status, top.factor, top.kind)
    if {r.factor for r in h.reasons} <= QUICK_FACTORS:  # nothing the quick check leaves out: the same score
        assert q.score == h.score
    assert statusline_reason(q) == short_reason(h)  # the same words as the dashboard's "why"
    assert f"worst: {row.name} {status} ({short_reason(h)})" in format_statusline(line)


@pytest.mark.parametrize("case", list(CASES))
def test_health_and_the_per_session_line_agree(tmp_path, case):
    """The gateway's per-session snapshot (what `llmsm statusline` shows for a Claude Code
    session) gives the verdict `llmsm health` gives, in the same words."""
    from types import SimpleNamespace

    from llmsm.analytics.session_status import SessionState, snapshot
    from llmsm.cli.format import format_session_line

    events, (status, factor, kind) = CASES[case]
    db = tmp_path / f"{case}.duckdb"
    insert_events(db, events)
    sessions, _ = both(db)
    h = sessions[0].health
    state = SessionState(events[0].session_id)
    state.seeded = True
    for e in sorted(events, key=lambda e: e.ended_at):  # as the gateway sees them: in the order they end
        state.add(e)
    snap = snapshot(state, NOW)
    q = snap["health"]
    assert (q["status"], q["factor"], q["error_kind"]) == (status, factor, kind)
    if {r.factor for r in h.reasons} <= QUICK_FACTORS:
        assert q["score"] == h.score
    assert statusline_reason(SimpleNamespace(**q)) == short_reason(h)
    line = format_session_line(snap)
    assert f" · {status}" in line and (short_reason(h) in line if h.reasons else True), line


def test_the_worst_session_is_the_one_health_lists_first(tmp_path):
    """Among sessions the quick check sees whole (not "context-90-percent": the full model's
    growth forecast lowers its score), the status line names the one `llmsm health` lists first."""
    cases = [c for c in CASES if c != "context-90-percent"]
    db = tmp_path / "all.duckdb"
    insert_events(db, [e for c in cases for e in CASES[c][0]])
    sessions, line = both(db)
    first = sessions[0]
    assert line.recent == len(cases) and line.worst_name == first.name
    assert (line.worst.status, line.worst.score) == (first.status, first.score)
    assert statusline_reason(line.worst) == short_reason(first.health)


def test_error_kinds_named_by_status_code_and_message():
    kind = health_rules.error_kind
    assert kind(400, "http_error", "invalid_request_error", OVERFLOW) == "context_overflow"
    assert kind(400, "http_error", "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum") == "context_overflow"
    assert kind(400, "http_error", "invalid_request_error", "temperature: must be at most 2") == "client"
    assert kind(402, "http_error", None, "Insufficient credits") == "billing"
    assert kind(401, "http_error", "authentication_error", "invalid x-api-key") == "auth"
    assert kind(200, "ok", None, None) is None


def test_statusline_stays_light(tmp_path):
    """The status line imports neither pydantic, genai-prices, typer nor rich once the context
    windows of its models are cached (the first sight of a model fills the cache from prices)."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO, isolated_env

    db = tmp_path / "light.duckdb"
    # the cases are as of NOW (collection time); the subprocess reads the clock: shift them to it
    shift = datetime.now(UTC).replace(microsecond=0) - NOW
    insert_events(db, [e.model_copy(update={"started_at": e.started_at + shift, "ended_at": e.ended_at + shift})
                       for e in CASES["context-90-percent"][0] + CASES["openai-context-length-400"][0]])
    code = ("import sys, json; from llmsm.cli.statusline import main; main(sys.argv[1:]); "
            "heavy = ('pydantic', 'genai_prices', 'typer', 'rich', 'llmsm.analytics.store', 'llmsm.analytics.health'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy)))")
    env = isolated_env(tmp_path)
    runs = [subprocess.run([sys.executable, "-c", code, "--db", str(db)], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=60) for _ in range(2)]
    for p in runs:
        assert p.returncode == 0 and p.stderr == "", p.stderr
    line, loaded = runs[1].stdout.splitlines()
    assert line.startswith("llmsm 2 active · worst: overflow critical (1 error: prompt too long)")
    assert json.loads(loaded) == []


def test_statusline_default_db_is_the_stores(monkeypatch, tmp_path):
    from llmsm.analytics import statusline as sl
    from llmsm.analytics import store

    monkeypatch.delenv("LLMSM_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert sl.default_db_path() == store.default_db_path()
    monkeypatch.setenv("LLMSM_DB", "~/elsewhere.duckdb")
    assert sl.default_db_path() == store.default_db_path()
