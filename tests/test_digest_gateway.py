"""The session digest kept by the gateway: Claude Code, Codex (HTTP and WebSocket) and Gemini CLI
request shapes with tool calls through the real gateway; what `load_digest` and `llmsm handoff
--json` then name; no planted key anywhere on disk; `--no-content`; the project in `llmsm
sessions --json`; and (pure) incremental scanning gives what one full scan gives."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from llmsm.addons.providers.work import RESCAN_TAIL, WorkScanner, codex_failed, gemini_failed, shell_reads
from llmsm.analytics.digest import SessionDigest, load_digest
from llmsm.analytics.store import open_for_query
from tests.conftest import TEST_KEYS, Gateway
from tests.test_websocket import WebSocketUpstream

PLANTED = "sk-ant-api03-PLANTEDplanted0123456789PLANTEDplanted0123456789-XYZ"
CC_UA = "claude-cli/2.1.197 (external, cli)"
CODEX_UA = "codex_exec/0.169.0 (Ubuntu 24.04; x86_64) xterm"
GEMINI_UA = "GeminiCLI-tui/0.61.0/gemini-3-pro-preview (linux; x64; terminal)"


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("digest"), upstream.url).start()
    yield g
    g.stop()


def _post(gateway, path: str, body: dict, headers: dict) -> None:
    r = httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=15)
    assert r.status_code == 200, r.text


def _digest(gateway, session_id: str) -> dict:
    con = open_for_query(gateway.db, timeout=10)
    try:
        return load_digest(con, session_id).to_dict()
    finally:
        con.close()


def _wait_digest(gateway, session_id: str, n: int) -> list[dict]:
    """The session's rows once n of them are written."""
    return gateway.wait_rows(n, f"session_id = '{session_id}'")


# -- Claude Code ---------------------------------------------------------------------------------

CC_SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": "Here is useful information about the environment you are running in:\n<env>\n"
                             "Primary working directory: /home/u/shop\nIs a git repository: true\nPlatform: linux\n</env>\n"
                             "gitStatus: This is the git status at the start of the conversation.\n"
                             "Current branch: csv-semicolons\n\nMain branch (you will usually use this for PRs): main\n",
     "cache_control": {"type": "ephemeral"}},
]
CC_TOOLS = [{"name": n, "description": n, "input_schema": {"type": "object"}} for n in ("Read", "Edit", "Write", "Bash", "TodoWrite", "Grep")]


def _cc_turns(tag: str) -> list[list[dict]]:
    """The message lists of one Claude Code session's requests, each extending the one before."""
    goal = f"Make the CSV importer accept semicolons {tag}; my key is {PLANTED}"
    m = [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>As you answer, use CLAUDE.md: be brief.</system-reminder>"},
            {"type": "text", "text": goal, "cache_control": {"type": "ephemeral"}}]},
    ]
    turns = [list(m)]
    m += [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look at the importer."},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/home/u/shop/src/importer.py"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"pattern": "delimiter"}},
            {"type": "tool_use", "id": "toolu_3", "name": "Bash", "input": {"command": "pytest -q tests/test_importer.py"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "import csv\n"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "src/importer.py:3"},
            {"type": "tool_result", "tool_use_id": "toolu_3", "is_error": True, "content": "1 failed"}]},
    ]
    turns.append(list(m))
    m += [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_4", "name": "TodoWrite", "input": {"todos": [
                {"content": "detect the delimiter", "status": "in_progress", "activeForm": "Detecting"},
                {"content": "document semicolons", "status": "pending", "activeForm": "Documenting"}]}},
            {"type": "tool_use", "id": "toolu_5", "name": "Edit", "input": {
                "file_path": "/home/u/shop/src/importer.py", "old_string": "a", "new_string": "b"}},
            {"type": "tool_use", "id": "toolu_6", "name": "Write", "input": {
                "file_path": "/home/u/shop/tests/test_semicolon.py", "content": "def test(): pass\n"}},
            {"type": "tool_use", "id": "toolu_7", "name": "Bash", "input": {"command": "ruff check src"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_4", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "toolu_5", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "toolu_6", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "toolu_7", "content": "All checks passed"},
            {"type": "text", "text": "<system-reminder>The todo list changed.</system-reminder>"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"The importer now detects semicolons {tag}."}]},
        {"role": "user", "content": [{"type": "text", "text": "thanks, now update the README"}]},
    ]
    turns.append(list(m))
    return turns


