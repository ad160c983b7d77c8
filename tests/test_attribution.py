"""Every request lands in the right session, whatever the client (shapes from wire-facts.md)."""

from __future__ import annotations

import json
import threading
import uuid

import anthropic
import httpx
import openai

from tests.conftest import TEST_KEYS

CC_UA = "claude-cli/2.1.14 (external, cli)"


def _post(gateway, path: str, body: dict, headers: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=15)


def test_claude_code_session_subagents_and_non_streamed_retry(gateway):
    sid = str(uuid.uuid4())
    base = {"user-agent": CC_UA, "x-app": "cli", "x-claude-code-session-id": sid, "x-api-key": TEST_KEYS["anthropic"],
            "anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07"}
    meta = {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": str(uuid.uuid4()), "session_id": sid})}
    body = {"model": "claude-opus-4-5", "max_tokens": 100, "stream": True, "metadata": meta,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "fix the tests"}]}]}
    # preflight, main turn, a subagent turn, and the non-streamed retry after a dropped stream
    httpx.head(f"{gateway.url}/anthropic", headers={"user-agent": "Bun/1.2.19"}, timeout=5)
    assert _post(gateway, "/anthropic/v1/messages?beta=true", body, base).status_code == 200
    sub = dict(base, **{"x-claude-code-agent-id": "agent-7", "x-claude-code-parent-agent-id": "main"})
    assert _post(gateway, "/anthropic/v1/messages?beta=true", body, sub).status_code == 200
    assert _post(gateway, "/anthropic/v1/messages?beta=true", dict(body, stream=False), base).status_code == 200
    rows = gateway.wait_rows(3, f"session_id = '{sid}'")
    assert len(rows) == 3
    assert {r["session_source"] for r in rows} == {"claude_code_header"}
    assert {(r["client"], r["client_version"]) for r in rows} == {("claude-code", "2.1.14")}
    assert sorted(r["streamed"] for r in rows) == [False, True, True]
    assert [r["agent_id"] for r in rows if r["agent_id"]] == ["agent-7"]
    assert all(r["long_context"] for r in rows)
    assert all(r["path"] == "/v1/messages?beta=true" for r in rows)
    # the sessions view: one session, three API requests, one agent
    [s] = gateway.query(f"SELECT * FROM sessions WHERE session_id = '{sid}'")
    assert s["requests"] == 3 and s["agents"] == 1 and s["client"] == "claude-code"


