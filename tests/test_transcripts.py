"""`llmsm import claude-code` and `llmsm reconcile` on synthetic transcripts in Claude Code's format."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events
from llmsm.analytics.transcripts_claude import event_id
from tests.conftest import run_cli

KINDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")


def assistant_lines(session: str, n_msg: int, t0: datetime, *, model: str = "claude-sonnet-4-5-20250929",
                    version: str = "2.0.46", blocks: int = 3, seed: int = 0, agent: str | None = None) -> list[dict]:
    """n_msg API responses, each written as `blocks` lines (one per content block), with user turns between."""
    out = []
    for m in range(n_msg):
        ts = t0 + timedelta(seconds=30 * m)
        out.append({"type": "user", "sessionId": session, "uuid": str(uuid.uuid4()), "timestamp": ts.isoformat().replace("+00:00", "Z"),
                    "message": {"role": "user", "content": [{"type": "text", "text": f"please do step {m} with \"usage\" words"}]},
                    "cwd": "/work/proj", "gitBranch": "main", "version": version})
        usage = {"input_tokens": 3 + m + seed, "cache_creation_input_tokens": 100 * m + seed,
                 "cache_read_input_tokens": 1000 + 17 * m, "output_tokens": 40 + m,
                 "cache_creation": {"ephemeral_5m_input_tokens": 100 * m + seed - (m % 2), "ephemeral_1h_input_tokens": m % 2},
                 "service_tier": "standard"}
        for b in range(blocks):
            entry = {
                "parentUuid": None, "isSidechain": agent is not None, "userType": "external", "cwd": "/work/proj",
                "sessionId": session, "version": version, "gitBranch": "main", "type": "assistant",
                "uuid": str(uuid.uuid4()), "requestId": f"req_{session}_{m}",
                "timestamp": (ts + timedelta(seconds=2, milliseconds=b)).isoformat().replace("+00:00", "Z"),
                "message": {"id": f"msg_{session}_{m}", "type": "message", "role": "assistant", "model": model,
                            "content": [{"type": "text", "text": f"block {b}"}], "stop_reason": "tool_use",
                            "usage": usage},
            }
            if agent:
                entry["agentId"] = agent
            out.append(entry)
    return out


def write_jsonl(path: Path, entries: list, extra_raw: list[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for e in entries:
            fh.write((e if isinstance(e, str) else json.dumps(e)) + "\n")
        for raw in extra_raw:
            fh.write(raw + "\n")


T0 = datetime(2026, 9, 1, 9, 0, tzinfo=timezone.utc)
S1, S2, S3 = "11111111-aaaa-4bbb-8ccc-000000000001", "22222222-aaaa-4bbb-8ccc-000000000002", "33333333-aaaa-4bbb-8ccc-000000000003"


@pytest.fixture
def projects(tmp_path) -> Path:
    """~/.claude/projects with: two projects, repeated entries, a resumed session repeating the
    first one's entries, a subagent transcript, a synthetic entry and malformed lines."""
    root = tmp_path / "projects"
    s1 = assistant_lines(S1, 5, T0)
    write_jsonl(root / "-work-proj" / f"{S1}.jsonl",
                [{"type": "summary", "summary": "Fixing tests", "leafUuid": "x"},
                 {"type": "system", "sessionId": S1, "timestamp": "2026-09-01T08:59:00Z", "content": "start"}] + s1,
                extra_raw=['{"type": "assistant", "message": {"id": "msg_trunc", "usage": {"input_tok',  # truncated write
                           "not json at all"])
    # a resumed session: the first 3 responses of S1 copied in (same ids), then 4 new ones
    resumed = [dict(e, sessionId=S2) for e in s1[:12]] + assistant_lines(S2, 4, T0 + timedelta(hours=1), seed=5)
    synthetic = {"type": "assistant", "sessionId": S2, "timestamp": "2026-09-01T10:30:00Z", "requestId": None,
                 "message": {"id": "synthetic-1", "model": "<synthetic>", "usage": {"input_tokens": 0, "output_tokens": 0}},
                 "isApiErrorMessage": True}
    bad_usage = {"type": "assistant", "sessionId": S2, "timestamp": "2026-09-01T10:31:00Z", "requestId": "req_bad",
                 "message": {"id": "msg_bad", "model": "claude-sonnet-4-5", "usage": {"input_tokens": "12", "output_tokens": 3}}}
    write_jsonl(root / "-work-other" / f"{S2}.jsonl", resumed + [synthetic, bad_usage, "[1, 2, 3]"])
    # a subagent (Task) transcript of session S3, with the old 4-digit version and a different model
    write_jsonl(root / "-work-other" / S3 / "subagents" / "agent-abc.jsonl",
                assistant_lines(S3, 3, T0 + timedelta(days=1), model="claude-haiku-4-5-20251001", version="1.0.98",
                                blocks=1, seed=9, agent="abc"))
    return root


