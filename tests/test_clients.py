"""Each assistant's requests, in its real shape and headers (wire-facts.md, "What real clients
send"), through the real gateway: recognised, and one session per run with its side calls in it."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.conftest import TEST_KEYS


def _post(gateway, path: str, body: dict, headers: dict) -> httpx.Response:
    r = httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=15)
    assert r.status_code == 200, r.text
    return r


def _rows(gateway, key: str, n: int, timeout: float = 15.0) -> list[dict]:
    """The request rows sent with this API key (each test uses its own key)."""
    return gateway.wait_rows(n, f"account = 'key:' || substr(sha256('{key}'), 1, 12)", timeout=timeout)


# -- Gemini CLI 0.61 ----------------------------------------------------------------------------

GEMINI_UA = "GeminiCLI-tui/0.61.0/gemini-3-pro-preview (linux; x64; terminal)"
ROUTER = "/gemini/v1beta/models/gemini-3.5-flash-lite:generateContent"
MAIN = "/gemini/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
TOOLS = [{"functionDeclarations": [{"name": "read_file", "parameters": {"type": "object"}}]}]


def _gemini_headers(key: str) -> dict:
    return {"user-agent": GEMINI_UA, "x-goog-api-key": key, "x-goog-api-client": "google-genai-sdk/1.30.0 gl-node/v22.17.0"}


def _routing(gateway, headers: dict, prompt: str) -> None:
    """Gemini CLI's routing call: the small model, a JSON schema, the prompt as last user content."""
    _post(gateway, ROUTER, {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are a routing classifier. Score the complexity."}]},
        "generationConfig": {"temperature": 0, "responseMimeType": "application/json", "responseJsonSchema": {
            "type": "object", "properties": {"complexity_score": {"type": "integer"}}, "required": ["complexity_score"]}},
    }, headers)


def _gemini_main(gateway, headers: dict, contents: list) -> None:
    _post(gateway, MAIN, {
        "contents": contents, "tools": TOOLS,
        "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
        "generationConfig": {"temperature": 1, "thinkingConfig": {"includeThoughts": True}},
    }, headers)


def _gemini_run(gateway, key: str, prompts: list[str]) -> int:
    """One Gemini CLI run over several turns: routing call, then the main call (the first with a
    tool round). Returns the number of requests sent."""
    headers = _gemini_headers(key)
    context = {"text": "<session_context>\n- **Workspace Directories:**\n  - /home/u/proj\n\n"
                       "Directory structure:\n/home/u/proj/\n  README.md\n</session_context>"}
    history: list = []
    sent = 0
    for turn, prompt in enumerate(prompts):
        _routing(gateway, headers, prompt)
        parts = [context, {"text": prompt}] if turn == 0 else [{"text": prompt}]
        history.append({"role": "user", "parts": parts})
        _gemini_main(gateway, headers, history)
        sent += 2
        if turn == 0:  # a tool round of the same turn
            history += [{"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": "README.md"}}}]},
                        {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": "# proj"}}}]}]
            _gemini_main(gateway, headers, history)
            sent += 1
        history.append({"role": "model", "parts": [{"text": "Hello from the fake upstream."}]})
    return sent


def test_gemini_cli_routing_and_main_calls_over_several_turns_are_one_session(gateway):
    key = "AIza-" + uuid.uuid4().hex
    tag = uuid.uuid4().hex[:8]
    n = _gemini_run(gateway, key, [f"explain this repo {tag}", "and the tests?", "thanks, now fix the README"])
    rows = _rows(gateway, key, n)
    assert len(rows) == n == 7
    assert len({r["session_id"] for r in rows}) == 1, [(r["requested_model"], r["session_id"]) for r in rows]
    assert {(r["client"], r["client_version"]) for r in rows} == {("gemini-cli", "0.61.0")}
    routing = [r for r in rows if r["requested_model"] == "gemini-3.5-flash-lite"]
    assert len(routing) == 3 and {r["session_source"] for r in routing} == {"side_call"}
    assert {r["session_source"] for r in rows if r not in routing} == {"conversation"}
    [s] = gateway.query(f"SELECT client, requests FROM sessions WHERE session_id = '{rows[0]['session_id']}'")
    assert s == {"client": "gemini-cli", "requests": 7}

    # The next run with the same key (another prompt) is a session of its own, its routing call in it.
    _gemini_run(gateway, key, [f"what does {tag} mean?"])
    later = _rows(gateway, key, n + 3)[n:]
    assert len(later) == 3 and len({r["session_id"] for r in later}) == 1
    assert later[0]["session_id"] != rows[0]["session_id"]


# -- Claude Code's title request ------------------------------------------------------------------

CC_UA = "claude-cli/2.1.197 (external, cli)"


def _cc_headers(key: str, session: str | None) -> dict:
    h = {"user-agent": CC_UA, "x-app": "cli", "x-api-key": key, "anthropic-version": "2023-06-01",
         "anthropic-beta": "claude-code-20250219"}
    if session:
        h["x-claude-code-session-id"] = session
    return h


def _cc_main(prompt: str) -> dict:
    return {"model": "claude-opus-4-5", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code. Primary working directory: /home/u/proj"}],
            "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>CLAUDE.md says: be brief</system-reminder>"},
                {"type": "text", "text": prompt}]}]}


