"""The official SDKs through the real gateway against the fake upstream: every route, streamed
and not, and the exact usage that lands in DuckDB."""

from __future__ import annotations

import uuid

import anthropic
import httpx
import openai
import pytest

from tests.conftest import TEST_KEYS
from tests.upstream import EXPECTED, TEXT


def _label() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def _tokens(row: dict) -> tuple:
    return (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["reasoning_tokens"])


def _anthropic(gateway, label: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic",
        default_headers={"x-llmsm-session": label}, max_retries=0,
    )


def _openai(gateway, label: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1",
        default_headers={"x-llmsm-session": label}, max_retries=0,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages(gateway, upstream, stream):
    label = _label()
    client = _anthropic(gateway, label)
    kwargs = dict(model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    if stream:
        with client.messages.stream(**kwargs) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == TEXT
        assert final.usage.output_tokens == 42
    else:
        msg = client.messages.create(**kwargs)
        assert msg.content[0].text == TEXT
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["provider"] == "anthropic" and row["api"] == "messages"
    assert row["streamed"] is stream
    assert row["outcome"] == "ok" and row["status_code"] == 200
    assert _tokens(row) == EXPECTED["anthropic"]
    assert row["usage_source"] == "reported"
    assert row["model"] == "claude-sonnet-4-6"
    assert row["stop_reason"] == "end_turn"
    assert row["client"] == "anthropic-sdk-python"
    assert row["label"] == label and row["session_source"] == "label_header"
    assert row["request_id"] == "req_upstream_1"
    assert row["path"] == "/v1/messages"
    assert row["response_bytes"] > 0 and row["request_bytes"] > 0
    assert row["duration_ms"] >= row["ttft_ms"] >= 0
    # the label header is llmsm's own and never reaches the provider
    sent = [r for r in upstream.requests if r["body"] and label.encode() in r["body"] or r["headers"].get("x-llmsm-session") == label]
    assert all("x-llmsm-session" not in {k.lower() for k in r["headers"]} for r in sent)


def test_anthropic_count_tokens(gateway):
    label = _label()
    client = _anthropic(gateway, label)
    result = client.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert result.input_tokens == 1234
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["api"] == "count_tokens"
    assert row["counted_tokens"] == 1234
    assert row["input_tokens"] is None and row["usage_source"] == "none"


@pytest.mark.parametrize("mode", ["json", "stream_usage", "stream_no_usage"])
def test_openai_chat(gateway, mode):
    label = _label()
    client = _openai(gateway, label)
    kwargs = dict(model="gpt-4o", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}])
    if mode == "json":
        out = client.chat.completions.create(**kwargs)
        assert out.choices[0].message.content == TEXT
    else:
        extra = {"stream_options": {"include_usage": True}} if mode == "stream_usage" else {}
        chunks = list(client.chat.completions.create(stream=True, **kwargs, **extra))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["api"] == "chat_completions" and row["provider"] == "openai"
    assert row["client"] == "openai-sdk-python"
    assert row["outcome"] == "ok"
    if mode == "stream_no_usage":
        # nothing reported: tiktoken counted what passed, and the row says so
        assert row["usage_source"] == "estimated"
        assert row["output_tokens"] == 6  # "Hello from the fake upstream." in o200k_base
        assert row["input_tokens"] > 10
    else:
        assert row["usage_source"] == "reported"
        assert _tokens(row) == EXPECTED["openai_chat"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_responses(gateway, stream):
    label = _label()
    client = _openai(gateway, label)
    if stream:
        events = list(client.responses.create(model="gpt-5", input="hello", stream=True))
        assert events[-1].type == "response.completed"
    else:
        out = client.responses.create(model="gpt-5", input="hello")
        assert out.output_text == TEXT
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["api"] == "responses" and row["streamed"] is stream
    assert _tokens(row) == EXPECTED["openai_responses"]
    assert row["ratelimit"] is not None and "x-codex-primary-used-percent" in row["ratelimit"]


@pytest.mark.parametrize("stream", [False, True])
def test_gemini(gateway, stream):
    label = _label()
    verb = "streamGenerateContent?alt=sse&" if stream else "generateContent?"
    url = f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:{verb}key={TEST_KEYS['gemini']}"
    r = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, headers={"x-llmsm-session": label}, timeout=10)
    assert r.status_code == 200
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["provider"] == "gemini" and row["api"] == "generate_content"
    assert row["model"] == "gemini-2.5-flash"
    assert _tokens(row) == EXPECTED["gemini"]
    assert TEST_KEYS["gemini"] not in row["path"] and "key=REDACTED" in row["path"]


def test_gemini_via_path_label_and_count_tokens(gateway):
    label = _label()
    url = f"{gateway.url}/s/{label}/gemini/v1beta/models/gemini-2.5-flash:countTokens"
    r = httpx.post(url, json={"contents": []}, headers={"x-goog-api-key": TEST_KEYS["gemini"]}, timeout=10)
    assert r.json() == {"totalTokens": 77}
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["session_source"] == "label_path" and row["counted_tokens"] == 77 and row["api"] == "count_tokens"


def test_unrouted_paths_are_answered_and_recorded_as_other(gateway):
    r = httpx.head(f"{gateway.url}/", headers={"user-agent": "Bun/1.2", "x-llmsm-session": "preflight-x"}, timeout=5)
    assert r.status_code == 200
    r = httpx.get(f"{gateway.url}/nope/v1/models", timeout=5)
    assert r.status_code == 404
    assert "no route" in r.json()["error"]["message"]
    rows = gateway.wait_rows(2, "api = 'other' AND provider IS NULL")
    assert all(row["input_tokens"] is None and row["usage_source"] == "none" for row in rows)


def test_unknown_api_path_is_passed_through_as_other(gateway):
    label = _label()
    r = httpx.get(f"{gateway.url}/openai/v1/models", headers={"authorization": f"Bearer {TEST_KEYS['openai']}", "x-llmsm-session": label}, timeout=5)
    assert r.status_code == 200 and r.json()["object"] == "list"
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["api"] == "other" and row["provider"] == "openai" and row["usage_source"] == "none"


def test_cost_is_recorded_with_published_prices(gateway):
    """The row's cost equals genai-prices' own calculation for the known usage."""
    from genai_prices import Usage, calc_price

    label = _label()
    _anthropic(gateway, label).messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    inp, out, cread, cwrite, _ = EXPECTED["anthropic"]
    # genai-prices counts the whole prompt as input, cache reads and writes included
    expected = calc_price(
        Usage(input_tokens=inp + cread + cwrite, output_tokens=out, cache_read_tokens=cread, cache_write_tokens=cwrite),
        model_ref="claude-sonnet-4-6", provider_id="anthropic",
    ).total_price
    assert row["cost_usd"] == pytest.approx(float(expected), rel=1e-9)
    assert row["cost_usd"] > 0