def expected(root: Path) -> dict:
    """ccusage's rule, written independently: files by earliest timestamp, first (message id,
    request id) wins, usage summed once per pair."""
    files = []
    for p in root.rglob("*.jsonl"):
        entries, earliest = [], None
        for line in p.read_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            ts = obj.get("timestamp")
            if isinstance(ts, str):
                earliest = min(earliest or ts, ts)
            usage = (obj.get("message") or {}).get("usage") if isinstance(obj.get("message"), dict) else None
            if isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ("input_tokens", "output_tokens")):
                entries.append(obj)
        files.append((earliest or "~", str(p), entries))
    seen, rows = set(), []
    for _, _, entries in sorted(files):
        for e in entries:
            key = (e["message"].get("id"), e.get("requestId"))
            if key[0] and key[1]:
                if key in seen:
                    continue
                seen.add(key)
            if e["message"].get("model") == "<synthetic>":
                continue
            rows.append(e)
    u = [r["message"]["usage"] for r in rows]
    return {
        "requests": len(rows),
        "input_tokens": sum(x["input_tokens"] for x in u),
        "output_tokens": sum(x["output_tokens"] for x in u),
        "cache_write_tokens": sum(x.get("cache_creation_input_tokens", 0) for x in u),
        "cache_read_tokens": sum(x.get("cache_read_input_tokens", 0) for x in u),
        "sessions": {r["sessionId"] for r in rows},
        "pairs": {(r["message"]["id"], r["requestId"]): r["sessionId"] for r in rows},
    }


