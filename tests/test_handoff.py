"""`llmsm handoff`: the digest model, the brief, --json, --max-tokens, transcripts, --start and
--summarize, on real DuckDB files (events written by store.insert_events), real processes, and
for --summarize a real gateway in front of the fake upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmsm.analytics import handoff as ho
from llmsm.analytics.digest import (
    ASK_CHARS, COMMAND_CHARS, MAX_ASKS, MAX_COMMANDS, MAX_FILES, TEXT_CHARS, DigestDelta, SessionDigest, load_digest,
)
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import connect, insert_events, insert_run, open_for_query
from llmsm.analytics.tokens import encoding_for_model
from tests.conftest import REPO, TEST_KEYS, Gateway, isolated_env

UTC = timezone.utc
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
SID = "5f1c2a9e-1111-4c3b-9d2e-aaaaaaaaaaaa"  # a Claude Code session id (its transcript's file name)
OTHER = "5f1c2a9e-2222-4c3b-9d2e-bbbbbbbbbbbb"  # shares the prefix 5f1c2a9e
MODEL = "claude-sonnet-4-5"
PLANTED = "sk-ant-api03-PLANTEDplanted0123456789PLANTEDplanted0123456789-XYZ"  # must never reach a brief
GOAL = "Make the CSV importer accept semicolon-separated files"


def run_cli(*args: str, env: dict, timeout: float = 90, cwd: Path | str = REPO) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", *args], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error:"), p.stderr
    return lines[0]


def event(i: int, sid: str = SID, digest: dict | None = None, **kw) -> ExchangeEvent:
    fields = dict(
        id=f"{sid[:8]}-{sid[9:13]}-{i:05d}", session_id=sid, started_at=T0 + timedelta(seconds=10 * i),
        client="claude-code", client_version="2.0.46", provider="anthropic", api="messages", method="POST",
        path="/v1/messages", model=MODEL, requested_model=MODEL, status_code=200, outcome="ok",
        input_tokens=10, output_tokens=200, cache_read_tokens=50_000 + 1000 * i, cache_write_tokens=500,
        usage_source="reported", cost_usd=0.01, digest=digest,
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


def session_events(project: Path) -> list[ExchangeEvent]:
    """A Claude Code session as the gateway would record it: a delta per request."""
    d = lambda **items: DigestDelta.from_items(**items).to_json()  # noqa: E731
    evs = [
        event(0, digest=d(project={"cwd": "/old/place", "git": True, "branch": "old"},
                          goal=f"<system-reminder>ignore me</system-reminder>{GOAL}", asks=[GOAL])),
        event(1, digest=d(files=[("README.md", "read"), ("src/importer.py", "read")],
                          commands=[("git status", False)])),
        # written raw, not through DigestDelta: the read side must scrub what some other writer left
        event(2, digest={**d(project={"cwd": str(project), "git": True, "branch": "csv-semicolons"},
                             files=[("src/importer.py", "edit"), ("tests/test_importer.py", "write")],
                             commands=[("pytest -q tests/test_importer.py", True)],
                             todos=[("detect the delimiter", "in_progress"), ("update the docs", "pending"),
                                    ("read the importer", "completed")]),
                         "asks": [f"also, my key is {PLANTED}, use it for the upload test"]}),
        event(3, status_code=529, outcome="http_error", error_type="overloaded_error", error_message="Overloaded",
              input_tokens=None, output_tokens=None, cache_read_tokens=None, cache_write_tokens=None, cost_usd=None),
        event(4, api="other", method="HEAD", path="/", status_code=404, outcome="http_error", error_type="not_found",
              provider=None, input_tokens=None, output_tokens=None, cache_read_tokens=None, cache_write_tokens=None),
        event(5, digest={**d(asks=["run the whole suite", "and the linter"], files=[("docs/usage.md", "read")]),
                         "commands": [{"command": f"curl -H 'Authorization: Bearer {PLANTED}' https://example.invalid",
                                       "failed": None}, {"command": "pytest -q", "failed": False}],
                         "text": f"The importer now sniffs the delimiter. The key {PLANTED} was not needed."}),
        # a subagent's smaller context comes last: the fill is the main thread's
        event(6, agent_id="agent-1", cache_read_tokens=1000, digest=None),
    ]
    return evs


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    e = isolated_env(tmp_path_factory.mktemp("handoff-env"))
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "CLAUDE_CONFIG_DIR",
                 "CODEX_HOME", "LLMSM_AUTH_TOKEN"):
        e.pop(name, None)
    return e


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("handoff-db")
    project = tmp / "project"
    project.mkdir()
    path = tmp / "llmsm.duckdb"
    evs = session_events(project)
    evs += [event(i, sid=OTHER, digest=None, started_at=T0 - timedelta(hours=1) + timedelta(seconds=i)) for i in range(2)]
    assert insert_events(path, evs) == len(evs)
    insert_run(path, session_id=SID, command="claude", cwd=str(project), label="csv-work", git_branch="csv-semicolons",
               started_at=T0 - timedelta(seconds=1))
    return path, project


def load(path: Path, sid: str = SID, **kw) -> ho.Handoff:
    con = open_for_query(path)
    try:
        return ho.load_handoff(con, sid, **kw)
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# The digest: bounds of a delta, merge rules of a session
# --------------------------------------------------------------------------------------------


def test_delta_bounds_and_cleaning() -> None:
    assert DigestDelta().to_json() is None  # nothing seen: NULL in events.digest
    delta = DigestDelta()
    for i in range(MAX_ASKS + 3):
        delta.add_ask(f"ask {i} " + "x" * 600)
    for i in range(MAX_FILES + 10):
        delta.add_file(f"src/f{i}.py", "read")
    delta.add_file("src/f0.py", "edit")  # seen again: its newest action, moved to the end
    delta.add_file("src/nope.py", "delete")  # not an action of the contract: ignored
    for i in range(MAX_COMMANDS + 5):
        delta.add_command(f"make step{i} " + "y" * 400, failed=i % 2 == 0)
    delta.add_command("true", failed="yes")  # not a bool: result unknown
    delta.set_text("z" * 5000)
    delta.set_goal("<system-reminder>context from the client</system-reminder>  Fix it  ")
    out = delta.to_json()
    assert out["v"] == 1 and out["goal"] == "Fix it"
    assert [a.split()[1] for a in out["asks"]] == [str(i) for i in range(3, MAX_ASKS + 3)]
    assert all(len(a) <= ASK_CHARS and a.endswith("…") for a in out["asks"])
    assert len(out["files"]) == MAX_FILES and out["files"][-1] == {"path": "src/f0.py", "action": "edit"}
    assert "src/nope.py" not in {f["path"] for f in out["files"]}
    assert len(out["commands"]) == MAX_COMMANDS and out["commands"][-1] == {"command": "true", "failed": None}
    assert all(len(c["command"]) <= COMMAND_CHARS for c in out["commands"])
    assert len(out["text"]) == TEXT_CHARS and out["text"].endswith("…")
    assert "todos" not in out and "project" not in out


def test_delta_scrubs_before_it_cuts() -> None:
    # a key that straddles the 500-character bound is recognised whole, so no prefix of it survives
    ask = "a" * (ASK_CHARS - 20) + " " + TEST_KEYS["anthropic"]
    out = DigestDelta.from_items(asks=[ask], text=f"token {PLANTED}", commands=[{"command": f"export K={PLANTED}"}],
                                 files=[{"path": f"/tmp/{PLANTED}.txt", "action": "read"}]).to_json()
    text = json.dumps(out)
    assert "sk-ant" not in text and "PLANTED" not in text and "[REDACTED]" in text
    assert out["commands"] == [{"command": "export K=[REDACTED]", "failed": None}]
    todos = DigestDelta.from_items(todos=[]).to_json()
    assert todos == {"v": 1, "todos": []}  # an empty latest list is news too


def test_load_digest_merges_by_the_contract(db) -> None:
    path, project = db
    con = open_for_query(path)
    try:
        d = load_digest(con, SID)
    finally:
        con.close()
    assert d.deltas == 4
    assert d.project == {"cwd": str(project), "git": True, "branch": "csv-semicolons"}  # the latest seen
    assert d.goal == GOAL  # the first seen, reminders out
    assert list(d.asks)[-3:] == ["also, my key is [REDACTED], use it for the upload test", "run the whole suite", "and the linter"]
    files = {f["path"]: f for f in d.files.values()}
    assert files["src/importer.py"]["action"] == "edit" and files["src/importer.py"]["actions"] == ["read", "edit"]
    assert files["src/importer.py"]["last_seen"] == T0 + timedelta(seconds=20)
    assert list(d.files)[-1] == "docs/usage.md"  # newest last
    assert [c["failed"] for c in d.commands] == [False, True, None, False]
    assert [t["status"] for t in d.todos] == ["in_progress", "pending", "completed"]
    assert d.text.startswith("The importer now sniffs") and PLANTED not in d.text
    # errors: the session's failed API calls, not the 404 of a HEAD request llmsm answered itself
    assert [(e["status_code"], e["error_type"]) for e in d.errors] == [(529, "overloaded_error")]


def test_merge_keeps_the_newest_and_ignores_junk(tmp_path) -> None:
    path = tmp_path / "x.duckdb"
    evs = [event(i, digest={"v": 1, "asks": [f"ask {i}"], "files": [{"path": f"f{i % 60}.py", "action": "read"}],
                            "commands": [{"command": f"cmd {i}", "failed": False}],
                            "todos": [{"content": f"todo {i}", "status": "pending"}]}) for i in range(80)]
    evs.append(event(80, digest={"v": 1, "todos": [], "files": "not a list", "asks": [None, 3, "last ask"],
                                 "commands": [{"command": 7}], "project": {"cwd": 5}}))
    evs.append(event(81, digest={"v": 1, "goal": "a late goal is not the goal"}))
    evs.append(event(82, digest={"v": 1, "text": "replaced below by JSON that is no object"}))
    insert_events(path, evs)
    con = connect(path)
    try:
        con.execute("UPDATE events SET digest = '[1, 2]' WHERE id = ?", [evs[-1].id])
        d = load_digest(con, SID)
    finally:
        con.close()
    assert d.deltas == 82 and d.text is None
    assert list(d.asks) == ["ask 76", "ask 77", "ask 78", "ask 79", "last ask"]
    assert len(d.files) == MAX_FILES and list(d.files)[-1] == "f19.py" and "f20.py" not in d.files
    assert [c["command"] for c in d.commands] == [f"cmd {i}" for i in range(50, 80)]
    assert d.todos == [] and d.goal == "a late goal is not the goal" and d.project is None
    junk = SessionDigest("x")
    for value in ("[1, 2]", "{not json", b"null", 42, None):
        junk.add(value)
    assert junk.deltas == 0


def test_digest_rides_through_the_writer_and_its_journal(tmp_path) -> None:
    from llmsm.addons.writer import EventWriter

    delta = DigestDelta.from_items(goal="Ünïcödé goal ✓", files=[("a.py", "edit")], todos=[("t", "pending")]).to_json()
    ev = event(0, digest=delta)
    # the journal line is the model's JSON; replaying it gives the same event back
    assert ExchangeEvent.model_validate_json(ev.model_dump_json()).digest == delta
    path = tmp_path / "w.duckdb"
    with EventWriter(path) as writer:
        writer.put(ev)
        writer.put(event(1, digest=None))
        assert writer.flush()
    con = open_for_query(path)
    try:
        stored = con.execute("SELECT digest FROM events ORDER BY started_at").fetchall()
    finally:
        con.close()
    assert json.loads(stored[0][0]) == delta and stored[1][0] is None


# --------------------------------------------------------------------------------------------
# The brief
# --------------------------------------------------------------------------------------------


def count(text: str) -> int:
    return len(encoding_for_model(MODEL).encode_ordinary(text))


def test_brief_markdown_from_the_cli(db, env) -> None:
    path, project = db
    p = run_cli("handoff", "5f1c2a9e-1111", "--db", str(path), env=env)
    assert p.returncode == 0, p.stderr
    brief = p.stdout
    assert PLANTED not in brief and "PLANTED" not in brief and "sk-ant" not in brief
    head = brief.splitlines()[:3]
    assert head[0] == "# Handoff" and head[2].startswith("**Goal:** carry on") and GOAL in head[2]
    for expected in (str(project), "csv-semicolons", "claude-code 2.0.46", f"model {MODEL}",
                     "[~] detect the delimiter (in progress)", "[x] read the importer",
                     "`src/importer.py` (edited)", "`tests/test_importer.py` (written)", "`README.md`",
                     "`pytest -q tests/test_importer.py` — failed", "529 overloaded_error: Overloaded",
                     "run the whole suite", "The importer now sniffs the delimiter"):
        assert expected in brief, expected
    assert "not_found" not in brief
    # context fill: the main thread's latest turn (not the subagent's), against the model's window
    assert "Its context at the end: 55510 of 200000 tokens (28%)" in brief


def test_goal_leads_and_json_document(db, env) -> None:
    path, _ = db
    goal = f"Release 2.0 of the importer (key {PLANTED} is in the vault)"
    p = run_cli("handoff", "csv-work", "--goal", goal, "--json", "--db", str(path), env=env)  # by its run's label
    assert p.returncode == 0, p.stderr
    assert PLANTED not in p.stdout
    doc = json.loads(p.stdout)
    assert doc["schema"] == "llmsm.handoff/1" and doc["session"] == SID and doc["label"] == "csv-work"
    assert doc["client"] == "claude-code" and doc["provider"] == "anthropic" and doc["model"] == MODEL
    assert doc["goal"] == "Release 2.0 of the importer (key [REDACTED] is in the vault)"
    assert doc["session_goal"] == GOAL and doc["branch"] == "csv-semicolons" and doc["git"] is True
    assert {f["path"]: f["action"] for f in doc["files"]}["src/importer.py"] == "edit"
    assert {c["command"]: c["failed"] for c in doc["commands"]}["pytest -q tests/test_importer.py"] is True
    assert doc["todos"][0] == {"content": "detect the delimiter", "status": "in_progress"}
    assert doc["errors"][0]["status_code"] == 529
    assert doc["usage"]["requests"] == 6 and doc["usage"]["errors"] == 1  # API calls, as `llmsm sessions` counts
    assert doc["context"]["prompt_tokens"] == 10 + 55_000 + 500 and doc["context"]["context_window"] == 200_000
    assert doc["context_fill"] == pytest.approx(55_510 / 200_000)
    assert doc["brief"].splitlines()[2] == f"**Goal:** {doc['goal']}"
    assert f"The earlier session set out to: {GOAL}" in doc["brief"]
    assert doc["brief_tokens"] == count(doc["brief"]) <= doc["max_tokens"] == 2000


def test_max_tokens_bounds_the_brief_dropping_the_least_important_first(db) -> None:
    h = load(db[0], goal="Ship it")
    full = ho.compose_brief(h, 100_000)
    assert not full.omitted and count(full.text) == full.tokens
    sizes = []
    for budget in (1500, 600, 350, 250, 120, 100):
        brief = ho.compose_brief(h, budget)
        n = count(brief.text)
        assert n <= budget and brief.tokens == n, (budget, n)
        sizes.append(n)
        assert "**Goal:** Ship it" in brief.text  # never dropped
    assert sizes == sorted(sizes, reverse=True)
    # the parts go in DROP_ORDER, each kind oldest first: what was left out is a prefix of that order
    totals: dict[str, int] = {}
    for part in ho._parts(h):
        if part.kind:
            totals[part.kind] = totals.get(part.kind, 0) + 1
    for budget in (400, 350, 300, 250):
        brief = ho.compose_brief(h, budget)
        assert brief.omitted, budget
        last = max(ho.DROP_ORDER.index(k) for k in brief.omitted)
        for kind in ho.DROP_ORDER[:last]:
            if kind in totals and kind not in brief.shortened:
                assert brief.omitted.get(kind) == totals[kind], (budget, kind, brief.omitted)
        assert "Left out to fit" in brief.text and "**Goal:** Ship it" in brief.text
    mid = ho.compose_brief(h, 400)
    assert mid.omitted.get("older asks") and mid.omitted.get("files read")
    for kept in ("detect the delimiter", "`src/importer.py` (edited)", "pytest -q tests/test_importer.py` — failed",
                 "529 overloaded_error"):
        assert kept in mid.text, kept
    tiny = ho.compose_brief(h, 100)
    assert tiny.cut and count(tiny.text) <= 100 and tiny.text.endswith("…")


def test_cli_max_tokens(db, env) -> None:
    path, _ = db
    p = run_cli("handoff", SID, "--max-tokens", "300", "--db", str(path), env=env)
    assert p.returncode == 0, p.stderr
    assert count(p.stdout) <= 300 and "**Goal:**" in p.stdout
    p = run_cli("handoff", SID, "--max-tokens", "5", "--db", str(path), env=env)
    assert p.returncode == 2 and "max-tokens" in p.stderr


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_unknown_and_ambiguous_sessions(db, env, tmp_path) -> None:
    path, _ = db
    line = one_line_error(run_cli("handoff", "no-such-session", "--db", str(path), env=env))
    assert "no session matches 'no-such-session'" in line
    p = run_cli("handoff", "5f1c2a9e", "--db", str(path), env=env)
    assert "ambiguous" in one_line_error(p) and SID in p.stderr and OTHER in p.stderr
    line = one_line_error(run_cli("handoff", SID, "--db", str(tmp_path / "none.duckdb"), env=env))
    assert "no database" in line
    line = one_line_error(run_cli("handoff", SID, "stray", "--db", str(path), env=env))
    assert "--start" in line
    line = one_line_error(run_cli("handoff", SID, "--model", "x", "--db", str(path), env=env))
    assert "--summarize" in line


def test_a_database_without_the_digest_column_is_one_line(tmp_path, env) -> None:
    import duckdb

    from llmsm.analytics import migrations

    # the schema without m004 (the digest), yet recorded as current: what a read-only open meets when an
    # older llmsm's file could not be migrated
    path = tmp_path / "odd.duckdb"
    con = duckdb.connect(str(path))
    try:
        for fn in migrations.MIGRATIONS:
            if fn.__name__ != "m004_digest":
                fn(con)
        con.execute(f"CREATE TABLE {migrations.MIGRATIONS_TABLE} (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
        con.execute(f"CREATE TABLE {migrations.META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
        for fn in migrations.MIGRATIONS:
            con.execute(f"INSERT INTO {migrations.MIGRATIONS_TABLE} VALUES (?, now())", [fn.__name__])
        con.execute(migrations.views_sql().replace("digest->>'$.project.cwd'", "NULL::VARCHAR"))  # views of then
        con.execute(f"INSERT INTO {migrations.META_TABLE} VALUES (?, ?)", [migrations.VIEWS_HASH_KEY, migrations.views_hash()])
        con.execute("INSERT INTO events (id, started_at, session_id, api, outcome) VALUES ('e1', now(), ?, 'messages', 'ok')", [SID])
    finally:
        con.close()
    line = one_line_error(run_cli("handoff", SID, "--db", str(path), env=env))
    assert line.startswith(f"error: cannot read session '{SID}'") and "digest" in line


# --------------------------------------------------------------------------------------------
# Transcripts fill the gaps
# --------------------------------------------------------------------------------------------


def test_claude_code_compaction_summary_is_used(db, env, tmp_path) -> None:
    path, _ = db
    config = tmp_path / "claude-config"
    folder = config / "projects" / "-tmp-project"
    folder.mkdir(parents=True)
    lines = [
        {"type": "summary", "summary": "Old title", "leafUuid": "u0"},
        {"type": "user", "sessionId": SID, "cwd": "/tmp/project", "gitBranch": "csv-semicolons",
         "message": {"role": "user", "content": "first ask"}},
        {"type": "user", "isCompactSummary": True, "sessionId": SID,
         "message": {"role": "user", "content": "Older summary that a newer one replaces."}},
        {"type": "user", "isCompactSummary": True, "sessionId": SID, "message": {"role": "user", "content": [
            {"type": "text", "text": f"Summary: the importer work is half done; the secret {PLANTED} is in .env."}]}},
        {"type": "assistant", "sessionId": SID, "message": {"content": [{"type": "text", "text": "ok"}]}},
    ]
    # compact JSON, as Claude Code writes it; one line is spaced, as a hand-edited file might be
    text = "\n".join(json.dumps(x, separators=(",", ":")) for x in lines[:-2]) + "\n" + json.dumps(lines[-2])
    (folder / f"{SID}.jsonl").write_text(text + "\n" + json.dumps(lines[-1], separators=(",", ":")) + "\n")
    p = run_cli("handoff", SID, "--json", "--db", str(path), env={**env, "CLAUDE_CONFIG_DIR": str(config)})
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["summary"]["source"] == "Claude Code's compaction summary"
    assert doc["summary"]["text"] == "Summary: the importer work is half done; the secret [REDACTED] is in .env."
    assert "the importer work is half done" in doc["brief"] and PLANTED not in p.stdout
    assert doc["sources"]["transcript"]["path"].endswith(f"{SID}.jsonl")


def test_codex_rollout_fills_project_goal_and_summary(tmp_path, monkeypatch) -> None:
    thread = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    path = tmp_path / "codex.duckdb"
    insert_events(path, [event(i, sid=thread, client="codex", provider="openai", api="responses", model="gpt-5-codex",
                               requested_model="gpt-5-codex", path="/v1/responses", digest=None) for i in range(3)])
    home = tmp_path / "codex-home"
    day = home / "sessions" / "2025" / "06" / "01"
    day.mkdir(parents=True)
    lines = [
        {"timestamp": "2025-06-01T09:00:00Z", "type": "session_meta",
         "payload": {"id": thread, "cwd": "/home/u/api", "git": {"branch": "feature/x"}}},
        {"type": "event_msg", "payload": {"type": "user_message", "message": "<environment_context>cwd</environment_context>"}},
        {"type": "event_msg", "payload": {"type": "user_message", "message": "Port the API to the new router"}},
        {"type": "compacted", "payload": {"message": "Router half ported; tests in tests/api fail on auth."}},
    ]
    (day / f"rollout-2025-06-01T09-00-00-{thread}.jsonl").write_text(
        "\n".join(json.dumps(x, separators=(",", ":")) for x in lines) + "\n")
    monkeypatch.setenv("CODEX_HOME", str(home))
    h = load(path, thread)
    assert h.transcript is not None and h.transcript.kind == "codex"
    assert h.project == {"cwd": "/home/u/api", "branch": "feature/x"}
    assert h.session_goal == "Port the API to the new router"
    brief = ho.compose_brief(h).text
    assert "Router half ported" in brief and "Codex's compaction summary" in brief and "`/home/u/api`" in brief


# --------------------------------------------------------------------------------------------
# --start and --summarize: a real gateway on the database
# --------------------------------------------------------------------------------------------

CHILD = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'session': os.environ.get('LLMSM_SESSION'), 'base': os.environ.get('ANTHROPIC_BASE_URL')}))"


@pytest.fixture(scope="module")
def live(upstream, tmp_path_factory):
    """A gateway recording into a database that holds the session (written before it starts)."""
    tmp = tmp_path_factory.mktemp("handoff-live")
    project = tmp / "project"
    project.mkdir()
    path = tmp / "llmsm.duckdb"
    insert_events(path, session_events(project) + [
        event(0, sid="gem-session-1", client="gemini-cli", provider="gemini", api="generate_content",
              model="gemini-2.5-pro", requested_model="gemini-2.5-pro", digest={"v": 1, "goal": "Gemini work"}),
        event(0, sid="sdk-session-1", client="unknown", digest={"v": 1, "goal": "SDK work"}),
    ])
    gw = Gateway(tmp, upstream.url, db=path).start()
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "CLAUDE_CONFIG_DIR", "CODEX_HOME"):
        gw.env.pop(name, None)
    yield gw, project
    gw.stop()


def test_start_runs_the_fresh_session_with_the_brief(live) -> None:
    gw, project = live
    script = project / "child.py"
    script.write_text(CHILD)
    brief = run_cli("handoff", SID, "--goal", "Finish the importer", "--db", str(gw.db), env=gw.env).stdout
    p = run_cli("handoff", SID, "--goal", "Finish the importer", "--start", "--db", str(gw.db), "--",
                sys.executable, str(script), "--flag", env=gw.env, cwd="/")
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert seen["argv"][0] == "--flag" and seen["argv"][-1] == brief
    assert seen["cwd"] == str(project)  # the old session's project directory, not ours
    assert seen["base"].startswith(f"{gw.url}/s/") and seen["session"]
    runs = gw.query(f"SELECT session_id, parent_session, cwd, command FROM runs WHERE session_id = '{seen['session']}'")
    assert runs == [{"session_id": seen["session"], "parent_session": SID, "cwd": str(project),
                     "command": f"{sys.executable} {script} --flag <handoff brief of {SID}>"}]


def test_start_without_command_uses_the_clients_interactive_form(live, tmp_path) -> None:
    gw, project = live
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("claude", "gemini"):
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{CHILD}\n")
        exe.chmod(0o755)
    env = dict(gw.env, PATH=f"{bin_dir}{os.pathsep}{gw.env.get('PATH', '')}")
    p = run_cli("handoff", SID, "--start", "--db", str(gw.db), env=env)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert len(seen["argv"]) == 1 and seen["argv"][0].startswith("# Handoff") and seen["cwd"] == str(project)
    p = run_cli("handoff", "gem-session-1", "--start", "--db", str(gw.db), env=env)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert seen["argv"][0] == "-i" and "Gemini work" in seen["argv"][1]
    line = one_line_error(run_cli("handoff", "sdk-session-1", "--start", "--db", str(gw.db), env=env))
    assert "no known interactive form" in line
    assert one_line_error(run_cli("handoff", SID, "--start", "--json", "--db", str(gw.db), env=env))


def test_run_parent_records_the_lineage(live) -> None:
    gw, _ = live
    p = run_cli("run", "--session", "child-of-csv", "--parent", "5f1c2a9e-1111", "--db", str(gw.db), "--",
                sys.executable, "-c", "pass", env=gw.env)
    assert p.returncode == 0, p.stderr
    assert gw.query("SELECT parent_session FROM runs WHERE session_id = 'child-of-csv'") == [{"parent_session": SID}]
    line = one_line_error(run_cli("run", "--parent", "nobody", "--db", str(gw.db), "--", sys.executable, "-c", "pass",
                                  env=gw.env))
    assert "no session matches 'nobody'" in line


def test_summarize_through_the_gateway(live, upstream) -> None:
    gw, _ = live
    before = len(upstream.requests)
    p = run_cli("handoff", SID, "--summarize", "--goal", "Finish the importer", "--json", "--db", str(gw.db),
                env=dict(gw.env, ANTHROPIC_API_KEY=TEST_KEYS["anthropic"]))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["brief"] == "Hello from the fake upstream." and doc["summarized_by"] == "claude-haiku-4-5"
    sent = [r for r in upstream.requests[before:] if r["path"].endswith("/v1/messages")]
    assert len(sent) == 1
    body = json.loads(sent[0]["body"])
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 2000
    prompt = body["messages"][0]["content"]
    assert "Finish the importer" in prompt and "src/importer.py" in prompt and "[REDACTED]" in prompt
    assert PLANTED not in sent[0]["body"].decode()
    assert {k.lower(): v for k, v in sent[0]["headers"].items()}.get("x-api-key") == TEST_KEYS["anthropic"]
    rows = gw.wait_rows(1, "label = 'handoff-5f1c2a9e'")  # its cost is recorded under its own label
    assert rows[0]["model"] == "claude-haiku-4-5" and rows[0]["input_tokens"] == 21


def test_summarize_failures_are_one_line(live, tmp_path) -> None:
    gw, _ = live
    line = one_line_error(run_cli("handoff", SID, "--summarize", "--db", str(gw.db), env=gw.env))
    assert "ANTHROPIC_API_KEY" in line
    line = one_line_error(run_cli("handoff", "gem-session-1", "--summarize", "--db", str(gw.db), env=gw.env))
    assert "GEMINI_API_KEY or GOOGLE_API_KEY" in line
    # no gateway for this database
    other = tmp_path / "other.duckdb"
    insert_events(other, [event(0, digest={"v": 1, "goal": "x"})])
    line = one_line_error(run_cli("handoff", SID, "--summarize", "--db", str(other),
                                  env=dict(gw.env, ANTHROPIC_API_KEY="k")))
    assert "needs the gateway running" in line


def test_summarize_model_failure(upstream, tmp_path) -> None:
    # a gateway whose upstream is gone: the call fails upstream of the gateway, with a clear line
    path = tmp_path / "llmsm.duckdb"
    insert_events(path, [event(0, digest={"v": 1, "goal": "x"})])
    gw = Gateway(tmp_path, "http://127.0.0.1:9", db=path).start()
    try:
        line = one_line_error(run_cli("handoff", SID, "--summarize", "--db", str(path),
                                      env=dict(gw.env, ANTHROPIC_API_KEY="k")))
        assert line.startswith("error: the model call failed: HTTP 502"), line
    finally:
        gw.stop()
