"""Routing, API classification, session attribution and client detection: pure functions."""

from __future__ import annotations

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
