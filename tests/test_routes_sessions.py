"""Routing, API classification, session attribution and client detection: pure functions."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmsm.addons import routes
from llmsm.addons.providers import PARSERS, REQUEST_PARSERS, new_parser
from llmsm.addons.providers.base import ParseResult, RequestInfo
from llmsm.analytics.apis import API_NAMES, APIS, COUNT_APIS, PROVIDERS, TURN_APIS
from llmsm.addons.sessions import SessionAttributor, account_fingerprint, detect_client


@pytest.mark.parametrize("path,route,rest,label", [
    ("/anthropic/v1/messages?beta=true", "anthropic", "/v1/messages?beta=true", None),
    ("/openai/v1/chat/completions", "openai", "/v1/chat/completions", None),
    ("/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", "gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", None),
    ("/s/my%20task/anthropic/v1/messages", "anthropic", "/v1/messages", "my task"),
    ("/anthropic", "anthropic", "/", None),
])
def test_route_path(path, route, rest, label):
    r = routes.route_path(path)
    assert r is not None and (r.route, r.path, r.label) == (route, rest, label)


@pytest.mark.parametrize("path", ["/", "/anthropicx/v1/messages", "/v1/messages", "/s/x"])
def test_unrouted(path):
    assert routes.route_path(path) is None


@pytest.mark.parametrize("provider,method,path,api", [
    ("anthropic", "POST", "/v1/messages?beta=true", "messages"),
    ("anthropic", "POST", "/v1/messages/count_tokens?beta=true", "count_tokens"),
    ("anthropic", "HEAD", "/", "other"),
    ("anthropic", "GET", "/api/claude_code/policy_limits", "other"),
    ("openai", "POST", "/v1/chat/completions", "chat_completions"),
    ("openai", "POST", "/v1/responses", "responses"),
    ("openai", "POST", "/backend-api/codex/responses", "responses"),
    ("openai", "GET", "/v1/models", "other"),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:generateContent", "generate_content"),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "generate_content"),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:countTokens", "count_tokens"),
    ("gemini", "POST", "/v1internal:streamGenerateContent?alt=sse", "generate_content"),
    (None, "POST", "/v1/messages", "other"),
])
def test_classify(provider, method, path, api):
    assert routes.classify(provider, method, path) == api


# -- the table of APIs (analytics/apis.py): a row without a parser or a route fails here ----------
@pytest.mark.parametrize("spec", APIS, ids=lambda spec: f"{spec.provider}/{spec.api}")
def test_every_api_has_its_parsers_and_a_route(spec):
    key = (spec.provider, spec.api)
    parser = new_parser(*key)
    assert type(parser).__name__ == spec.parser and parser.result() == ParseResult()
    assert type(parser).__module__ == f"llmsm.addons.providers.{spec.module}"
    assert isinstance(REQUEST_PARSERS[key]({}), RequestInfo)
    assert spec.provider in PROVIDERS and spec.provider in routes.DEFAULT_UPSTREAMS
    assert routes.route_path(f"/{spec.provider}/v1/x").route == spec.provider  # its base-URL route
    assert spec.paths and spec.api != "other" and (spec.api in TURN_APIS) != (spec.api in COUNT_APIS)
    assert spec.api in API_NAMES


def test_the_registry_holds_the_apis_of_the_table_and_nothing_else():
    assert set(PARSERS) == set(REQUEST_PARSERS) == {(spec.provider, spec.api) for spec in APIS}
    assert set(routes.KNOWN_API_HOSTS.values()) == set(PROVIDERS) == {spec.provider for spec in APIS}


_PATHS = [(spec, method, regex) for spec in APIS for method, regex in spec.paths]


@given(data=st.data())
@pytest.mark.parametrize("spec,method,regex", _PATHS, ids=[f"{s.api}:{m}:{r}" for s, m, r in _PATHS])
def test_every_path_of_the_table_classifies_as_its_api(spec, method, regex, data):
    # Paths as the regex describes them (no query, no trailing slash: classify strips those).
    path = data.draw(st.from_regex(regex, fullmatch=True).filter(lambda p: "?" not in p and not p.endswith("/")))
    assert routes.classify(spec.provider, method, path) == spec.api
    assert routes.classify(spec.provider, method, path + "?alt=sse") == spec.api
    assert routes.classify(spec.provider, "PUT", path) == "other"


def test_upstream_option_parsing():
    ups = routes.build_upstreams(["openai=http://127.0.0.1:9000/proxy/"])
    assert ups["openai"].url == "http://127.0.0.1:9000/proxy"
    assert ups["anthropic"].url == "https://api.anthropic.com"
    for bad in ["openai", "openai=", "=http://x", "foo=http://x", "openai=ftp://x", "openai=http://", "openai=http://x:99999"]:
        with pytest.raises(routes.RouteError):
            routes.build_upstreams([bad])


def test_redact_path():
    assert routes.redact_path("/v1beta/models/m:generateContent?alt=sse&key=AIzaSECRET") == "/v1beta/models/m:generateContent?alt=sse&key=REDACTED"


@pytest.mark.parametrize("headers,client,version", [
    ({"user-agent": "claude-cli/2.1.3 (external, cli)"}, "claude-code", "2.1.3"),
    ({"user-agent": "codex_exec/0.169.0 (Linux; x86_64)", "originator": "codex_exec"}, "codex", "0.169.0"),
    ({"user-agent": "codex_cli_rs/0.50.0"}, "codex", "0.50.0"),
    ({"user-agent": "GeminiCLI/0.61.0/gemini-2.5-pro (linux; x64)"}, "gemini-cli", "0.61.0"),
    ({"user-agent": "GeminiCLI-tui/0.61.0/gemini-3-pro-preview (linux; x64; terminal)"}, "gemini-cli", "0.61.0"),
    ({"user-agent": "GeminiCLI-a2a-server/0.62.1/gemini-3-pro (linux; x64)"}, "gemini-cli", "0.62.1"),
    ({"user-agent": "opencode/1.18.4 ai-sdk/provider-utils/3.0.9 runtime/bun/1.3.1"}, "opencode", "1.18.4"),
    ({"user-agent": "QwenCode/0.15.1 (linux; x64)", "x-stainless-lang": "js"}, "qwen-code", "0.15.1"),
    ({"user-agent": "OpenAI/JS 5.23.2", "x-stainless-lang": "js", "x-initiator": "agent"}, "copilot-cli", None),
    ({"user-agent": "Anthropic/JS 0.61.0", "x-interaction-type": "conversation-user"}, "copilot-cli", None),
    ({"user-agent": "Anthropic/Python 0.69.0"}, "anthropic-sdk-python", "0.69.0"),
    ({"user-agent": "Anthropic/JS 0.60.0"}, "anthropic-sdk-typescript", "0.60.0"),
    ({"user-agent": "OpenAI/Python 1.99.0"}, "openai-sdk-python", "1.99.0"),
    ({"user-agent": "OpenAI/JS 5.0.0"}, "openai-sdk-node", "5.0.0"),
    ({"user-agent": "curl/8.5.0"}, "curl", "8.5.0"),
    ({"user-agent": "Bun/1.2.0"}, "unknown", None),
])
def test_detect_client(headers, client, version):
    assert detect_client(headers) == (client, version)


def test_account_fingerprint_never_contains_the_key():
    fp = account_fingerprint({"x-api-key": "sk-ant-secret"})
    assert fp.startswith("key:") and "secret" not in fp
    assert fp == account_fingerprint({"authorization": "Bearer sk-ant-secret"})
    assert account_fingerprint({}) is None


def _req(messages, **kw) -> RequestInfo:
    system = kw.pop("system", None)
    return RequestInfo(read_conversation=lambda: (messages, system), **kw)


def test_attribution_rule_order():
    a = SessionAttributor()
    info = _req([{"role": "user", "content": "x"}], body_session_id="meta-1", prompt_cache_key="pck")
    h = {"x-claude-code-session-id": "cc-1", "session-id": "codex-1"}
    assert a.attribute(dict(h, **{"x-llmsm-session": "mine"}), info, now=0).source == "label_header"
    assert a.attribute(h, info, path_label="p", now=0).session_id == "p"
    assert a.attribute(h, info, proxy_user="u", now=0).source == "label_proxy_user"
    assert a.attribute(h, info, now=0).session_id == "cc-1"
    assert a.attribute({"session-id": "codex-1"}, info, now=0).session_id == "meta-1"
    assert a.attribute({"session-id": "codex-1"}, _req([]), now=0).session_id == "codex-1"
    assert a.attribute({}, _req([], prompt_cache_key="pck"), now=0).source == "prompt_cache_key"


def test_subagent_keeps_parent_session():
    a = SessionAttributor()
    s = a.attribute({"x-claude-code-session-id": "cc-1", "x-claude-code-agent-id": "ag-7", "x-claude-code-parent-agent-id": "ag-1"}, _req([]), now=0)
    assert (s.session_id, s.agent_id, s.parent_agent_id) == ("cc-1", "ag-7", "ag-1")


def test_conversation_continuity():
    a = SessionAttributor()
    system = "You are a coding assistant. " * 10
    u1 = {"role": "user", "content": "fix the bug"}
    r1 = {"role": "assistant", "content": "done"}
    u2 = {"role": "user", "content": "now add a test"}
    s1 = a.attribute({}, _req([u1], system=system), client="c", account="k", now=0).session_id
    s2 = a.attribute({}, _req([u1, r1, u2], system=system), client="c", account="k", now=10).session_id
    assert s1 == s2 and s1.startswith("conv-")
    # same first message later in another session: never merged on the first message alone
    s3 = a.attribute({}, _req([u1], system=system), client="c", account="k", now=1000).session_id
    assert s3 != s1
    # another account with the same history is another session
    s4 = a.attribute({}, _req([u1, r1, u2], system=system), client="c", account="other", now=20).session_id
    assert s4 != s1
    # a quick retry of the one-message request stays in its session
    s5 = a.attribute({}, _req([u1], system=system), client="c", account="k", now=1010).session_id
    assert s5 == s3
    # a long idle gap starts a new session
    s6 = a.attribute({}, _req([u1, r1, u2, r1, u2], system=system), client="c", account="k", now=10 + 3 * 3600).session_id
    assert s6 != s1


# -- side calls (rule 5) ------------------------------------------------------------------------

def _turn(text: str, *history, side: bool = False, system: str = "agent") -> RequestInfo:
    messages = [*history, {"role": "user", "content": text}]
    return _req(messages, system=system, side_call=side, newest_user_parts=(text,))


def _settled(a: SessionAttributor, identity) -> tuple[str, str]:
    """Settle a side call's event outside an event loop: written at once, as it stands."""
    class Event:
        session_id, session_source = identity.session_id, identity.source

    out: list = []
    a.settle(Event(), out.append)
    return out[0].session_id, out[0].session_source