def test_claude_code_without_header_uses_metadata_user_id_both_formats(gateway):
    sid_new, sid_old = str(uuid.uuid4()), str(uuid.uuid4())
    h = {"user-agent": CC_UA, "x-api-key": TEST_KEYS["anthropic"]}
    msgs = [{"role": "user", "content": "hi"}]
    new = {"user_id": json.dumps({"device_id": "x", "account_uuid": "y", "session_id": sid_new})}
    old = {"user_id": f"user_{'a' * 64}_account_{uuid.uuid4()}_session_{sid_old}"}
    for meta in (new, old):
        _post(gateway, "/anthropic/v1/messages", {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": msgs, "metadata": meta}, h)
    [a] = gateway.wait_rows(1, f"session_id = '{sid_new}'")
    [b] = gateway.wait_rows(1, f"session_id = '{sid_old}'")
    assert a["session_source"] == b["session_source"] == "claude_code_metadata"


def test_codex_headers_and_prompt_cache_key(gateway):
    thread = str(uuid.uuid4())
    h = {"user-agent": "codex_exec/0.169.0 (Debian 12; x86_64) xterm", "originator": "codex_exec", "session-id": thread,
         "thread-id": thread, "x-client-request-id": thread, "authorization": f"Bearer {TEST_KEYS['openai']}"}
    body = {"model": "gpt-5-codex", "stream": True, "prompt_cache_key": thread, "input": [{"role": "user", "content": "hi"}]}
    assert _post(gateway, "/openai/v1/responses", body, h).status_code == 200
    older = str(uuid.uuid4())
    h2 = {"user-agent": "codex_cli_rs/0.40.0", "session_id": older, "authorization": f"Bearer {TEST_KEYS['openai']}"}
    assert _post(gateway, "/openai/v1/responses", dict(body, prompt_cache_key=older), h2).status_code == 200
    pck = str(uuid.uuid4())
    h3 = {"user-agent": "codex_exec/0.169.0", "authorization": f"Bearer {TEST_KEYS['openai']}"}
    assert _post(gateway, "/openai/v1/responses", dict(body, prompt_cache_key=pck), h3).status_code == 200
    [r1] = gateway.wait_rows(1, f"session_id = '{thread}'")
    [r2] = gateway.wait_rows(1, f"session_id = '{older}'")
    [r3] = gateway.wait_rows(1, f"session_id = '{pck}'")
    assert (r1["session_source"], r1["client"], r1["client_version"]) == ("codex_header", "codex", "0.169.0")
    assert r2["session_source"] == "codex_header" and r2["client_version"] == "0.40.0"
    assert r3["session_source"] == "prompt_cache_key"


def test_gemini_cli_conversation_continuity(gateway):
    key = "AIza-" + uuid.uuid4().hex
    h = {"user-agent": "GeminiCLI/0.61.0/gemini-2.5-pro (linux; x64)", "x-goog-api-key": key}
    u1 = {"role": "user", "parts": [{"text": "explain this repo " + uuid.uuid4().hex}]}
    m1 = {"role": "model", "parts": [{"text": "It is a gateway."}]}
    u2 = {"role": "user", "parts": [{"text": "and the tests?"}]}
    path = "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    _post(gateway, path, {"contents": [u1]}, h)
    _post(gateway, path, {"contents": [u1, m1, u2]}, h)
    _post(gateway, path, {"contents": [u1, m1, u2, m1, u2]}, h)
    rows = gateway.wait_rows(3, f"account = 'key:' || substr(sha256('{key}'), 1, 12)")
    assert len({r["session_id"] for r in rows}) == 1
    assert rows[0]["session_source"] == "conversation" and rows[0]["client"] == "gemini-cli"


def test_ten_parallel_sdk_sessions_never_mix(gateway):
    """Five labelled and five unlabelled SDK conversations, interleaved across threads."""
    turns = 4
    model = "gpt-4o-par-" + uuid.uuid4().hex[:6]  # this test's conversations only
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def labelled(i: int) -> None:
        label = f"par-{i}-{uuid.uuid4().hex[:6]}"
        c = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/s/{label}/anthropic", max_retries=0)
        for _ in range(turns):
            c.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        results[label] = ["label"]

    def unlabelled(i: int) -> None:
        c = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1", max_retries=0)
        history = [{"role": "system", "content": "shared system prompt"}, {"role": "user", "content": f"task {i} {uuid.uuid4().hex}"}]
        for t in range(turns):
            out = c.chat.completions.create(model=model, messages=history)
            history += [{"role": "assistant", "content": out.choices[0].message.content}, {"role": "user", "content": f"next {t}"}]
        results[history[1]["content"]] = ["conv"]

    def guard(fn, i):
        try:
            fn(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(fn, i)) for i in range(5) for fn in (labelled, unlabelled)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for key, (kind,) in results.items():
        if kind == "label":
            rows = gateway.wait_rows(turns, f"session_id = '{key}'")
            assert len(rows) == turns
    # each unlabelled conversation is exactly one session of `turns` requests
    gateway.wait_rows(5 * turns, f"requested_model = '{model}'")
    convs = gateway.query(
        "SELECT session_id, session_source, count(*) AS n FROM requests "
        f"WHERE requested_model = '{model}' GROUP BY ALL"
    )
    assert len(convs) == 5
    assert all(c["n"] == turns and c["session_source"] == "conversation" for c in convs)