def _cc_title(prompt: str) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 512, "stream": False,
            "system": [{"type": "text", "text": "Generate a short title for this coding session."}],
            "output_config": {"format": {"type": "json_schema", "schema": {
                "type": "object", "properties": {"title": {"type": "string"}}}}},
            "messages": [{"role": "user", "content": prompt}]}


def test_claude_code_title_request_is_in_the_main_session(gateway):
    key = TEST_KEYS["anthropic"] + uuid.uuid4().hex
    sid = str(uuid.uuid4())
    prompt = "rename the config loader " + uuid.uuid4().hex[:6]
    # as Claude Code sends them: the session header on both
    _post(gateway, "/anthropic/v1/messages?beta=true", _cc_main(prompt), _cc_headers(key, sid))
    _post(gateway, "/anthropic/v1/messages?beta=true", _cc_title(prompt), _cc_headers(key, sid))
    rows = _rows(gateway, key, 2)
    assert {r["session_id"] for r in rows} == {sid}

    # without the session header (nor metadata), the title, sent after the turn began, still joins it
    key2 = key + "-noheader"
    prompt2 = "and document it " + uuid.uuid4().hex[:6]
    _post(gateway, "/anthropic/v1/messages", _cc_main(prompt2), _cc_headers(key2, None))
    _post(gateway, "/anthropic/v1/messages", _cc_title(prompt2), _cc_headers(key2, None))
    rows = _rows(gateway, key2, 2)
    assert len({r["session_id"] for r in rows}) == 1
    assert sorted(r["session_source"] for r in rows) == ["conversation", "side_call"]
    assert len(gateway.query(
        f"SELECT * FROM sessions WHERE session_id = '{rows[0]['session_id']}' AND requests = 2")) == 1


def test_a_side_call_whose_turn_never_comes_is_written_within_seconds(gateway):
    """A routing call alone (the user quit): its event waits for a turn at most a few seconds."""
    key = "AIza-" + uuid.uuid4().hex
    started = time.time()
    _routing(gateway, _gemini_headers(key), "a prompt never answered " + uuid.uuid4().hex)
    [row] = _rows(gateway, key, 1)
    assert time.time() - started < 10
    assert row["session_source"] == "conversation" and row["session_id"].startswith("conv-")


# -- opencode 1.18 --------------------------------------------------------------------------------

OPENCODE_UA = "opencode/1.18.4 ai-sdk/provider-utils/3.0.9 runtime/bun/1.3.1"


def _opencode_chat(gateway, key: str, session: str, messages: list, *, tools: bool) -> None:
    body = {"model": "gpt-5-mini", "stream": True, "stream_options": {"include_usage": True}, "messages": messages}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    _post(gateway, "/openai/v1/chat/completions", body, {
        "user-agent": OPENCODE_UA, "authorization": f"Bearer {key}", "x-session-id": session, "x-session-affinity": session})


