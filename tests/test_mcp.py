"""`llmsm mcp`: the official `mcp` client over stdio against the real server, on a database the
real gateway wrote (plus digest deltas written through the store, DIGEST-CONTRACT); every tool,
bad arguments, the server staying up while the gateway writes, a Claude Code request whose tool
call is `mcp__llmsm__sessions` passing the gateway; and `llmsm mcp install` into temporary client
homes (twice, keeping the user's entries and comments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from llmsm.analytics.digest import DigestDelta, load_digest
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events, open_for_query
from tests.conftest import REPO, TEST_KEYS, Gateway, isolated_env, run_cli

UTC = timezone.utc
LLMSM = Path(sys.executable).parent / "llmsm"  # the console script: `llmsm mcp` as an assistant starts it
PLANTED = "sk-ant-api03-PLANTEDplanted0123456789PLANTEDplanted0123456789-XYZ"
CC_UA = "claude-cli/2.1.197 (external, cli)"
TOOLS = {"sessions", "session_brief", "search", "remember", "recall"}


# --------------------------------------------------------------------------------------------
# Fixtures: a gateway of this module's own, a project directory for the server to start in
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("mcp-gw"), upstream.url).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mcp-project") / "shop"
    (root / ".git").mkdir(parents=True)
    (root / "src").mkdir()
    return root


def cc_headers(session: str, key: str = TEST_KEYS["anthropic"]) -> dict[str, str]:
    return {"user-agent": CC_UA, "x-app": "cli", "x-api-key": key, "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219", "x-claude-code-session-id": session}


def cc_body(messages: list, tools: list | None = None) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "tools": tools or [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}],
            "messages": messages}


def cc_turn(gw: Gateway, session: str, text: str) -> None:
    r = httpx.post(f"{gw.url}/anthropic/v1/messages?beta=true", json=cc_body([{"role": "user", "content": text}]),
                   headers=cc_headers(session), timeout=15)
    assert r.status_code == 200, r.text


@asynccontextmanager
async def mcp_client(db: Path, cwd: Path, log: Path):
    env = isolated_env(log.parent)
    params = StdioServerParameters(command=str(LLMSM), args=["mcp", "--db", str(db)], env=env, cwd=str(cwd))
    with open(log, "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text(result) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return result.content[0].text


# --------------------------------------------------------------------------------------------
# Every tool, and bad arguments
# --------------------------------------------------------------------------------------------


def test_every_tool_on_a_database_the_gateway_wrote(gw, project, tmp_path):
    sid = str(uuid.uuid4())
    cc_turn(gw, sid, "make the cart keep coupons")
    cc_turn(gw, sid, "and add a test")
    gw.wait_rows(2, f"session_id = '{sid}'")
    # a digest written directly, as the digest addon writes it (so the session has 3 requests)
    now = datetime.now(UTC)
    d = lambda **items: DigestDelta.from_items(**items).to_json()  # noqa: E731
    past = "5e55e55e-0000-4000-8000-" + uuid.uuid4().hex[:12]
    insert_events(gw.db, [
        ExchangeEvent(id=uuid.uuid4().hex, session_id=past, started_at=now - timedelta(days=2), api="messages",
                      outcome="ok", client="codex", label="coupon-research",
                      digest=d(project={"cwd": str(project), "git": True}, goal="Why do stacked coupons overflow?",
                               files=[("src/coupons.py", "read")], text="Found it: the discount is applied twice.")),
        ExchangeEvent(id=uuid.uuid4().hex, session_id=sid, started_at=now, api="messages", outcome="ok",
                      client="claude-code", digest=d(project={"cwd": str(project), "git": True, "branch": "coupons"},
                                                     asks=["make the cart keep coupons"], files=[("src/cart.py", "edit")])),
    ])

    async def go() -> dict:
        out: dict = {}
        async with mcp_client(gw.db, project / "src", tmp_path / "mcp.log") as s:
            listed = await s.list_tools()
            out["tools"] = {t.name: t for t in listed.tools}
            out["sessions"] = await s.call_tool("sessions", {})
            out["sessions_project"] = await s.call_tool("sessions", {"project": "shop", "active_minutes": 30})
            out["sessions_other"] = await s.call_tool("sessions", {"project": "/no/such/project"})
            out["brief"] = await s.call_tool("session_brief", {"session": sid})
            out["brief_label"] = await s.call_tool("session_brief", {"session": "coupon-research", "max_tokens": 500})
            out["remember"] = await s.call_tool("remember", {"note": f"coupon totals are cents, key {PLANTED} is fake"})
            out["remember_other"] = await s.call_tool("remember", {"note": "web: use the staging API", "project": "/srv/web"})
            out["recall"] = await s.call_tool("recall", {})
            out["recall_query"] = await s.call_tool("recall", {"query": "CENTS"})
            out["search"] = await s.call_tool("search", {"query": "coupons"})
            out["search_note"] = await s.call_tool("search", {"query": "cents", "project": str(project)})
            out["search_before"] = await s.call_tool("search", {"query": "coupons", "before": (now - timedelta(days=1)).isoformat()})
        return out

    out = anyio.run(go)
    assert set(out["tools"]) == TOOLS
    schema = out["tools"]["sessions"].input_schema
    assert set(schema["properties"]) == {"project", "active_minutes"} and schema["properties"]["active_minutes"]["type"] == "number"
    assert out["tools"]["search"].input_schema["required"] == ["query"]
    for name, result in out.items():
        if name != "tools":
            assert result.is_error is False, (name, text(result))

    found = {s["session_id"]: s for s in out["sessions"].structured_content["sessions"]}
    mine = found[sid]
    assert mine["client"] == "claude-code" and mine["requests"] == 3 and mine["project"] == str(project)
    assert mine["branch"] == "coupons" and mine["doing"] == "make the cart keep coupons"
    assert mine["files"][0]["path"] == "src/cart.py" and mine["status"] in ("healthy", "degraded", "critical")
    assert past not in found  # two days old: not active
    assert sid in text(out["sessions"]) and "doing: make the cart keep coupons" in text(out["sessions"])
    assert [s["session_id"] for s in out["sessions_project"].structured_content["sessions"]] == [sid]
    assert out["sessions_other"].structured_content["sessions"] == []

    assert text(out["brief"]).startswith("# Handoff") and out["brief"].structured_content["session"] == sid
    assert out["brief_label"].structured_content["session"] == past
    assert "applied twice" in text(out["brief_label"])

    kept = out["remember"].structured_content["note"]
    assert kept["project"] == str(project) and kept["source"] == "mcp"  # the server's directory's git root
    assert PLANTED not in text(out["remember"]) and "[REDACTED]" in kept["note"]
    assert [n["id"] for n in out["recall"].structured_content["notes"]] == [kept["id"]]  # not /srv/web's
    assert [n["id"] for n in out["recall_query"].structured_content["notes"]] == [kept["id"]]

    results = out["search"].structured_content["results"]
    assert [r["session_id"] for r in results] == [sid, past]
    assert "coupon-research" in text(out["search"]) and past in text(out["search"])
    assert out["search"].structured_content["searched_from"] is None  # a small database: all of it read
    [note] = out["search_note"].structured_content["results"]
    assert note["kind"] == "note" and note["note_id"] == kept["id"]
    assert [r["session_id"] for r in out["search_before"].structured_content["results"]] == [past]


BAD = [
    ("sessions", {"active_minutes": "soon"}, "sessions: active_minutes: input should be a valid number"),
    ("sessions", {"active_minutes": 0}, "sessions: active_minutes: input should be greater than 0"),
    ("sessions", {"minutes": 5}, "sessions: unknown argument minutes (it takes active_minutes, project)"),
    ("session_brief", {}, "session_brief: session: field required"),
    ("session_brief", {"session": "no-such-session"}, "no session matches 'no-such-session'"),
    ("session_brief", {"session": "   "}, "session: give a session id"),
    ("session_brief", {"session": "x", "max_tokens": 5}, "session_brief: max_tokens: input should be greater than or equal to 100"),
    ("search", {"query": ""}, "search: query: string should have at least 1 character"),
    ("search", {"query": "   "}, "search for what? give a word or more"),
    ("search", {"query": "a", "limit": 0}, "search: limit: input should be greater than or equal to 1"),
    ("search", {"query": "one two three four five six seven eight nine"}, "a query of at most 8 words"),
    ("search", {"query": "a", "before": "yesterday"}, "before: 'yesterday' is not an ISO 8601 time"),
    ("remember", {"note": "   "}, "a note needs some text"),
    ("remember", {"note": ["a", "list"]}, "remember: note: input should be a valid string"),
    ("recall", {"project": 7}, "recall: project: input should be a valid string"),
    ("no_such_tool", {}, "Unknown tool: no_such_tool"),
]


def test_bad_arguments_get_a_clear_error_and_the_server_stays_up(gw, project, tmp_path):
    async def go():
        async with mcp_client(gw.db, project, tmp_path / "mcp.log") as s:
            got = [await s.call_tool(name, args) for name, args, _ in BAD]
            after = await s.call_tool("recall", {})
        return got, after

    got, after = anyio.run(go)
    for (name, args, expected), result in zip(BAD, got):
        assert result.is_error is True, (name, args, text(result))
        message = text(result)
        assert expected in message and "\n" not in message and "Traceback" not in message, message
    assert after.is_error is False
    log = (tmp_path / "mcp.log").read_text()
    assert "Traceback" not in log, log


# --------------------------------------------------------------------------------------------
# While the gateway writes
# --------------------------------------------------------------------------------------------


def test_the_server_answers_while_the_gateway_writes(gw, project, tmp_path):
    sid = str(uuid.uuid4())
    rounds = 15

    async def go():
        answers = []
        async with mcp_client(gw.db, project, tmp_path / "mcp.log") as s:
            for i in range(rounds):
                await anyio.to_thread.run_sync(cc_turn, gw, sid, f"step {i}")
                answers.append(await s.call_tool("sessions", {"active_minutes": 5}))
                answers.append(await s.call_tool("search", {"query": "coupon"}))
            deadline = time.monotonic() + 15
            while True:  # the writer flushes every ~1 s (0.05 s in tests): the last requests appear shortly
                last = await s.call_tool("sessions", {"active_minutes": 5})
                mine = [x for x in last.structured_content["sessions"] if x["session_id"] == sid]
                if (mine and mine[0]["requests"] == rounds) or time.monotonic() > deadline:
                    return answers, mine

    answers, mine = anyio.run(go)
    assert [a.is_error for a in answers] == [False] * (2 * rounds), [text(a) for a in answers if a.is_error]
    assert mine and mine[0]["requests"] == rounds
    assert len(gw.wait_rows(rounds, f"session_id = '{sid}'")) == rounds  # nothing lost on the gateway's side


# --------------------------------------------------------------------------------------------
# Real assistant traffic: Claude Code calls mcp__llmsm__sessions and sends its result back
# --------------------------------------------------------------------------------------------


def test_claude_code_calls_the_sessions_tool_through_the_gateway(gw, project, tmp_path):
    """Claude Code's request shape through the real gateway (the official anthropic SDK as the
    client): the model's answer calls `mcp__llmsm__sessions`; the next request carries the tool's
    real output (from the real server over the same database) as a tool_result. Both requests
    are one session; its digest keeps the ask and the model's text, not the other sessions'
    words the result quotes; and no planted key (one session's ask held one) is anywhere."""
    import anthropic

    sid, other = str(uuid.uuid4()), str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    ask = f"what are the other sessions on this repo doing? {tag}"
    cc_turn(gw, other, f"rename the coupon table {tag}; the staging key is {PLANTED}")
    gw.wait_rows(1, f"session_id = '{other}'")
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                 default_headers={k: v for k, v in cc_headers(sid).items() if k not in ("x-api-key", "anthropic-version")})

    def send(messages: list, tools: list, **headers: str):
        body = cc_body(messages, tools)
        body.pop("stream")
        with client.messages.stream(**body, extra_headers=headers) as stream:
            return stream.get_final_message()

    async def go():
        async with mcp_client(gw.db, project, tmp_path / "mcp.log") as s:
            listed = (await s.list_tools()).tools
            tools = [{"name": f"mcp__llmsm__{t.name}", "description": t.description, "input_schema": t.input_schema}
                     for t in listed]
            first = await anyio.to_thread.run_sync(lambda: send([{"role": "user", "content": ask}], tools,
                                                                **{"x-fake": "tool_use=mcp__llmsm__sessions"}))
            await anyio.to_thread.run_sync(lambda: gw.wait_rows(1, f"session_id = '{sid}'"))
            [use] = [b for b in first.content if b.type == "tool_use"]
            assert use.name.startswith("mcp__llmsm__")
            # Claude Code calls the tool the model named, with the model's input, and sends back its result
            called = await s.call_tool(use.name.removeprefix("mcp__llmsm__"), use.input)
            return tools, first, use, called

    tools, first, use, called = anyio.run(go)
    assert first.stop_reason == "tool_use" and use.name == "mcp__llmsm__sessions" and use.input == {"active_minutes": 60}
    assert called.is_error is False
    result = text(called)
    assert sid in result and other in result and f"rename the coupon table {tag}" in result
    assert PLANTED not in result and "[REDACTED]" in result  # the other session's ask, as its digest keeps it
    assistant = [b.model_dump(exclude_none=True) for b in first.content]
    second = [
        {"role": "user", "content": ask},
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": [{"type": "text", "text": result}]}]},
    ]
    final = send(second, tools)
    assert final.stop_reason == "end_turn"
    rows = gw.wait_rows(2, f"session_id = '{sid}'")
    assert [(x["client"], x["outcome"], x["stop_reason"], x["message_count"], x["tool_errors"]) for x in rows] == [
        ("claude-code", "ok", "tool_use", 1, 0), ("claude-code", "ok", "end_turn", 3, 0)]
    assert {x["session_source"] for x in rows} == {"claude_code_header"}
    assert len(gw.query(f"SELECT * FROM sessions WHERE session_id = '{sid}'")) == 1  # one session
    # the digest: the ask (the goal) and the model's text before the call; an MCP tool names no
    # file or command (addons/providers/work.py), and the result's words (other sessions' asks)
    # are not this session's asks
    con = open_for_query(gw.db, timeout=10)
    try:
        d = load_digest(con, sid).to_dict()
    finally:
        con.close()
    assert d["goal"] == ask and d["asks"] == [ask]
    assert d["text"] == first.content[0].text
    assert d["files"] == [] and d["commands"] == []
    assert "rename the coupon table" not in json.dumps(d, default=str)
    # nothing of the planted key anywhere the gateway and the server wrote
    for f in gw.tmp.rglob("*"):
        if f.is_file():
            assert PLANTED.encode() not in f.read_bytes(), f