GEMINI = dict(client="gemini-cli", account="key:1", provider="gemini")


def test_side_call_joins_the_next_turn_sharing_its_text_else_the_one_before():
    a = SessionAttributor()
    route1 = a.attribute({}, _turn("fix it", side=True, system="router"), now=0, **GEMINI)
    main1 = a.attribute({}, _turn("fix it"), now=1, **GEMINI)
    assert _settled(a, route1) == (main1.session_id, "side_call")
    # a side call after its turn (a title): the turn before it
    title = a.attribute({}, _turn("fix it", side=True, system="title"), now=2, **GEMINI)
    assert _settled(a, title) == (main1.session_id, "side_call")
    # another run whose prompt is the same: its routing call goes with the turn that follows it
    route2 = a.attribute({}, _turn("fix it", side=True, system="router"), now=5, **GEMINI)
    main2 = a.attribute({}, _turn("fix it", {"role": "user", "content": "other context"}), now=6, **GEMINI)
    assert main2.session_id != main1.session_id
    assert _settled(a, route2) == (main2.session_id, "side_call")
    # other text, another key, too late, or an SDK script: never joined
    for req, kw, now in (
        (_turn("something else", side=True, system="router"), GEMINI, 7),
        (_turn("fix it", side=True, system="router"), dict(GEMINI, account="key:2"), 8),
        (_turn("fix it", side=True, system="router"), GEMINI, 100),
        (_turn("fix it", side=True, system="router"), dict(GEMINI, client="openai-sdk-python"), 9),
    ):
        sid, source = _settled(a, a.attribute({}, req, now=now, **kw))
        assert source == "conversation" and sid not in (main1.session_id, main2.session_id)