def _opencode_run(gateway, key: str, session: str, prompt: str) -> None:
    """A title request (its own system prompt), then the agent's turns."""
    _opencode_chat(gateway, key, session, [
        {"role": "system", "content": "You are a title generator. Output only a title."},
        {"role": "user", "content": prompt}], tools=False)
    history = [{"role": "system", "content": "You are opencode, an interactive CLI tool."}, {"role": "user", "content": prompt}]
    _opencode_chat(gateway, key, session, history, tools=True)
    history += [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "README.md"}]
    _opencode_chat(gateway, key, session, history, tools=True)


def test_opencode_uses_its_session_id_across_runs_and_title_requests(gateway):
    key = TEST_KEYS["openai"] + uuid.uuid4().hex
    ses = "ses_" + uuid.uuid4().hex[:26]
    _opencode_run(gateway, key, ses, "list the files")
    _opencode_run(gateway, key, ses, "and count them")  # `opencode run -c`: the same session id
    other = "ses_" + uuid.uuid4().hex[:26]
    _opencode_run(gateway, key, other, "list the files")
    rows = _rows(gateway, key, 9)
    assert [r["session_id"] for r in rows] == [ses] * 6 + [other] * 3
    assert {(r["client"], r["client_version"], r["session_source"]) for r in rows} == {("opencode", "1.18.4", "session_header")}


# -- GitHub Copilot CLI 1.0, bring your own key ------------------------------------------------------

def _copilot_headers(key: str, initiator: str, *, first: bool, anthropic: bool = False) -> dict:
    h = {"user-agent": "Anthropic/JS 0.61.0" if anthropic else "OpenAI/JS 5.23.2", "x-stainless-lang": "js",
         "x-stainless-package-version": "0.61.0" if anthropic else "5.23.2", "x-stainless-os": "Linux",
         "x-stainless-runtime": "node", "x-initiator": initiator}
    if first:
        h["x-interaction-type"] = "conversation-user"
    if anthropic:
        h.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
    else:
        h["authorization"] = f"Bearer {key}"
    return h


