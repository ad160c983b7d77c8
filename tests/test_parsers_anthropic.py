"""Anthropic Messages and count_tokens parsers, on llmsm's own fixtures (tests/fixtures/providers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsm.addons.providers import new_parser, parse_request, replay_sse
from llmsm.addons.providers.anthropic import (
    AnthropicCountTokensParser,
    AnthropicMessagesParser,
    anthropic_usage,
    session_id_from_user_id,
)
from llmsm.addons.providers.base import ParseResult, SSEEvent
from llmsm.analytics.events import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def stream(name: str) -> ParseResult:
    return replay_sse(AnthropicMessagesParser(), [(FIXTURES / name).read_bytes()])


def body(name: str):
    return json.loads((FIXTURES / name).read_text())


def test_stream_with_cache_writes_thinking_and_tool_use():
    result = stream("anthropic_stream_cache_1h.sse")
    assert result.usage == Usage(
        input_tokens=12,
        output_tokens=345,  # message_delta's total, not message_start's 2
        cache_read_tokens=2048,
        cache_write_tokens=3000,
        cache_write_1h_tokens=2000,
        reasoning_tokens=None,
    )
    assert result.model == "claude-opus-4-1-20250805"
    assert result.message_id == "msg_01LlmsmFixtureCache1h"
    assert result.stop_reason == "tool_use"
    assert result.complete and not result.stream_error
    # the unknown event after message_delta must not touch the usage
    assert result.usage_raw["output_tokens"] == 345
    assert result.usage_raw["cache_creation"] == {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}
    assert result.output_text == 'Let me check the file.Reading it now — ünïcode ✓{"file_path": "/tmp/a.py"}'


def test_mid_stream_error_keeps_start_usage_and_flags_the_stream():
    result = stream("anthropic_stream_overloaded.sse")
    assert result.stream_error is True
    assert result.error_type == "overloaded_error"
    assert result.error_message == "Overloaded"
    assert result.complete is False
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cache_read_tokens, result.usage.output_tokens) == (4, 51200, 1)
    assert result.output_text == "Sure, I"


def test_cut_stream_is_incomplete_and_the_broken_last_event_is_ignored():
    result = stream("anthropic_stream_cut.sse")
    assert result.complete is False
    assert result.stream_error is False
    assert result.output_text == "Partial answer"
    assert result.usage.input_tokens == 4
    assert result.stop_reason is None


def test_compaction_bills_the_sum_of_iterations():
    result = stream("anthropic_stream_compaction.sse")
    assert result.usage == Usage(
        input_tokens=307,
        output_tokens=160,
        cache_read_tokens=90000,
        cache_write_tokens=1700,
        cache_write_1h_tokens=1200,
        reasoning_tokens=None,
    )
    # usage_raw keeps the whole merged object, iterations included
    assert result.usage_raw["input_tokens"] == 300
    assert [it["type"] for it in result.usage_raw["iterations"]] == ["compaction", "message"]


def test_message_delta_overwrites_only_non_null_fields():
    parser = AnthropicMessagesParser()
    parser.feed_event(SSEEvent("message_start", json.dumps({"type": "message_start", "message": {"usage": {"input_tokens": 2050, "cache_read_input_tokens": 7, "output_tokens": 1}}})))
    parser.feed_event(SSEEvent("message_delta", json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"input_tokens": 31772, "cache_read_input_tokens": None, "output_tokens": 644}})))
    usage = parser.result().usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (31772, 7, 644)


def test_an_earlier_result_is_not_changed_by_later_events():
    parser = AnthropicMessagesParser()
    parser.feed_event(SSEEvent("message_start", json.dumps({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}})))
    early = parser.result()
    parser.feed_event(SSEEvent("message_delta", json.dumps({"type": "message_delta", "usage": {"output_tokens": 50}})))
    assert early.usage_raw == {"input_tokens": 9, "output_tokens": 1}
    assert parser.result().usage_raw == {"input_tokens": 9, "output_tokens": 50}


def test_event_type_is_taken_from_the_event_line_when_data_has_none():
    parser = AnthropicMessagesParser()
    parser.feed_event(SSEEvent("message_stop", "{}"))
    assert parser.result().complete is True


def test_non_json_error_event_is_still_a_stream_error():
    parser = AnthropicMessagesParser()
    parser.feed_event(SSEEvent("error", "upstream went away"))
    result = parser.result()
    assert result.stream_error and result.error_message == "upstream went away"


def test_json_message_body():
    parser = AnthropicMessagesParser()
    parser.feed_json(body("anthropic_message_tool_use.json"), 200)
    result = parser.result()
    assert result.usage == Usage(input_tokens=5, output_tokens=61, cache_read_tokens=12000, cache_write_tokens=700, cache_write_1h_tokens=700)
    assert result.usage_raw["service_tier"] == "standard"
    assert (result.model, result.stop_reason, result.message_id) == ("claude-sonnet-4-5-20250929", "tool_use", "msg_01LlmsmFixtureJson")
    assert result.complete and not result.stream_error
    assert result.output_text == 'Running the tests.{"command":"pytest -q"}'


@pytest.mark.parametrize(
    ("name", "status", "error_type", "message_start"),
    [
        ("anthropic_error_429.json", 429, "rate_limit_error", "Number of request tokens"),
        ("anthropic_error_529.json", 529, "overloaded_error", "Overloaded"),
        ("anthropic_error_500.json", 500, "api_error", "Internal server error"),
    ],
)
def test_error_bodies(name: str, status: int, error_type: str, message_start: str):
    for parser in (AnthropicMessagesParser(), AnthropicCountTokensParser()):
        parser.feed_json(body(name), status)
        result = parser.result()
        assert result.error_type == error_type
        assert result.error_message.startswith(message_start)
        assert result.usage is None and result.usage_raw is None
        assert result.stream_error is False  # an HTTP error, not an error inside a 200
        assert result.complete is True  # the whole body was read


def test_error_object_in_a_200_body_counts_as_a_stream_error():
    parser = AnthropicMessagesParser()
    parser.feed_json(body("anthropic_error_529.json"), 200)
    assert parser.result().stream_error is True


@pytest.mark.parametrize("weird", [None, "", "<html>", 413, 4.5, [], [1, 2], {"type": 3}, {"error": 5}, {"usage": "lots"}, {"content": "x"}])
def test_feed_json_never_raises_on_weird_bodies(weird):
    for parser in (AnthropicMessagesParser(), AnthropicCountTokensParser()):
        parser.feed_json(weird, 413)
        parser.feed_json(weird, 200)
        assert isinstance(parser.result(), ParseResult)


def test_non_json_413_page_records_nothing():
    parser = AnthropicMessagesParser()
    parser.feed_json((FIXTURES / "anthropic_error_413.html").read_text(), 413)
    result = parser.result()
    assert result.usage is None and result.error_type is None and result.complete is False


def test_count_tokens_is_a_count_not_usage():
    parser = new_parser("anthropic", "count_tokens")
    parser.feed_json(body("anthropic_count_tokens.json"), 200)
    result = parser.result()
    assert result.counted_tokens == 20481
    assert result.usage is None
    assert result.complete


def test_usage_is_none_when_nothing_was_reported():
    parser = AnthropicMessagesParser()
    parser.feed_event(SSEEvent("ping", '{"type": "ping"}'))
    result = parser.result()
    assert result.usage is None and result.usage_raw is None
    assert anthropic_usage({"service_tier": "standard"}) is None


def test_unknown_1h_split_stays_unknown():
    usage = anthropic_usage({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 50})
    assert usage.cache_write_tokens == 50 and usage.cache_write_1h_tokens is None


# -- requests -------------------------------------------------------------------------------
def test_claude_code_request():
    info = parse_request("anthropic", "messages", body("anthropic_request_claude_code.json"))
    assert info.model == "claude-opus-4-1-20250805"
    assert info.stream is True
    assert info.message_count == 3
    assert info.tool_errors == 1  # one tool_result with is_error: true in the last user message
    assert info.cache_ttl == "1h"
    assert info.body_session_id == "3f0c7a52-8d1e-4b57-9a44-2e8b1f6c0d93"
    assert info.system == "You are Claude Code.\nProject instructions."
    assert [m["role"] for m in info.messages] == ["user", "assistant", "user"]
    assert info.messages[1]["content"] == 'Running it.\n{"command":"pytest"}\n{"command":"ls"}'
    assert info.messages[2]["content"] == "exit code 1\na.py b.py"  # image data is not text


def test_legacy_user_id_session():
    user_id = "user_9f2c1e_account_6a1b2c3d-0000-4000-8000-000000000001_session_0e1d2c3b-4a59-4687-8a9b-abcdefabcdef"
    assert session_id_from_user_id(user_id) == "0e1d2c3b-4a59-4687-8a9b-abcdefabcdef"
    assert session_id_from_user_id("someone@example.com") is None
    assert session_id_from_user_id('{"device_id": "d"}') is None
    assert session_id_from_user_id("{not json") is None


@pytest.mark.parametrize(
    ("request_body", "ttl"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, None),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}, "5m"),
        ({"cache_control": {"type": "ephemeral"}, "messages": []}, "5m"),
        ({"tools": [{"name": "t", "cache_control": {"type": "ephemeral", "ttl": "1h"}}], "messages": []}, "1h"),
        ({"system": "plain", "messages": [{"role": "user", "content": [{"type": "tool_result", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}]}, "1h"),
    ],
)
def test_cache_ttl(request_body, ttl):
    assert parse_request("anthropic", "messages", request_body).cache_ttl == ttl


def test_tool_errors_look_at_the_last_user_message_only():
    messages = [
        {"role": "user", "content": [{"type": "tool_result", "is_error": True}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "tool_result", "is_error": False}, {"type": "tool_result"}]},
    ]
    assert parse_request("anthropic", "messages", {"messages": messages}).tool_errors == 0
    assert parse_request("anthropic", "messages", {"messages": messages[:1]}).tool_errors == 1
    assert parse_request("anthropic", "messages", {"messages": []}).tool_errors is None


@pytest.mark.parametrize(
    "weird",
    [{}, {"messages": "x"}, {"messages": [1, None, {"role": 5, "content": {"a": 1}}]}, {"metadata": {"user_id": 7}}, {"system": [None, 3]}, {"model": 12, "stream": "yes"}],
)
def test_parse_request_never_raises(weird):
    info = parse_request("anthropic", "messages", weird)
    assert info.stream is False
    assert info.model is None