def test_a_fork_of_a_conversation_joins_it():
    """Qwen Code's memory extraction: the conversation under another system prompt, plus a task."""
    a = SessionAttributor()
    qwen = dict(client="qwen-code", account="key:q", provider="openai")
    history = [{"role": "system", "content": "main"}, {"role": "user", "content": "ctx"},
               {"role": "assistant", "content": "ok"}, {"role": "user", "content": "list files"}]
    main = a.attribute({}, _req(history), now=0, **qwen)
    done = [*history[1:], {"role": "assistant", "content": "two files"}]
    fork = a.attribute({}, _req([{"role": "system", "content": "extract memories"}, *done,
                                 {"role": "user", "content": "update memory"}]), now=30, **qwen)
    assert (fork.session_id, fork.source) == (main.session_id, "side_call")
    # an SDK script with the same messages under another system prompt stays apart
    sdk = dict(qwen, client="openai-sdk-python")
    s1 = a.attribute({}, _req(history), now=0, **sdk)
    s2 = a.attribute({}, _req([{"role": "system", "content": "variant B"}, *done]), now=1, **sdk)
    assert s1.session_id != s2.session_id


def test_a_held_side_call_goes_with_the_turn_that_comes_or_alone_after_the_hold(monkeypatch):
    from llmsm.addons import sessions

    monkeypatch.setattr(sessions, "SIDE_CALL_HOLD_S", 0.2)

    class Event:
        def __init__(self, identity):
            self.session_id, self.session_source = identity.session_id, identity.source

    async def scenario() -> list:
        a = SessionAttributor()
        out: list = []
        route = a.attribute({}, _turn("go", side=True), now=0, **GEMINI)
        a.settle(Event(route), out.append)  # its turn has not come: held
        assert out == []
        main = a.attribute({}, _turn("go"), now=1, **GEMINI)
        assert [(e.session_id, e.session_source) for e in out] == [(main.session_id, "side_call")]
        lone = a.attribute({}, _turn("never answered", side=True), now=2, **GEMINI)
        a.settle(Event(lone), out.append)
        await asyncio.sleep(0.5)
        assert [(e.session_id, e.session_source) for e in out[1:]] == [(lone.session_id, "conversation")]
        return out

    assert len(asyncio.run(scenario())) == 2
