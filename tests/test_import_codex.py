"""`llmsm import codex` on synthetic rollouts in Codex's format, and the rule by which the wire
supersedes a Codex transcript row (checked on a real DuckDB file)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events
from llmsm.analytics.migrations import views_sql
from llmsm.analytics.transcripts_codex import CODEX_WIRE_AFTER_S, CODEX_WIRE_BEFORE_S
from tests.conftest import run_cli
from tests.test_transcripts import query

KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")
T0 = datetime(2026, 9, 2, 8, 0, tzinfo=timezone.utc)
A, B = "0199a1b2-c3d4-7e5f-8a9b-000000000001", "0199a1b2-c3d4-7e5f-8a9b-000000000002"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Rollout:
    """Lines of one rollout, written the way Codex writes them."""

    def __init__(self, thread: str, t0: datetime, version: str = "0.46.0") -> None:
        self.thread, self.t, self.n = thread, t0, 0
        self.totals = dict.fromkeys(KEYS, 0)
        self.last: dict | None = None
        self.lines: list = [
            {"timestamp": iso(t0), "type": "session_meta", "payload": {
                "id": thread, "timestamp": iso(t0), "cwd": "/work/proj", "originator": "codex_cli_rs",
                "cli_version": version, "instructions": None, "git": {"branch": "main", "commit_hash": "ab" * 20}}},
            {"timestamp": iso(t0), "type": "event_msg", "payload": {"type": "token_count", "info": None,
                                                                   "rate_limits": {"primary": {"used_percent": 1.0}}}},
        ]

    def context(self, model: str) -> None:
        self.lines.append({"timestamp": iso(self.t), "type": "turn_context", "payload": {
            "cwd": "/work/proj", "approval_policy": "on-request", "model": model, "effort": "medium"}})

    def response(self, seed: int, repeat: bool = False) -> dict:
        self.t += timedelta(seconds=20)
        cached = 1000 * self.n
        last = {"input_tokens": cached + 300 + seed, "cached_input_tokens": cached, "output_tokens": 50 + seed,
                "reasoning_output_tokens": 10 + seed % 7, "total_tokens": 0}
        last["total_tokens"] = last["input_tokens"] + last["output_tokens"]
        for k in KEYS:
            self.totals[k] += last[k]
        self.lines.append({"timestamp": iso(self.t), "type": "response_item", "payload": {
            "type": "function_call_output", "call_id": f"call_{self.n}", "output": "token_count usage " * 20}})
        event = {"timestamp": iso(self.t), "type": "event_msg", "payload": {"type": "token_count", "info": {
            "total_token_usage": dict(self.totals), "last_token_usage": last, "model_context_window": 272000},
            "rate_limits": {"primary": {"used_percent": 2.0}}}}
        self.lines.append(event)
        if repeat:  # the same token_count again (a rate-limit update)
            self.lines.append(json.loads(json.dumps(event)))
        self.n += 1
        self.last = last
        return last

    def restart(self) -> None:
        """A resumed thread: the running totals start again from zero."""
        self.totals = dict.fromkeys(KEYS, 0)

    def write(self, root: Path) -> Path:
        d = root / f"{self.lines[0]['timestamp'][:4]}" / "09" / "02"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"rollout-2026-09-02T08-00-00-{self.thread}.jsonl"
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in self.lines))
        return path


def expected(root: Path) -> dict:
    """@ccusage/codex's rule, written independently: one response per token_count whose
    total_token_usage differs from the previous one, its last_token_usage counted."""
    out = {"requests": 0, "input": 0, "cached": 0, "output": 0, "reasoning": 0, "models": {}}
    for p in root.rglob("*.jsonl"):
        prev, model = None, None
        for line in p.read_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            payload = obj.get("payload") or {}
            if obj.get("type") == "turn_context":
                model = payload.get("model")
            if obj.get("type") != "event_msg" or payload.get("type") != "token_count" or not payload.get("info"):
                continue
            total, last = payload["info"]["total_token_usage"], payload["info"]["last_token_usage"]
            if not all(isinstance(total.get(k), int) for k in KEYS) or total == prev:
                continue
            prev = total
            out["requests"] += 1
            out["input"] += last["input_tokens"] - last["cached_input_tokens"]
            out["cached"] += last["cached_input_tokens"]
            out["output"] += last["output_tokens"]
            out["reasoning"] += last["reasoning_output_tokens"]
            out["models"][model] = out["models"].get(model, 0) + 1
    return out


@pytest.fixture
def sessions(tmp_path) -> Path:
    root = tmp_path / "codex" / "sessions"
    a = Rollout(A, T0)
    a.context("gpt-5-codex")
    for i in range(4):
        a.response(i, repeat=i % 2 == 0)
    a.context("gpt-5")
    a.response(7)
    bad = json.loads(json.dumps(a.lines[-1]))
    bad["payload"]["info"]["total_token_usage"]["output_tokens"] = "12"  # unusable
    a.lines += [bad, "not json", "[1]"]
    a.restart()  # resumed: totals from zero again
    a.response(8)
    a.write(root)
    b = Rollout(B, T0 + timedelta(days=1), version="0.50.1")
    b.context("gpt-5-codex")
    for i in range(3):
        b.response(20 + i)
    b.write(root)
    return root


def import_codex(root: Path, db: Path, *extra: str, env: dict | None = None) -> dict:
    p = run_cli("import", "codex", str(root), "--db", str(db), "--json", *extra, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_import_codex_per_response_idempotent(sessions, tmp_path):
    db = tmp_path / "c.duckdb"
    want = expected(sessions)
    first = import_codex(sessions, db)
    assert first["files"] == 2 and first["events"] == first["inserted"] == want["requests"] == 6 + 3
    assert first["duplicates"] == 2  # the repeated token_counts
    assert first["malformed"] == 3  # the string count, "not json", a JSON array
    assert first["priced"] == 9

    rows = query(db, "SELECT * FROM events ORDER BY started_at")
    assert {(r["client"], r["provider"], r["api"], r["usage_source"], r["session_source"]) for r in rows} == {
        ("codex", "openai", "responses", "transcript", "codex_rollout")}
    assert sum(r["input_tokens"] for r in rows) == want["input"]
    assert sum(r["cache_read_tokens"] for r in rows) == want["cached"]
    assert sum(r["output_tokens"] for r in rows) == want["output"]
    assert sum(r["reasoning_tokens"] for r in rows) == want["reasoning"]
    assert {r["cache_write_tokens"] for r in rows} == {0}
    assert {r["session_id"] for r in rows} == {A, B}
    assert [r["model"] for r in rows if r["session_id"] == A] == ["gpt-5-codex"] * 4 + ["gpt-5"] * 2
    assert {r["client_version"] for r in rows if r["session_id"] == B} == {"0.50.1"}
    assert all(r["cost_usd"] and r["cost_usd"] > 0 for r in rows)
    assert rows[0]["started_at"] == T0 + timedelta(seconds=20)  # the token_count's time
    assert json.loads(rows[0]["usage_raw"])["last_token_usage"]["cached_input_tokens"] == 0

    again = import_codex(sessions, db)
    assert again["files_unchanged"] == 2 and again["inserted"] == 0
    again = import_codex(sessions, db, "--full")
    assert again["inserted"] == 0 and again["already_present"] == 9 and again["duplicates"] == 2

    rep = json.loads(run_cli("report", "daily", "--db", str(db), "--json", "--utc").stdout)["totals"]
    assert rep["requests"] == rep["transcript_requests"] == 9
    assert rep["input_tokens"] == want["input"] and rep["cache_read_tokens"] == want["cached"]
    assert rep["output_tokens"] == want["output"] and rep["reasoning_tokens"] == want["reasoning"]
    assert rep["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))


def test_import_codex_incremental(sessions, tmp_path):
    db = tmp_path / "i.duckdb"
    import_codex(sessions, db)
    path = next(sessions.rglob(f"*{B}.jsonl"))
    more = Rollout(B, T0 + timedelta(days=1), version="0.50.1")
    more.context("gpt-5-codex")
    for i in range(3):  # the same history, to continue its totals
        more.response(20 + i)
    repeat = more.lines[-1]  # the last token_count again, now after an append
    more.lines = [repeat]
    more.context("gpt-5.1-codex")
    more.response(30)
    more.response(31)
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(x) + "\n" for x in more.lines))
    step = import_codex(sessions, db)
    assert step["files_read"] == 1 and step["files_unchanged"] == 1
    assert step["inserted"] == step["events"] == 2 and step["duplicates"] == 1  # the carried totals know the repeat
    assert {r["model"] for r in query(db, f"SELECT model FROM events WHERE session_id = '{B}' ORDER BY started_at DESC LIMIT 2")} == {"gpt-5.1-codex"}

    fresh = tmp_path / "fresh.duckdb"
    import_codex(sessions, fresh)
    cols = "id, session_id, started_at, model, input_tokens, cache_read_tokens, output_tokens, reasoning_tokens, cost_usd"
    assert query(db, f"SELECT {cols} FROM events ORDER BY id") == query(fresh, f"SELECT {cols} FROM events ORDER BY id")
    assert expected(sessions)["requests"] == 11


def test_import_codex_default_path_and_errors(sessions, tmp_path):
    db = tmp_path / "d.duckdb"
    env = {**os.environ, "CODEX_HOME": str(sessions.parent), "NO_COLOR": "1"}
    p = run_cli("import", "codex", "--db", str(db), env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("imported 9 new requests from 2 rollout files in ")
    assert "3 malformed lines skipped" in p.stdout and "\x1b[" not in p.stdout + p.stderr
    p = run_cli("import", "codex", "--db", str(db), env=env)
    assert p.stdout.startswith("nothing new: 2 rollout files in ")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("CODEX_HOME", None)
    p = run_cli("import", "codex", "--db", str(db), env=env)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [f"error: no Codex rollouts at {home / '.codex' / 'sessions'} (no such file or directory)"]


def _wire(started_at: datetime, usage: dict, **kw) -> ExchangeEvent:
    fields = dict(started_at=started_at, client="codex", provider="openai", api="responses", usage_source="reported",
                  model="gpt-5-codex", input_tokens=usage["input_tokens"] - usage["cached_input_tokens"],
                  cache_read_tokens=usage["cached_input_tokens"], cache_write_tokens=0,
                  output_tokens=usage["output_tokens"], reasoning_tokens=usage["reasoning_output_tokens"],
                  session_id=A, session_source="codex_header", message_id=f"resp_{started_at.timestamp()}")
    fields.update(kw)
    return ExchangeEvent(**fields)


def test_wire_supersedes_codex_transcript_rows(tmp_path):
    """The rule in views.sql (imported_seen_on_wire), on a real DuckDB file: which Codex transcript
    rows a wire row repeats, and the totals of counted_events."""
    sql = views_sql()
    assert f"INTERVAL {CODEX_WIRE_BEFORE_S} SECOND" in sql and f"INTERVAL {CODEX_WIRE_AFTER_S} SECOND" in sql
    root = tmp_path / "sessions"
    a = Rollout(A, T0)
    a.context("gpt-5-codex")
    usages = [a.response(i) for i in range(4)]
    a.write(root)
    db = tmp_path / "w.duckdb"
    import_codex(root, db)
    tr = query(db, "SELECT id, started_at FROM events ORDER BY started_at")
    # the gateway saw response 0 (as a labelled session: another session id) and response 1, each
    # starting a few seconds before Codex wrote its token_count; response 2's tokens come back
    # two hours earlier (another response, same numbers) and response 3 differs by one token
    wire = [
        _wire(tr[0]["started_at"] - timedelta(seconds=8), usages[0], session_id="my-label", session_source="label_header"),
        _wire(tr[1]["started_at"] - timedelta(seconds=95), usages[1]),
        _wire(tr[2]["started_at"] - timedelta(seconds=CODEX_WIRE_BEFORE_S + 60), usages[2]),
        _wire(tr[3]["started_at"] - timedelta(seconds=3), dict(usages[3], output_tokens=usages[3]["output_tokens"] + 1)),
        ExchangeEvent(started_at=tr[3]["started_at"], api="other", usage_source="none", client="codex"),
    ]
    # a Claude Code transcript row with the same numbers as response 3 is not Codex's to supersede
    claude = ExchangeEvent(id="claude-row", started_at=tr[3]["started_at"], client="claude-code", provider="anthropic",
                           api="messages", usage_source="transcript", input_tokens=usages[1]["input_tokens"] - usages[1]["cached_input_tokens"],
                           cache_read_tokens=usages[1]["cached_input_tokens"], output_tokens=usages[1]["output_tokens"])
    assert insert_events(db, [*wire, claude]) == 6

    con = duckdb.connect(str(db), read_only=True)
    try:
        superseded = {r[0] for r in con.execute("SELECT id FROM imported_seen_on_wire()").fetchall()}
        assert superseded == {tr[0]["id"], tr[1]["id"]}
        # bounded by a report's time range: the wire rows just outside it still count
        since, until = tr[0]["started_at"], tr[1]["started_at"] + timedelta(seconds=1)
        narrowed = {r[0] for r in con.execute("SELECT id FROM imported_seen_on_wire($s, $u)", {"s": since, "u": until}).fetchall()}
        assert narrowed == superseded
        assert con.execute("SELECT id FROM imported_seen_on_wire($s, $u)", {"s": tr[1]["started_at"], "u": until}).fetchall() == [(tr[1]["id"],)]
        # the counting rule: wire rows, plus transcript rows the wire did not see
        counted = con.execute("SELECT count(*), sum(input_tokens + cache_read_tokens + output_tokens) FROM counted_events()").fetchone()
    finally:
        con.close()
    tokens = [u["input_tokens"] + u["output_tokens"] for u in usages]  # input includes cached
    claude_tokens = tokens[1]
    assert counted == (4 + 2 + 1, tokens[0] + tokens[1] + tokens[2] + (tokens[3] + 1) + tokens[2] + tokens[3] + claude_tokens)


def test_reconcile_lists_codex_threads(tmp_path):
    """A Codex thread the gateway recorded under its thread id is reconciled like a Claude Code
    session: same session_id (no message ids, so no matched pairs)."""
    root = tmp_path / "sessions"
    a = Rollout(A, T0)
    a.context("gpt-5-codex")
    usages = [a.response(i) for i in range(3)]
    a.write(root)
    db = tmp_path / "r.duckdb"
    import_codex(root, db)
    tr = query(db, "SELECT started_at FROM events ORDER BY started_at")
    wire = [_wire(tr[i]["started_at"] - timedelta(seconds=5), dict(u, input_tokens=u["input_tokens"] + 4))
            for i, u in enumerate(usages)]
    assert insert_events(db, wire) == 3
    p = run_cli("reconcile", A, "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    [s] = json.loads(p.stdout)["sessions"]
    assert s["wire_requests"] == s["transcript_requests"] == 3 and s["matched_requests"] == 0
    assert s["gap"]["input_tokens"] == 12 and s["gap"]["output_tokens"] == 0