def _claude_code_session(gateway, key: str) -> str:
    sid = str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    headers = {"user-agent": CC_UA, "x-app": "cli", "x-api-key": key, "anthropic-version": "2023-06-01",
               "x-claude-code-session-id": sid}
    for i, messages in enumerate(_cc_turns(tag)):
        _post(gateway, "/anthropic/v1/messages?beta=true", {
            "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True, "system": CC_SYSTEM,
            "tools": CC_TOOLS, "messages": messages}, headers)
        if i == 0:  # its title request: a side call, not a turn of the work
            _post(gateway, "/anthropic/v1/messages?beta=true", {
                "model": "claude-haiku-4-5", "max_tokens": 512, "stream": False,
                "system": [{"type": "text", "text": "Generate a short title for this coding session."}],
                "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
                "messages": [{"role": "user", "content": "a different ask that must not be the goal"}]}, headers)
        if i == 1:  # its check of a shell command: no tools offered, not a turn of the work either
            _post(gateway, "/anthropic/v1/messages?beta=true", {
                "model": "claude-haiku-4-5", "max_tokens": 512, "stream": False,
                "system": [{"type": "text", "text": "Extract the command prefix."}],
                "messages": [{"role": "user", "content": "<policy_spec>…</policy_spec> Command: pytest -q"}]}, headers)
    _wait_digest(gateway, sid, 5)
    return sid


def test_claude_code_session_digest_and_brief(gw):
    sid = _claude_code_session(gw, TEST_KEYS["anthropic"] + "cc")
    d = _digest(gw, sid)
    assert d["project"] == {"cwd": "/home/u/shop", "git": True, "branch": "csv-semicolons"}
    assert d["goal"].startswith("Make the CSV importer accept semicolons") and "[REDACTED]" in d["goal"]
    assert PLANTED not in json.dumps(d, default=str)
    assert d["asks"][-1] == "thanks, now update the README" and len(d["asks"]) == 2
    files = {f["path"]: f["action"] for f in d["files"]}
    assert files == {"/home/u/shop/src/importer.py": "edit", "/home/u/shop/tests/test_semicolon.py": "write"}
    assert d["commands"] == [{"command": "pytest -q tests/test_importer.py", "failed": True},
                             {"command": "ruff check src", "failed": False}]
    assert d["todos"] == [{"content": "detect the delimiter", "status": "in_progress"},
                          {"content": "document semicolons", "status": "pending"}]
    assert d["text"].startswith("The importer now detects semicolons")
    # the title request (a side call) kept nothing; the deltas: one per request that showed something new
    rows = gw.query(f"SELECT requested_model, digest FROM events WHERE session_id = '{sid}' ORDER BY started_at")
    assert [r["digest"] is None for r in rows if r["requested_model"] == "claude-haiku-4-5"] == [True, True]
    assert d["deltas"] == 3

    brief = json.loads(gw.cli("handoff", sid, "--json").stdout)
    assert brief["project"] == "/home/u/shop" and brief["branch"] == "csv-semicolons"
    assert brief["session_goal"].startswith("Make the CSV importer accept semicolons")
    assert "/home/u/shop/tests/test_semicolon.py" in brief["brief"] and "pytest -q tests/test_importer.py" in brief["brief"]
    assert PLANTED not in json.dumps(brief)


# -- Codex ---------------------------------------------------------------------------------------

PATCH = ("*** Begin Patch\n*** Update File: src/api.py\n@@\n-def page(): pass\n+def page(n): return n\n"
         "*** Add File: tests/test_page.py\n+def test_page(): pass\n*** End Patch\n")