def query(db: Path, sql: str) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def test_import_dedups_counts_malformed_and_is_idempotent(projects, tmp_path):
    db = tmp_path / "t.duckdb"
    want = expected(projects)
    p = run_cli("import", "claude-code", str(projects), "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    first = json.loads(p.stdout)
    assert first["files"] == 3
    assert first["events"] == first["inserted"] == want["requests"] == 5 + 4 + 3
    assert first["synthetic"] == 1
    assert first["malformed"] == 4  # truncated line, "not json at all", string token count, a JSON array
    # 5 msgs x 3 blocks in S1, 3 of them repeated 3 more times in S2, 4 x 3 new in S2: 15 + 9 + 12 lines
    assert first["duplicates"] == (15 - 5) + 9 + (12 - 4)

    rows = query(db, "SELECT * FROM events ORDER BY started_at")
    assert len(rows) == want["requests"]
    for k in KINDS:
        assert sum(r[k] for r in rows) == want[k], k
    assert {r["usage_source"] for r in rows} == {"transcript"}
    assert {r["client"] for r in rows} == {"claude-code"}
    assert {r["provider"] for r in rows} == {"anthropic"} and {r["api"] for r in rows} == {"messages"}
    assert {r["session_id"] for r in rows} == want["sessions"] == {S1, S2, S3}
    for r in rows:
        # the first occurrence wins: the copied S1 responses stay in S1
        assert want["pairs"][(r["message_id"], r["request_id"])] == r["session_id"]
        assert r["id"] == event_id(r["message_id"], r["request_id"], "")
    by_session = {s: [r for r in rows if r["session_id"] == s] for s in (S1, S2, S3)}
    assert {r["client_version"] for r in by_session[S3]} == {"1.0.98"}
    assert {r["agent_id"] for r in by_session[S3]} == {"abc"}
    assert {r["model"] for r in by_session[S3]} == {"claude-haiku-4-5-20251001"}
    assert sum(r["cache_write_1h_tokens"] for r in by_session[S1]) == sum(m % 2 for m in range(5))
    assert rows[0]["started_at"] == T0 + timedelta(seconds=2)  # the first block's timestamp

    # the second import opens no file: nothing changed since the first
    p = run_cli("import", "claude-code", str(projects), "--db", str(db), "--json")
    again = json.loads(p.stdout)
    assert p.returncode == 0 and again["inserted"] == 0 and again["events"] == 0
    assert again["files"] == again["files_unchanged"] == 3 and again["files_read"] == 0 and again["bytes_read"] == 0
    # --full reads everything again and still inserts nothing
    p = run_cli("import", "claude-code", str(projects), "--db", str(db), "--json", "--full")
    again = json.loads(p.stdout)
    assert p.returncode == 0 and again["inserted"] == 0 and again["already_present"] == want["requests"]
    assert again["files_read"] == 3 and again["duplicates"] == first["duplicates"]
    assert query(db, "SELECT count(*) AS n FROM events")[0]["n"] == want["requests"]

    # the report shows them as transcript requests, and matches the independent sums
    p = run_cli("report", "daily", "--db", str(db), "--json", "--utc")
    rep = json.loads(p.stdout)
    assert rep["totals"]["requests"] == rep["totals"]["transcript_requests"] == want["requests"]
    for k in KINDS:
        assert rep["totals"][k] == want[k]


def test_import_human_output_and_default_path(projects, tmp_path):
    # default: ~/.claude/projects (HOME points at a home that holds the fixture)
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    os.symlink(projects, home / ".claude" / "projects")
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1"}
    env.pop("CLAUDE_CONFIG_DIR", None)
    db = tmp_path / "d.duckdb"
    p = run_cli("import", "claude-code", "--db", str(db), env=env)
    assert p.returncode == 0, p.stderr
    assert "imported 12 new requests from 3 transcript files" in p.stdout
    assert "4 malformed lines skipped" in p.stdout
    assert "\x1b[" not in p.stderr + p.stdout  # no progress bar or colour off a terminal


def test_import_bad_path_is_one_line(tmp_path):
    p = run_cli("import", "claude-code", str(tmp_path / "nowhere"), "--db", str(tmp_path / "x.duckdb"))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [f"error: no Claude Code transcripts at {tmp_path / 'nowhere'} (no such file or directory)"]


def test_reconcile_and_no_double_counting(projects, tmp_path):
    db = tmp_path / "r.duckdb"
    assert run_cli("import", "claude-code", str(projects), "--db", str(db)).returncode == 0
    tr = query(db, f"SELECT * FROM events WHERE session_id = '{S2}' ORDER BY started_at")
    # the wire saw S2's four own responses, with more input and thinking than the transcript
    # recorded, plus one request the transcript never wrote (a title generation), plus a preflight
    wire = []
    for r in tr:
        wire.append(ExchangeEvent(
            started_at=r["started_at"], session_id=S2, client="claude-code", provider="anthropic", api="messages",
            model=r["model"], message_id=r["message_id"], request_id=r["request_id"], usage_source="reported",
            input_tokens=r["input_tokens"] + 10, output_tokens=r["output_tokens"] + 5, reasoning_tokens=5,
            cache_read_tokens=r["cache_read_tokens"], cache_write_tokens=r["cache_write_tokens"], cost_usd=0.5,
        ))
    wire.append(ExchangeEvent(session_id=S2, client="claude-code", provider="anthropic", api="messages",
                              model="claude-haiku-4-5", message_id="msg_title", usage_source="reported",
                              started_at=T0 + timedelta(hours=2), input_tokens=300, output_tokens=20))
    wire.append(ExchangeEvent(session_id=S2, api="other", started_at=T0 + timedelta(hours=2), usage_source="none"))
    assert insert_events(db, wire) == len(wire)
    n = len(tr)

    p = run_cli("reconcile", "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["schema"] == "llmsm.reconcile/1"
    [s] = data["sessions"]  # only S2 is seen both ways
    assert s["session_id"] == S2
    assert s["wire_requests"] == n + 1 and s["transcript_requests"] == n and s["matched_requests"] == n
    assert s["gap"] == {"input_tokens": 10 * n + 300, "output_tokens": 5 * n + 20, "cache_write_tokens": 0,
                        "cache_read_tokens": 0, "reasoning_tokens": 5 * n}
    assert s["matched_gap"] == {"input_tokens": 10 * n, "output_tokens": 5 * n, "cache_write_tokens": 0,
                                "cache_read_tokens": 0, "reasoning_tokens": 5 * n}
    assert s["wire"]["input_tokens"] - s["transcript"]["input_tokens"] == s["gap"]["input_tokens"]

    # one session by id; a session not seen both ways is an error
    p = run_cli("reconcile", S2, "--db", str(db), "--json")
    assert json.loads(p.stdout)["sessions"][0]["session_id"] == S2
    p = run_cli("reconcile", S1, "--db", str(db))
    assert p.returncode != 0 and p.stderr.startswith("error: session") and "Traceback" not in p.stderr
    p = run_cli("reconcile", "--db", str(db), env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"})
    assert p.returncode == 0 and S2[:14] in p.stdout and max(map(len, p.stdout.splitlines())) <= 80

    # reports: the wire wins for S2's messages, S1 and S3 (transcript only) still count
    rep = json.loads(run_cli("report", "sessions", "--db", str(db), "--json").stdout)
    rows = {r["session_id"]: r for r in rep["rows"]}
    assert rows[S2]["requests"] == n + 1 and rows[S2]["transcript_requests"] == 0
    assert rows[S2]["input_tokens"] == sum(e.input_tokens for e in wire if e.api != "other")
    assert rows[S1]["transcript_requests"] == rows[S1]["requests"] == 5
    assert rows[S3]["requests"] == 3
    total = query(db, "SELECT sum(requests) AS n, sum(input_tokens) AS i FROM daily")[0]
    assert total["n"] == rep["totals"]["requests"] == 5 + 3 + n + 1
    assert total["i"] == rep["totals"]["input_tokens"]


def _import(root: Path, db: Path, *extra: str) -> dict:
    p = run_cli("import", "claude-code", str(root), "--db", str(db), "--json", *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _rows(db: Path) -> set[tuple]:
    return {tuple(r.values()) for r in query(db, "SELECT id, session_id, started_at, input_tokens, output_tokens, "
                                                 "cache_write_tokens, cache_read_tokens, cost_usd FROM events")}


def _append(path: Path, entries: list, raw: bytes = b"") -> int:
    data = b"".join((json.dumps(e) + "\n").encode() for e in entries) + raw
    with open(path, "ab") as fh:
        fh.write(data)
    return len(data)


def test_incremental_import_reads_only_appended_bytes(projects, tmp_path):
    db = tmp_path / "inc.duckdb"
    first = _import(projects, db)
    f1 = projects / "-work-proj" / f"{S1}.jsonl"
    # two new responses of S1; the second one's three content blocks are split by the next import
    new = assistant_lines(S1, 7, T0 + timedelta(hours=3))[5 * 4:]  # responses 5 and 6 (user line + 3 blocks each)
    assert len(new) == 8 and new[4]["type"] == "user"
    grown = _append(f1, new[:6])  # response 5 whole, response 6's user line and first block
    step = _import(projects, db)
    assert step["files_read"] == 1 and step["files_unchanged"] == 2 and step["files_reread"] == 0
    assert step["bytes_read"] == grown  # only the appended bytes
    assert step["inserted"] == step["events"] == 2 and step["duplicates"] == 2  # blocks 2-3 of response 5

    # the rest of response 6, and half a line still being written
    partial = json.dumps(assistant_lines(S1, 8, T0 + timedelta(hours=4))[-1]).encode()
    grown = _append(f1, new[6:], partial[: len(partial) // 2])
    step = _import(projects, db)
    # its blocks are known from the carried ids: repeats, not "imported before"
    assert step["inserted"] == step["events"] == 0 and step["duplicates"] == 2
    assert step["malformed"] == 0  # the unfinished line is left for later
    assert step["bytes_read"] == grown
    state = query(db, f"SELECT * FROM import_files WHERE path = '{f1.resolve()}'")[0]
    assert state["source"] == "claude-code" and state["read_bytes"] == f1.stat().st_size - len(partial) // 2
    assert state["size"] == f1.stat().st_size and json.loads(state["carry"])["pairs"][-1] == [f"msg_{S1}_6", f"req_{S1}_6"]

    with open(f1, "ab") as fh:  # the line is finished
        fh.write(partial[len(partial) // 2 :] + b"\n")
    step = _import(projects, db)
    assert step["inserted"] == 1 and step["malformed"] == 0
    assert _import(projects, db)["files_read"] == 0

    # the same rows as one import of the final files
    fresh = tmp_path / "fresh.duckdb"
    whole = _import(projects, fresh)
    assert whole["events"] == first["events"] + 3
    assert _rows(db) == _rows(fresh)
    rep = json.loads(run_cli("report", "daily", "--db", str(db), "--json", "--utc").stdout)["totals"]
    want = expected(projects)
    for k in KINDS:
        assert rep[k] == want[k], k


def test_shrunk_or_rewritten_file_is_read_again(projects, tmp_path):
    db = tmp_path / "rw.duckdb"
    _import(projects, db)
    f2 = projects / "-work-other" / f"{S2}.jsonl"
    lines = f2.read_bytes().splitlines(keepends=True)
    f2.write_bytes(b"".join(lines[:-5]))  # shrunk: read again from the start, nothing new
    step = _import(projects, db)
    assert step["files_read"] == step["files_reread"] == 1 and step["inserted"] == 0
    assert step["bytes_read"] == f2.stat().st_size

    # the same size, but the start rewritten (another session's content in place): read again
    f3 = next((projects / "-work-other" / S3).rglob("*.jsonl"))
    before = f3.read_bytes()
    after = before.replace(S3.encode(), S3[:-1].encode() + b"9", 1)
    assert len(after) == len(before) and after != before
    f3.write_bytes(after)
    os.utime(f3, ns=(f3.stat().st_atime_ns, f3.stat().st_mtime_ns + 1_000_000_000))
    step = _import(projects, db)
    assert step["files_reread"] == 1 and step["bytes_read"] == len(after)

    # touched only: opened, nothing read, the new time remembered
    os.utime(f2, ns=(f2.stat().st_atime_ns, f2.stat().st_mtime_ns + 1_000_000_000))
    step = _import(projects, db)
    assert step["files_read"] == 1 and step["files_reread"] == 0 and step["bytes_read"] == 0
    assert _import(projects, db)["files_read"] == 0


def test_worker_processes_read_the_same_rows(projects, tmp_path, monkeypatch):
    """Large imports are read by worker processes in batches: the same rows and counts as in one
    process, whichever batch finishes first."""
    from llmsm.analytics import transcripts
    from llmsm.analytics.transcripts_claude import SOURCE, read_claude_code

    one = transcripts.run_import(tmp_path / "one.duckdb", SOURCE, transcripts.find_files(projects, "x"), read_claude_code, workers=1)
    monkeypatch.setattr(transcripts, "BATCH_BYTES", 1)  # one batch per file
    two = transcripts.run_import(tmp_path / "two.duckdb", SOURCE, transcripts.find_files(projects, "x"), read_claude_code, workers=2)
    assert two.as_dict() == one.as_dict() and one.events == 12 and one.files_read == 3
    assert _rows(tmp_path / "two.duckdb") == _rows(tmp_path / "one.duckdb")
    assert not list(tmp_path.glob(".llmsm-import-*"))  # the spools are gone


def test_complete_lines_stop_at_the_last_whole_line(tmp_path):
    """The offset remembered for a file is the end of its last complete line; a last line without
    its newline counts only if it is already a whole JSON object."""
    from llmsm.analytics.transcript_files import CompleteLines

    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\r\n{"c": ')
    with open(path, "rb") as fh:
        lines = CompleteLines(fh, 0)
        assert list(lines) == [b'{"a": 1}', b"", b'{"b": 2}\r'] and lines.end == len(b'{"a": 1}\n\n{"b": 2}\r\n')
    end = lines.end
    path.write_bytes(path.read_bytes() + b"3}")
    with open(path, "rb") as fh:
        lines = CompleteLines(fh, end)
        assert list(lines) == [b'{"c": 3}'] and lines.end == path.stat().st_size
