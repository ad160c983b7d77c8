"""Gemini generateContent / streamGenerateContent / countTokens parsers, on llmsm's own fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsm.addons.providers import new_parser, parse_request, replay_sse
from llmsm.addons.providers.base import ParseResult, SSEEvent
from llmsm.addons.providers.gemini import GeminiCountTokensParser, GeminiParser, gemini_usage
from llmsm.analytics.events import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def stream(name: str) -> ParseResult:
    return replay_sse(GeminiParser(), [(FIXTURES / name).read_bytes()])


def body(name: str):
    return json.loads((FIXTURES / name).read_text())


def test_stream_with_cached_content_and_thoughts_over_crlf():
    result = stream("gemini_stream_cached.sse")
    assert result.usage == Usage(
        input_tokens=808,  # 9000 prompt - 8192 cached
        output_tokens=750,  # 150 candidates + 600 thoughts
        cache_read_tokens=8192,
        cache_write_tokens=0,  # Gemini bills no cache writes
        cache_write_1h_tokens=None,
        reasoning_tokens=600,
    )
    assert result.usage_raw["totalTokenCount"] == 9750
    assert (result.model, result.stop_reason, result.message_id) == ("gemini-2.5-pro", "STOP", "llmsmFixtureGemini01")
    assert result.complete and not result.stream_error
    assert result.output_text == "**Planning**Done."


def test_code_assist_envelope_is_unwrapped():
    result = stream("gemini_stream_code_assist.sse")
    assert result.usage == Usage(input_tokens=300, output_tokens=42, cache_read_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=None, reasoning_tokens=40)
    assert result.model == "gemini-2.5-pro" and result.complete
    assert result.output_text == "Hello"


def test_error_chunk_inside_a_200_stream():
    result = stream("gemini_stream_error.sse")
    assert result.stream_error is True
    assert result.error_type == "UNAVAILABLE"
    assert result.error_message.startswith("The model is overloaded")
    assert result.complete is False
    assert result.usage.input_tokens == 50 and result.usage.output_tokens == 0


def test_stream_cut_before_finish_reason_is_incomplete_with_last_usage():
    result = stream("gemini_stream_cut.sse")
    assert result.complete is False
    assert result.stop_reason is None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (20, 6)


def test_last_usage_metadata_wins_even_when_smaller():
    parser = GeminiParser()
    for prompt in (15, 15, 13):
        parser.feed_event(SSEEvent(None, json.dumps({"usageMetadata": {"promptTokenCount": prompt}})))
    assert parser.result().usage.input_tokens == 13


@pytest.mark.parametrize(("name", "error_type"), [("gemini_error_429.json", "RESOURCE_EXHAUSTED"), ("gemini_error_list_400.json", "INVALID_ARGUMENT")])
def test_error_bodies(name: str, error_type: str):
    parser = GeminiParser()
    parser.feed_json(body(name), 429)
    result = parser.result()
    assert result.error_type == error_type
    assert result.error_message
    assert result.stream_error is False and result.usage is None


def test_json_array_stream_without_alt_sse():
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "A"}]}}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}, "modelVersion": "gemini-2.5-flash"},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "ls", "args": {"p": "."}}}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9}},
    ]
    parser = GeminiParser()
    parser.feed_json(chunks, 200)
    result = parser.result()
    assert result.usage.output_tokens == 9 and result.stop_reason == "STOP"
    assert result.output_text == 'A{"p":"."}'


def test_count_tokens():
    parser = new_parser("gemini", "count_tokens")
    parser.feed_json(body("gemini_count_tokens.json"), 200)
    result = parser.result()
    assert result.counted_tokens == 31337 and result.usage is None and result.complete
    wrapped = GeminiCountTokensParser()
    wrapped.feed_json({"response": {"totalTokens": 12}}, 200)
    assert wrapped.result().counted_tokens == 12


def test_usage_none_when_metadata_has_no_counts():
    assert gemini_usage({"trafficType": "ON_DEMAND"}) is None
    parser = GeminiParser()
    parser.feed_event(SSEEvent(None, json.dumps({"candidates": []})))
    assert parser.result().usage is None


@pytest.mark.parametrize("weird", [None, "x", 3, [None, "y", 7], {"response": 5}, {"candidates": {"a": 1}}, {"usageMetadata": {"promptTokenCount": "9"}}, {"error": "plain"}])
def test_feed_json_never_raises(weird):
    for parser in (GeminiParser(), GeminiCountTokensParser()):
        parser.feed_json(weird, 200)
        parser.feed_json(weird, 500)
        assert isinstance(parser.result(), ParseResult)


def test_code_assist_request():
    info = parse_request("gemini", "generate_content", body("gemini_request_code_assist.json"))
    assert info.model == "gemini-2.5-pro"  # named by the Code Assist envelope
    assert info.system == "You are Gemini CLI."
    assert info.message_count == 3
    assert info.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '{"path":"."}'},
        {"role": "user", "content": '{"output":"a.txt"}'},
    ]


def test_plain_request_has_no_model():
    info = parse_request("gemini", "generate_content", {"contents": [{"parts": [{"text": "q"}]}]})
    assert info.model is None and info.stream is False
    assert info.messages == [{"role": "user", "content": "q"}]