def _codex_input(tag: str) -> list[list[dict]]:
    def msg(role: str, text: str, kind: str = "input_text") -> dict:
        return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}

    items = [
        msg("developer", "<permissions instructions>sandbox: workspace-write</permissions instructions>"),
        msg("user", "<user_instructions>\nAGENTS.md: run the tests\n</user_instructions>"),
        msg("user", "<environment_context>\n  <cwd>/home/u/api</cwd>\n  <shell>bash</shell>\n</environment_context>"),
        msg("user", f"Paginate the list endpoint {tag}"),
    ]
    turns = [list(items)]
    items += [
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "function_call", "name": "shell", "call_id": "call_1",
         "arguments": json.dumps({"command": ["bash", "-lc", "sed -n '1,80p' src/api.py"], "workdir": "/home/u/api"})},
        {"type": "function_call_output", "call_id": "call_1",
         "output": json.dumps({"output": "def page(): pass\n", "metadata": {"exit_code": 0, "duration_seconds": 0.1}})},
        {"type": "custom_tool_call", "name": "apply_patch", "call_id": "call_2", "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Success. Updated the following files:\nM src/api.py"},
        {"type": "function_call", "name": "exec_command", "call_id": "call_3", "arguments": json.dumps({"cmd": "pytest -q"})},
        {"type": "function_call_output", "call_id": "call_3", "output": "Exit code: 1\nWall time: 0.8 seconds\nOutput:\n1 failed"},
        {"type": "function_call", "name": "update_plan", "call_id": "call_4", "arguments": json.dumps({"plan": [
            {"step": "add the page parameter", "status": "completed"}, {"step": "fix the failing test", "status": "in_progress"}]})},
        {"type": "function_call_output", "call_id": "call_4", "output": "Plan updated"},
    ]
    turns.append(list(items))
    items += [msg("assistant", f"Pagination is in {tag}.", "output_text"), msg("user", "also add a changelog entry")]
    turns.append(list(items))
    return turns


def _codex_headers(key: str, thread: str) -> dict:
    meta = {"turn_id": "t1", "workspaces": {"/home/u/api": {"latest_git_commit_hash": "abc", "has_changes": True}},
            "sandbox": "seccomp"}
    return {"authorization": f"Bearer {key}", "user-agent": CODEX_UA, "originator": "codex_exec", "session-id": thread,
            "x-codex-turn-metadata": json.dumps(meta)}


def _check_codex(d: dict) -> None:
    assert d["project"] == {"cwd": "/home/u/api", "git": True}
    assert d["goal"].startswith("Paginate the list endpoint")
    assert d["asks"][-1] == "also add a changelog entry"
    assert {f["path"]: f["action"] for f in d["files"]} == {
        "src/api.py": "edit", "tests/test_page.py": "write"}
    assert d["commands"] == [{"command": "sed -n '1,80p' src/api.py", "failed": False},
                             {"command": "pytest -q", "failed": True}]
    assert d["todos"] == [{"content": "add the page parameter", "status": "completed"},
                          {"content": "fix the failing test", "status": "in_progress"}]
    assert d["text"].startswith("Pagination is in")


def test_codex_session_digest(gw):
    thread = str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    for items in _codex_input(tag):
        _post(gw, "/openai/v1/responses", {"model": "gpt-5-codex", "stream": True, "instructions": "You are Codex.",
                                           "input": items, "tools": [{"type": "function", "name": "shell"}],
                                           "prompt_cache_key": thread}, _codex_headers(TEST_KEYS["openai"], thread))
    _wait_digest(gw, thread, 3)
    d = _digest(gw, thread)
    _check_codex(d)
    brief = json.loads(gw.cli("handoff", thread, "--json").stdout)
    assert brief["project"] == "/home/u/api" and brief["session_goal"].startswith("Paginate the list endpoint")
    assert "tests/test_page.py" in brief["brief"] and "pytest -q" in brief["brief"]