# --------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------


def test_llmsm_mcp_starts_without_the_cli_framework(tmp_path):
    """The server answers `initialize` without loading typer, the CLI's modules or the database
    (importing the SDK already takes most of the ~2 s a client waits)."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmsm.cli.entry", "mcp", "--db", str(tmp_path / "x.duckdb")],
                       input=json.dumps(init) + "\n", capture_output=True, text=True, timeout=60, cwd=REPO,
                       env=isolated_env(tmp_path))
    answer = json.loads(p.stdout.splitlines()[0])
    assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "llmsm"
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "mcp.server.mcpserver" in imported
    assert not imported & {"typer", "llmsm.cli.main", "llmsm.cli.common", "llmsm.analytics.store", "duckdb"}
    assert not (tmp_path / "x.duckdb").exists()


# --------------------------------------------------------------------------------------------
# llmsm mcp install
# --------------------------------------------------------------------------------------------

FAKE_CLAUDE = r'''#!/usr/bin/env python3
# Claude Code's `claude mcp add|remove --scope user NAME [-- CMD ARGS]`, as far as llmsm uses it:
# it records each call and keeps the user-scope servers in ~/.claude.json as Claude Code does.
import json, os, sys
from pathlib import Path
home = Path(os.environ["HOME"])
with open(home / "claude-calls.log", "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
path = home / ".claude.json"
data = json.loads(path.read_text()) if path.exists() else {}
args = sys.argv[1:]
servers = data.setdefault("mcpServers", {})
if args[:2] == ["mcp", "add"]:
    name = args[4]
    if name in servers:
        sys.exit(f"MCP server {name} already exists in user config")
    cmd = args[args.index("--") + 1:]
    servers[name] = {"type": "stdio", "command": cmd[0], "args": cmd[1:], "env": {}}
elif args[:2] == ["mcp", "remove"]:
    servers.pop(args[4], None)
path.write_text(json.dumps(data, indent=2))
'''

CODEX_CONFIG = '''# my Codex settings
model = "gpt-5.1-codex"  # the one I like

[mcp_servers.docs]
# the docs server
command = "docs-mcp"
args = ["--stdio"]
'''


def install(home: Path, *args: str, path: str | None = None, json_out: bool = True):
    env = {**isolated_env(home.parent), "HOME": str(home), "CODEX_HOME": str(home / "codex-home")}
    env.pop("CLAUDE_CONFIG_DIR", None)
    if path is not None:
        env["PATH"] = path
    p = run_cli("mcp", "install", *args, *(["--json"] if json_out else []), env=env)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_install_codex_keeps_comments_and_entries(tmp_path):
    import tomlkit

    home = tmp_path / "home"
    config = home / "codex-home" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(CODEX_CONFIG)
    first = install(home, "codex")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["changed"] is True and out["path"] == str(config)
    assert out["command"] == str(LLMSM) and out["args"] == ["mcp"]
    text1 = config.read_text()
    assert text1.startswith(CODEX_CONFIG)  # the user's lines, comments included, untouched
    doc = tomlkit.parse(text1)
    assert doc["mcp_servers"]["llmsm"]["command"] == str(LLMSM) and doc["mcp_servers"]["llmsm"]["args"] == ["mcp"]
    assert doc["mcp_servers"]["docs"]["command"] == "docs-mcp"

    again = install(home, "codex")
    assert json.loads(again.stdout)["changed"] is False and config.read_text() == text1  # idempotent

    with_db = install(home, "codex", "--db", str(tmp_path / "team.duckdb"))
    assert json.loads(with_db.stdout)["args"] == ["mcp", "--db", str(tmp_path / "team.duckdb")]
    assert tomlkit.parse(config.read_text())["mcp_servers"]["llmsm"]["args"] == ["mcp", "--db", str(tmp_path / "team.duckdb")]
    assert config.read_text().startswith(CODEX_CONFIG)

    fresh = tmp_path / "fresh"
    p = install(fresh, "codex", json_out=False)
    assert p.returncode == 0 and "llmsm added to Codex" in p.stdout
    assert tomlkit.parse((fresh / "codex-home" / "config.toml").read_text())["mcp_servers"]["llmsm"]["args"] == ["mcp"]

    printed = install(tmp_path / "print", "codex", "--print", json_out=False)
    assert "[mcp_servers.llmsm]" in printed.stdout and f'command = "{LLMSM}"' in printed.stdout
    assert not (tmp_path / "print" / "codex-home").exists()

    config.write_text("this is = = not toml")
    bad = install(home, "codex")
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "not valid TOML" in bad.stderr


def test_install_gemini_keeps_settings(tmp_path):
    home = tmp_path / "home"
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"theme": "GitHub", "mcpServers": {"docs": {"command": "docs-mcp"},
                                                                        "llmsm": {"command": "old", "timeout": 30000}}}))
    first = install(home, "gemini")
    assert first.returncode == 0 and json.loads(first.stdout)["changed"] is True
    data = json.loads(settings.read_text())
    assert data["theme"] == "GitHub" and data["mcpServers"]["docs"] == {"command": "docs-mcp"}
    assert data["mcpServers"]["llmsm"] == {"command": str(LLMSM), "args": ["mcp"], "timeout": 30000}
    before = settings.read_text()
    assert json.loads(install(home, "gemini").stdout)["changed"] is False and settings.read_text() == before

    printed = install(tmp_path / "other", "gemini", "--print", json_out=False)
    assert json.loads(printed.stdout.split("\n", 1)[1]) == {"mcpServers": {"llmsm": {"command": str(LLMSM), "args": ["mcp"]}}}

    settings.write_text('{\n  // a comment\n  "theme": "GitHub"\n}\n')
    bad = install(home, "gemini")
    assert bad.returncode == 1 and "not plain JSON" in bad.stderr and settings.read_text().startswith("{\n  // a comment")


def test_install_claude_runs_claude_once(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(FAKE_CLAUDE.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
    claude.chmod(0o755)
    (home / ".claude.json").write_text(json.dumps({"numStartups": 7, "mcpServers": {"docs": {"command": "docs-mcp"}}}))
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"

    first = install(home, "claude", path=path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] is True
    calls = [json.loads(x) for x in (home / "claude-calls.log").read_text().splitlines()]
    assert calls == [["mcp", "add", "--scope", "user", "llmsm", "--", str(LLMSM), "mcp"]]
    data = json.loads((home / ".claude.json").read_text())
    assert data["numStartups"] == 7 and data["mcpServers"]["docs"] == {"command": "docs-mcp"}

    assert json.loads(install(home, "claude", path=path).stdout)["changed"] is False  # already there: claude not run
    assert len((home / "claude-calls.log").read_text().splitlines()) == 1

    moved = install(home, "claude", "--db", str(tmp_path / "x.duckdb"), path=path)  # a different entry: replaced
    assert json.loads(moved.stdout)["changed"] is True
    calls = [json.loads(x) for x in (home / "claude-calls.log").read_text().splitlines()]
    assert calls[1:] == [["mcp", "remove", "--scope", "user", "llmsm"],
                         ["mcp", "add", "--scope", "user", "llmsm", "--", str(LLMSM), "mcp", "--db", str(tmp_path / "x.duckdb")]]

    # without claude on PATH (or with --print): the command to run, nothing run
    for args in (("claude",), ("claude", "--print")):
        p = install(home, *args, path=str(tmp_path / "empty"), json_out=False)
        assert p.returncode == 0 and p.stdout.strip() == f"claude mcp add --scope user llmsm -- {LLMSM} mcp"
    assert len((home / "claude-calls.log").read_text().splitlines()) == 3

    p = install(home, "cursor")
    assert p.returncode == 2 and "unknown client 'cursor'" in p.stderr