def _copilot_chat_run(gateway, key: str, prompt: str) -> None:
    tools = [{"type": "function", "function": {"name": "view", "parameters": {"type": "object"}}}]
    history = [{"role": "system", "content": "You are the GitHub Copilot CLI."}, {"role": "user", "content": prompt}]
    body = {"model": "gpt-5-mini", "stream": True, "stream_options": {"include_usage": True}, "tools": tools}
    _post(gateway, "/openai/v1/chat/completions", dict(body, messages=history), _copilot_headers(key, "user", first=True))
    history += [{"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "view", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "file list"}]
    _post(gateway, "/openai/v1/chat/completions", dict(body, messages=history), _copilot_headers(key, "agent", first=False))


def test_copilot_cli_byok_runs_are_one_session_each(gateway):
    key = TEST_KEYS["openai"] + uuid.uuid4().hex
    _copilot_chat_run(gateway, key, "summarize the repo " + uuid.uuid4().hex[:6])
    _copilot_chat_run(gateway, key, "summarize the repo again " + uuid.uuid4().hex[:6])
    rows = _rows(gateway, key, 4)
    assert {r["client"] for r in rows} == {"copilot-cli"}
    assert rows[0]["session_id"] == rows[1]["session_id"] != rows[2]["session_id"] == rows[3]["session_id"]

    # COPILOT_PROVIDER_TYPE=anthropic: Messages, the Anthropic SDK's user agent
    akey = TEST_KEYS["anthropic"] + uuid.uuid4().hex
    msgs = [{"role": "user", "content": "hello " + uuid.uuid4().hex[:6]}]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1000, "stream": True, "system": "You are the GitHub Copilot CLI.",
            "tools": [{"name": "view", "input_schema": {"type": "object"}}]}
    _post(gateway, "/anthropic/v1/messages", dict(body, messages=msgs), _copilot_headers(akey, "user", first=True, anthropic=True))
    msgs += [{"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "view", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "ok"}]}]
    _post(gateway, "/anthropic/v1/messages", dict(body, messages=msgs), _copilot_headers(akey, "agent", first=False, anthropic=True))
    arows = _rows(gateway, akey, 2)
    assert {r["client"] for r in arows} == {"copilot-cli"} and len({r["session_id"] for r in arows}) == 1

    # COPILOT_PROVIDER_WIRE_API=responses: the body's prompt_cache_key (new per run) is the session
    rkey = TEST_KEYS["openai"] + uuid.uuid4().hex
    pck = uuid.uuid4().hex
    for initiator in ("user", "agent"):
        _post(gateway, "/openai/v1/responses", {"model": "gpt-5-mini", "stream": True, "prompt_cache_key": pck,
                                                "input": [{"role": "user", "content": "hi"}]},
              _copilot_headers(rkey, initiator, first=initiator == "user"))
    rrows = _rows(gateway, rkey, 2)
    assert {(r["session_id"], r["client"]) for r in rrows} == {(pck, "copilot-cli")}


# -- Qwen Code 0.15 ----------------------------------------------------------------------------------

QWEN_UA = "QwenCode/0.15.1 (linux; x64)"


def _qwen_chat(gateway, key: str, messages: list) -> None:
    _post(gateway, "/openai/v1/chat/completions", {
        "model": "qwen3-coder-plus", "stream": True, "stream_options": {"include_usage": True}, "messages": messages,
        "tools": [{"type": "function", "function": {"name": "list_directory", "parameters": {"type": "object"}}}],
    }, {"user-agent": QWEN_UA, "authorization": f"Bearer {key}", "x-stainless-lang": "js",
        "x-stainless-package-version": "5.11.0"})


def _qwen_run(gateway, key: str, listing: str, prompt: str, earlier: list | None = None) -> list:
    """A run: the environment context, the prompt, a tool round, then the memory extraction
    (the conversation under its own system prompt, plus its task). Returns the history."""
    env = [{"role": "user", "content": f"This is the Qwen Code. Today is Monday.\nMy folder:\n{listing}"},
           {"role": "assistant", "content": "Got it. Thanks for the context!"}]
    history = [{"role": "system", "content": "You are Qwen Code, an interactive CLI agent."},
               *env, *(earlier or []), {"role": "user", "content": prompt}]
    _qwen_chat(gateway, key, history)
    history += [{"role": "assistant", "content": "", "tool_calls": [{"id": "q1", "type": "function", "function": {"name": "list_directory", "arguments": "{\"path\":\".\"}"}}]},
                {"role": "tool", "tool_call_id": "q1", "content": listing}]
    _qwen_chat(gateway, key, history)
    history.append({"role": "assistant", "content": "Hello from the fake upstream."})
    _qwen_chat(gateway, key, [
        {"role": "system", "content": "You are now acting as the managed memory extraction subagent for an AI coding assistant."},
        *history[1:], {"role": "user", "content": "Scan the recent conversation history and update durable managed memory."}])
    return history[3:]


def test_qwen_code_runs_are_one_session_each_with_their_memory_extraction(gateway):
    key = TEST_KEYS["openai"] + uuid.uuid4().hex
    first = _qwen_run(gateway, key, "README.md\nsrc/", "what is in this folder " + uuid.uuid4().hex[:6])
    # `qwen -c`: the history goes on, after a freshly listed folder: the next run
    _qwen_run(gateway, key, "README.md\nsrc/\nnotes.txt", "and now?", earlier=first)
    rows = _rows(gateway, key, 6)
    assert {(r["client"], r["client_version"]) for r in rows} == {("qwen-code", "0.15.1")}
    run1, run2 = rows[:3], rows[3:]
    assert len({r["session_id"] for r in run1}) == 1 and len({r["session_id"] for r in run2}) == 1
    assert run1[0]["session_id"] != run2[0]["session_id"]
    assert [r["session_source"] for r in run1] == ["conversation", "conversation", "side_call"]
    s = gateway.query(f"SELECT requests FROM sessions WHERE session_id = '{run1[0]['session_id']}'")
    assert s == [{"requests": 3}]


def test_a_held_side_call_is_written_when_the_gateway_stops(fresh_gateway):
    """SIGTERM while a side call's event waits for its turn: written on the way out, not lost."""
    gw = fresh_gateway.start()
    key = "AIza-" + uuid.uuid4().hex
    _routing(gw, _gemini_headers(key), "quit right after this " + uuid.uuid4().hex)
    assert gw.stop() == 0
    [row] = gw.query(f"SELECT session_source FROM requests WHERE account = 'key:' || substr(sha256('{key}'), 1, 12)")
    assert row == {"session_source": "conversation"}