def test_codex_over_websocket(upstream, tmp_path):
    ws_up = WebSocketUpstream().start()
    g = Gateway(tmp_path, f"http://127.0.0.1:{ws_up.port}").start()
    try:
        thread = str(uuid.uuid4())
        url = f"ws://127.0.0.1:{g.port}/openai/v1/responses"
        with connect(url, additional_headers=_codex_headers("sk-test-ws-digest", thread)) as ws:
            for items in _codex_input(uuid.uuid4().hex[:8]):
                ws.send(json.dumps({"type": "response.create", "model": "gpt-5-codex", "input": items,
                                    "tools": [{"type": "function", "name": "shell"}]}))
                while json.loads(ws.recv(timeout=10))["type"] != "response.completed":
                    pass
        _wait_digest(g, thread, 3)
        _check_codex(_digest(g, thread))
    finally:
        g.stop()
        ws_up.stop()


# -- Gemini CLI ----------------------------------------------------------------------------------

GEMINI_MAIN = "/gemini/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
GEMINI_ROUTER = "/gemini/v1beta/models/gemini-3.5-flash-lite:generateContent"


def _gemini_contents(tag: str) -> list[list[dict]]:
    """The contents of one Gemini CLI session's requests: the prompt, then three tool rounds."""
    context = {"text": "<session_context>\nThis is the Gemini CLI.\n- **Workspace Directories:**\n  - /home/u/site\n\n"
                       "Directory structure:\n/home/u/site/\n  index.html\n</session_context>"}
    c = [{"role": "user", "parts": [context, {"text": f"Fix the broken nav links {tag}"}]}]
    c += [
        {"role": "model", "parts": [{"text": "thinking", "thought": True},
                                    {"functionCall": {"name": "read_file", "args": {"absolute_path": "/home/u/site/index.html"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": "<html>"}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {"command": "npm test"}}},
                                    {"functionCall": {"name": "write_todos", "args": {"todos": [
                                        {"description": "fix the nav", "status": "in_progress"},
                                        {"description": "old idea", "status": "cancelled"}]}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "run_shell_command", "response": {
                "output": "Command: npm test\nDirectory: (root)\nOutput: 2 failing\nError: (none)\nExit Code: 1\nSignal: (none)"}}},
            {"functionResponse": {"name": "write_todos", "response": {"output": "ok"}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "replace", "args": {
            "file_path": "/home/u/site/nav.js", "old_string": "a", "new_string": "b"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "replace", "response": {"output": "ok"}}}]},
    ]
    return [c[:n] for n in (1, 3, 5, 7)]  # one request per tool round


def test_gemini_cli_session_digest(gw):
    key = "AIza-" + uuid.uuid4().hex
    tag = uuid.uuid4().hex[:8]
    headers = {"user-agent": GEMINI_UA, "x-goog-api-key": key}
    for i, contents in enumerate(_gemini_contents(tag)):
        if i == 0:  # the user's turn opens with the routing call: a side call (JSON schema, no tools)
            _post(gw, GEMINI_ROUTER, {"contents": [{"role": "user", "parts": [{"text": f"Fix the broken nav links {tag}"}]}],
                                      "generationConfig": {"responseMimeType": "application/json",
                                                           "responseJsonSchema": {"type": "object"}}}, headers)
        _post(gw, GEMINI_MAIN, {"contents": contents, "tools": [{"functionDeclarations": [{"name": "read_file"}]}],
                                "systemInstruction": {"parts": [{"text": "You are an interactive CLI agent."}]}}, headers)
    rows = gw.wait_rows(5, f"account = 'key:' || substr(sha256('{key}'), 1, 12)")
    assert len({r["session_id"] for r in rows}) == 1, [(r["requested_model"], r["session_id"], r["session_source"]) for r in rows]
    sid = rows[0]["session_id"]
    d = _digest(gw, sid)
    assert d["project"] == {"cwd": "/home/u/site"}
    assert d["goal"] == f"Fix the broken nav links {tag}" and d["asks"] == [d["goal"]]
    assert {f["path"]: f["action"] for f in d["files"]} == {"/home/u/site/index.html": "read", "/home/u/site/nav.js": "edit"}
    assert d["commands"] == [{"command": "npm test", "failed": True}]
    assert d["todos"] == [{"content": "fix the nav", "status": "in_progress"}, {"content": "old idea", "status": "completed"}]
    assert d["text"] is None  # a thought is not the assistant's text
    side = gw.query(f"SELECT digest FROM events WHERE session_id = '{sid}' AND session_source = 'side_call'")
    assert len(side) == 1 and side[0]["digest"] is None


# -- where the digest shows, and what never reaches the disk --------------------------------------


def test_project_in_sessions_json(gw):
    sid = _claude_code_session(gw, TEST_KEYS["anthropic"] + "sj")
    [s] = [s for s in json.loads(gw.cli("sessions", "--json").stdout) if s["session_id"] == sid]
    assert s["project"] == "/home/u/shop" and "parent_session" in s and s["parent_session"] is None
    shown = gw.cli("show", sid).stdout
    assert "/home/u/shop" in shown


def _on_disk(g: Gateway) -> dict[str, bytes]:
    files = [g.db, g.db.with_name(g.db.name + ".wal"), g.log]
    spool = Path(str(g.db) + ".spool")
    files += sorted(spool.glob("*")) if spool.is_dir() else []
    return {str(p): p.read_bytes() for p in files if p.is_file()}


def test_no_planted_key_on_disk_and_the_digest_is_there(upstream, tmp_path):
    g = Gateway(tmp_path, upstream.url).start()
    try:
        sid = _claude_code_session(g, TEST_KEYS["anthropic"] + "pk")
        while_running = _on_disk(g)
        brief = g.cli("handoff", sid).stdout
    finally:
        g.stop()
    after = _on_disk(g)
    planted = PLANTED.encode()
    for name, data in [*while_running.items(), *after.items()]:
        assert planted not in data, name
        assert PLANTED[:24].encode() not in data, name
    assert PLANTED not in brief and "Make the CSV importer accept semicolons" in brief
    # the check can fail: what the digest keeps is on the disk, readable (the WAL or the file)
    kept = b"thanks, now update the README"
    assert any(kept in data for data in after.values()) or any(kept in data for data in while_running.values())


def test_no_content_keeps_no_text(upstream, tmp_path):
    g = Gateway(tmp_path, upstream.url, extra_args=("--no-content",)).start()
    try:
        sid = _claude_code_session(g, TEST_KEYS["anthropic"] + "nc")
        thread = str(uuid.uuid4())
        for items in _codex_input("nc"):
            _post(g, "/openai/v1/responses", {"model": "gpt-5-codex", "stream": True, "input": items,
                                              "tools": [{"type": "function"}]}, _codex_headers(TEST_KEYS["openai"], thread))
        g.wait_rows(8)
        time.sleep(0.3)
        rows = g.query("SELECT session_id, digest FROM events")
        assert len(rows) >= 8 and all(r["digest"] is None for r in rows)
        assert _digest(g, sid)["deltas"] == 0
        [s] = [s for s in json.loads(g.cli("sessions", "--json").stdout) if s["session_id"] == sid]
        assert s["project"] is None
    finally:
        g.stop()
    for name, data in _on_disk(g).items():
        assert b"thanks, now update the README" not in data and b"Make the CSV importer" not in data, name


# -- pure: the scanner --------------------------------------------------------------------------


def _merged(deltas: list) -> dict:
    d = SessionDigest("s")
    for delta in deltas:
        d.add(delta)
    out = d.finish().to_dict()
    out["files"] = [(f["path"], f["action"]) for f in out["files"]]  # `actions` differ by design
    del out["deltas"]
    return out


def _many_claude_messages(n: int) -> list[dict]:
    """A long Claude Code history: the goal, then tool rounds (read, edit, bash) and asks."""
    m = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                      {"type": "text", "text": "the goal"}]}]
    i = 0
    while len(m) < n:
        i += 1
        m.append({"role": "assistant", "content": [
            {"type": "text", "text": f"step {i}"},
            {"type": "tool_use", "id": f"a{i}", "name": "Read", "input": {"file_path": f"src/m{i % 7}.py"}},
            {"type": "tool_use", "id": f"b{i}", "name": ("Edit" if i % 3 else "Write"), "input": {"file_path": f"src/m{i % 5}.py"}},
            {"type": "tool_use", "id": f"c{i}", "name": "Bash", "input": {"command": f"pytest -k t{i}"}}]})
        m.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"a{i}", "content": "x" * 200},
            {"type": "tool_result", "tool_use_id": f"b{i}", "content": "ok"},
            {"type": "tool_result", "tool_use_id": f"c{i}", "content": "ok", "is_error": i % 4 == 0},
            *([{"type": "text", "text": f"ask {i}"}] if i % 6 == 0 else [])]})
    return m[:n] if m[n - 1]["role"] == "user" else m[: n - 1]


