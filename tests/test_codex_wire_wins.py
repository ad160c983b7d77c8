"""A Codex thread the gateway recorded and that `llmsm import codex` then reads from its rollout
counts once (the wire wins, views.sql: imported_seen_on_wire), in `sessions`, `daily`, the
reports and `llmsm cost`; a thread only in its rollout still counts.

The wire side is real: Codex-shaped Responses requests through `llmsm proxy` to the fake
upstream. The rollouts are written in Codex's shape (tests/test_import_codex.py: Rollout), the
token_count of each response carrying the usage that response had on the wire."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from tests.conftest import TEST_KEYS, Gateway, run_cli
from tests.test_digest_gateway import _codex_headers, _codex_input
from tests.test_import_codex import KEYS, Rollout, iso
from tests.test_transcripts import query
from tests.upstream import OPENAI_RESPONSES_USAGE

WIRE_LAST = {  # the fake upstream's usage, as a rollout's last_token_usage writes it
    "input_tokens": OPENAI_RESPONSES_USAGE["input_tokens"],
    "cached_input_tokens": OPENAI_RESPONSES_USAGE["input_tokens_details"]["cached_tokens"],
    "output_tokens": OPENAI_RESPONSES_USAGE["output_tokens"],
    "reasoning_output_tokens": OPENAI_RESPONSES_USAGE["output_tokens_details"]["reasoning_tokens"],
    "total_tokens": OPENAI_RESPONSES_USAGE["total_tokens"],
}


def _token_count(r: Rollout, last: dict, at: datetime) -> None:
    """One response in the rollout: its output item, then the token_count Codex writes after it."""
    for k in KEYS:
        r.totals[k] += last[k]
    r.lines.append({"timestamp": iso(at), "type": "response_item", "payload": {
        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}})
    r.lines.append({"timestamp": iso(at), "type": "event_msg", "payload": {"type": "token_count", "info": {
        "total_token_usage": dict(r.totals), "last_token_usage": dict(last), "model_context_window": 272000},
        "rate_limits": {"primary": {"used_percent": 3.0}}}})


@pytest.fixture(scope="module")
def both(upstream, tmp_path_factory):
    """(db, seen thread, rollout-only thread, wire rows) after the traffic and the import."""
    tmp = tmp_path_factory.mktemp("codexwire")
    g = Gateway(tmp, upstream.url).start()
    seen, alone = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        for items in _codex_input(uuid.uuid4().hex[:8]):
            r = httpx.post(f"{g.url}/openai/v1/responses", timeout=15, headers=_codex_headers(TEST_KEYS["openai"], seen), json={
                "model": "gpt-5-codex", "stream": True, "instructions": "You are Codex.", "input": items,
                "tools": [{"type": "function", "name": "shell"}], "prompt_cache_key": seen})
            assert r.status_code == 200, r.text
        wire = g.wait_rows(3, f"session_id = '{seen}' AND api = 'responses'")
    finally:
        g.stop()
    assert len(wire) == 3 and {w["usage_source"] for w in wire} == {"reported"}

    root = tmp / "codex" / "sessions"
    first = wire[0]["started_at"] - timedelta(seconds=30)
    a = Rollout(seen, first, version="0.169.0")
    a.context("gpt-5-codex")
    for w in wire:  # Codex writes each token_count a moment after the response has streamed
        _token_count(a, WIRE_LAST, w["started_at"] + timedelta(seconds=2))
    a.write(root)
    b = Rollout(alone, first - timedelta(minutes=20))
    b.context("gpt-5-codex")
    b.response(1)
    b.response(2)
    b.write(root)
    p = run_cli("import", "codex", str(root), "--db", str(g.db), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["inserted"] == 5  # imported all the same: the views decide what counts
    return g.db, seen, alone, wire


def test_seen_thread_counts_once(both):
    db, seen, alone, wire = both
    tr = query(db, f"SELECT * FROM events WHERE usage_source = 'transcript' AND session_id = '{seen}'")
    assert len(tr) == 3 and {(r["input_tokens"], r["cache_read_tokens"], r["output_tokens"]) for r in tr} == {
        (w["input_tokens"], w["cache_read_tokens"], w["output_tokens"]) for w in wire}
    assert {r[0] for r in _sql(db, "SELECT id FROM imported_seen_on_wire()")} == {r["id"] for r in tr}

    rows = {r["session_id"]: r for r in query(db, "SELECT * FROM sessions")}
    assert set(rows) == {seen, alone}  # one session each
    assert rows[seen]["requests"] == 3
    assert rows[seen]["input_tokens"] == sum(w["input_tokens"] for w in wire)
    assert rows[seen]["output_tokens"] == sum(w["output_tokens"] for w in wire)
    assert rows[alone]["requests"] == 2

    wire_cost = sum(w["cost_usd"] for w in wire)
    alone_rows = query(db, f"SELECT * FROM events WHERE session_id = '{alone}'")
    alone_cost = sum(r["cost_usd"] for r in alone_rows)
    daily = query(db, "SELECT sum(requests) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o FROM daily")[0]
    assert daily["n"] == 5
    assert daily["i"] == sum(w["input_tokens"] for w in wire) + sum(r["input_tokens"] for r in alone_rows)
    assert daily["o"] == sum(w["output_tokens"] for w in wire) + sum(r["output_tokens"] for r in alone_rows)

    rep = json.loads(run_cli("report", "sessions", "--db", str(db), "--json").stdout)
    by = {r["session_id"]: r for r in rep["rows"]}
    assert by[seen]["requests"] == 3 and by[seen]["transcript_requests"] == 0
    assert by[alone]["requests"] == by[alone]["transcript_requests"] == 2
    totals = json.loads(run_cli("report", "daily", "--db", str(db), "--json").stdout)["totals"]
    assert totals["requests"] == 5 and totals["transcript_requests"] == 2
    assert totals["input_tokens"] == daily["i"] and totals["cost_usd"] == pytest.approx(wire_cost + alone_cost)

    cost = json.loads(run_cli("cost", "--by", "session", "--db", str(db), "--json").stdout)
    text = json.dumps(cost)
    assert seen in text and alone in text
    assert _find_total_cost(cost) == pytest.approx(wire_cost + alone_cost)


def test_window_bounds_the_rule(both):
    """A report's range that starts after the wire rows (and holds the rollout's rows of the same
    responses) counts none of them: the wire rows just before the range still win."""
    db, seen, _, wire = both
    since = wire[-1]["started_at"] + timedelta(milliseconds=1)
    tr = _sql(db, "SELECT count(*) FROM events WHERE usage_source = 'transcript' AND session_id = $s AND started_at >= $t",
              {"s": seen, "t": since})
    assert tr == [(3,)]
    counted = _sql(db, "SELECT count(*) FROM counted_events($t) WHERE session_id = $s", {"s": seen, "t": since})
    assert counted == [(0,)]


def _sql(db, sql: str, params: dict | None = None) -> list[tuple]:
    from llmsm.analytics.store import open_for_query

    con = open_for_query(db, timeout=10)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


def _find_total_cost(cost: dict) -> float:
    for key in ("totals", "total"):
        if isinstance(cost.get(key), dict) and "cost_usd" in cost[key]:
            return cost[key]["cost_usd"]
    return sum(r["cost_usd"] for r in cost["rows"] if r.get("cost_usd") is not None)