@pytest.mark.parametrize("shape", ["anthropic", "openai_responses", "gemini"])
def test_incremental_scan_equals_a_full_scan(shape):
    if shape == "anthropic":
        history, system = _many_claude_messages(120), CC_SYSTEM
        cuts = [i + 1 for i, m in enumerate(history) if m["role"] == "user"]
    elif shape == "openai_responses":
        history, system = _codex_input("x")[-1], None
        cuts = [4, 13, len(history)]
    else:
        history, system = _gemini_contents("x")[-1], None
        cuts = [1, 3, 5, len(history)]
    incremental = WorkScanner()
    deltas = [incremental.scan("s", shape, history[:cut], system) for cut in cuts]
    deltas += [incremental.scan("s", shape, history, system)]  # a retry: nothing new
    assert deltas[-1] is None
    full = WorkScanner().scan("s", shape, history, system)
    assert _merged(deltas) == _merged([full])


def test_a_history_that_changed_is_read_again_only_at_its_end():
    history = _many_claude_messages(200)
    scanner = WorkScanner()
    first = scanner.scan("s", "anthropic", history)
    assert first["goal"] == "the goal"
    # a rewind (the same start, fewer messages): only the last RESCAN_TAIL messages are read again
    rewound = scanner.scan("s", "anthropic", history[:150])
    assert "goal" not in rewound and len(rewound.get("commands", [])) <= RESCAN_TAIL // 2
    # compaction: a short new history under the same session, a conversation of its own whose
    # summary is no goal; the first one's memory is left as it was
    compacted = [{"role": "user", "content": "This session is being continued from a previous conversation."}] + history[-9:]
    again = scanner.scan("s", "anthropic", compacted)
    assert "goal" not in again and len(again["commands"]) == 4
    assert scanner.scan("s", "anthropic", history[:150]) is None
    # an edit of the last message scanned: read again from the end, not from the start
    edited = history[:-1] + [{"role": "user", "content": "a different last message"}]
    assert scanner.scan("s", "anthropic", edited)["asks"][-1] == "a different last message"
    # a subagent (its own key, user_turns False): files and commands, never the goal or asks
    sub = scanner.scan(("s", "agent-1"), "anthropic", history[:3], user_turns=False)
    assert "goal" not in sub and "asks" not in sub and sub["files"]


def test_failure_and_shell_readers():
    assert codex_failed(json.dumps({"output": "x" * 2000, "metadata": {"exit_code": 2}})) is True
    assert codex_failed("Exit code: 0\nWall time: 1 s\nOutput:\nok") is False
    assert codex_failed("Process exited with code 1\nOutput:\n") is True
    assert codex_failed("no exit code here") is None
    assert gemini_failed({"error": "file not found"}) is True
    assert gemini_failed({"output": "Command: ls\nExit Code: 0"}) is False
    assert shell_reads("sed -n '1,80p' src/a.py && cat b.py | head -n 5 c.txt; nl -ba d.py > /dev/null") == [
        "src/a.py", "b.py", "c.txt", "d.py"]
    assert shell_reads("sed -i s/a/b/ a.py") == [] and shell_reads("cat 'unclosed") == []
