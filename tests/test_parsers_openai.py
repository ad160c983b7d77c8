"""OpenAI Chat Completions and Responses parsers, on llmsm's own fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsm.addons.providers import new_parser, parse_request, replay_sse
from llmsm.addons.providers.base import ParseResult, SSEEvent
from llmsm.addons.providers.openai_chat import OpenAIChatParser
from llmsm.addons.providers.openai_responses import OpenAIResponsesParser
from llmsm.analytics.events import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def chat_stream(name: str) -> ParseResult:
    return replay_sse(OpenAIChatParser(), [(FIXTURES / name).read_bytes()])


def responses_stream(name: str) -> ParseResult:
    return replay_sse(OpenAIResponsesParser(), [(FIXTURES / name).read_bytes()])


def body(name: str):
    return json.loads((FIXTURES / name).read_text())


# -- chat completions: streams ----------------------------------------------------------------
def test_chat_stream_with_crlf_comments_and_include_usage():
    result = chat_stream("openai_chat_stream_crlf_usage.sse")
    assert result.usage == Usage(
        input_tokens=136,  # 5000 prompt - 4864 cached
        output_tokens=420,
        cache_read_tokens=4864,
        cache_write_tokens=0,  # OpenAI bills no cache writes
        cache_write_1h_tokens=None,
        reasoning_tokens=256,
    )
    assert result.usage_raw["total_tokens"] == 5420
    assert (result.model, result.message_id, result.stop_reason) == ("gpt-4.1-2025-04-14", "chatcmpl-LlmsmFixture01", "tool_calls")
    assert result.complete and not result.stream_error
    assert result.output_text == 'Hello wörld{"q":1}'


def test_chat_stream_cut_after_finish_reason_has_no_usage_and_is_incomplete():
    result = chat_stream("openai_chat_stream_cut_before_usage.sse")
    assert result.usage is None and result.usage_raw is None
    assert result.stop_reason == "tool_calls"
    assert result.complete is False  # the usage chunk and [DONE] were lost


def test_chat_usage_chunk_after_finish_completes_even_without_done():
    data = (FIXTURES / "openai_chat_stream_crlf_usage.sse").read_bytes().replace(b"data: [DONE]\r\n\r\n", b"")
    result = replay_sse(OpenAIChatParser(), [data])
    assert result.complete is True
    assert result.usage.output_tokens == 420


def test_chat_error_chunk_without_done():
    result = chat_stream("openai_chat_stream_error_chunk.sse")
    assert result.stream_error is True
    assert result.error_type == "server_error"
    assert result.error_message == "Upstream provider timed out"
    assert result.complete is False
    assert result.usage is None
    assert result.output_text == "Par"


def test_chat_event_error_with_non_json_data():
    parser = OpenAIChatParser()
    parser.feed_event(SSEEvent("error", "stream reset"))
    result = parser.result()
    assert result.stream_error and result.error_message == "stream reset" and not result.complete


def test_reported_cache_writes_are_part_of_the_prompt():
    parser = OpenAIChatParser()
    details = {"cached_tokens": 600, "cache_write_tokens": 300}
    parser.feed_json({"usage": {"prompt_tokens": 1000, "completion_tokens": 5, "prompt_tokens_details": details}}, 200)
    usage = parser.result().usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (100, 600, 300)
    assert usage.prompt_tokens == 1000


def test_chat_last_non_null_usage_wins():
    parser = OpenAIChatParser()
    parser.feed_event(SSEEvent(None, json.dumps({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 1}})))
    parser.feed_event(SSEEvent(None, json.dumps({"choices": [], "usage": None})))
    parser.feed_event(SSEEvent(None, json.dumps({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 7}})))
    parser.feed_event(SSEEvent(None, "[DONE]  "))
    result = parser.result()
    assert result.usage.output_tokens == 7 and result.usage.input_tokens == 10
    assert result.complete


# -- chat completions: JSON ---------------------------------------------------------------------
def test_chat_completion_json_with_tool_calls_and_reasoning():
    parser = new_parser("openai", "chat_completions")
    parser.feed_json(body("openai_chat_completion_tools.json"), 200)
    result = parser.result()
    assert result.usage == Usage(input_tokens=1076, output_tokens=350, cache_read_tokens=1024, cache_write_tokens=0, cache_write_1h_tokens=None, reasoning_tokens=320)
    assert (result.model, result.stop_reason) == ("o4-mini-2025-04-16", "tool_calls")
    assert result.output_text == '{"path":"README.md"}'
    assert result.complete


@pytest.mark.parametrize(
    ("name", "status", "error_type", "message_start"),
    [("openai_error_429.json", 429, "tokens", "Rate limit reached"), ("openai_error_500.json", 500, "server_error", "The server had an error")],
)
@pytest.mark.parametrize("parser_class", [OpenAIChatParser, OpenAIResponsesParser])
def test_openai_error_bodies(parser_class, name, status, error_type, message_start):
    parser = parser_class()
    parser.feed_json(body(name), status)
    result = parser.result()
    assert result.error_type == error_type
    assert result.error_message.startswith(message_start)
    assert result.usage is None and result.stream_error is False


@pytest.mark.parametrize("parser_class", [OpenAIChatParser, OpenAIResponsesParser])
@pytest.mark.parametrize("weird", [None, "<html>413</html>", 7, [], {"choices": "x", "usage": [1]}, {"usage": {"prompt_tokens": "12"}}, {"output": [None, 3]}])
def test_feed_json_never_raises(parser_class, weird):
    parser = parser_class()
    parser.feed_json(weird, 413)
    parser.feed_json(weird, 200)
    result = parser.result()
    assert result.usage is None


def test_chat_request():
    info = parse_request("openai", "chat_completions", body("openai_chat_request.json"))
    assert (info.model, info.stream, info.include_usage) == ("gpt-4.1", True, True)
    assert info.message_count == 4
    assert info.prompt_cache_key == "repo-llmsm"
    assert info.tool_errors is None
    assert info.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is in the README?"},
        {"role": "assistant", "content": '{"path":"README.md"}'},
        {"role": "tool", "content": "# llmsm"},
    ]


def test_chat_request_without_stream_options():
    info = parse_request("openai", "chat_completions", {"model": "gpt-4o", "stream": True, "messages": []})
    assert info.stream is True and info.include_usage is False


# -- responses ----------------------------------------------------------------------------------
def test_responses_incomplete_is_terminal_with_usage():
    result = responses_stream("openai_responses_stream_incomplete.sse")
    assert result.usage == Usage(input_tokens=480, output_tokens=2048, cache_read_tokens=11520, cache_write_tokens=0, cache_write_1h_tokens=None, reasoning_tokens=1900)
    assert result.stop_reason == "max_output_tokens"
    assert result.complete and not result.stream_error
    assert (result.model, result.message_id) == ("gpt-5-codex", "resp_llmsm_fixture_01")
    assert result.output_text == "The answer is long"


def test_responses_failed_is_a_stream_error_that_still_has_usage():
    result = responses_stream("openai_responses_stream_failed.sse")
    assert result.stream_error is True
    assert result.error_type == "server_error"
    assert result.error_message == "An error occurred while processing your request."
    assert result.complete is True
    assert result.stop_reason == "failed"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (800, 3)
    assert result.output_text == "*** Begin Patch"


def test_responses_error_event_without_terminal():
    result = responses_stream("openai_responses_stream_error_event.sse")
    assert result.stream_error is True
    assert result.error_type == "rate_limit_exceeded"
    assert result.error_message == "Rate limit reached for gpt-5-codex."
    assert result.complete is False
    assert result.usage is None


def test_responses_websocket_messages():
    parser = OpenAIResponsesParser()
    for line in (FIXTURES / "openai_responses_ws_messages.jsonl").read_text().splitlines():
        parser.feed_message(json.loads(line))
    result = parser.result()
    assert result.usage == Usage(input_tokens=384, output_tokens=90, cache_read_tokens=6016, cache_write_tokens=0, cache_write_1h_tokens=None, reasoning_tokens=64)
    assert result.complete and result.stop_reason == "completed"
    assert result.output_text == 'Thinking about it{"cmd":"ls"}'


def test_responses_websocket_and_sse_give_the_same_result():
    lines = (FIXTURES / "openai_responses_ws_messages.jsonl").read_text().splitlines()
    by_message, by_event = OpenAIResponsesParser(), OpenAIResponsesParser()
    for line in lines:
        by_message.feed_message(json.loads(line))
        by_event.feed_event(SSEEvent(None, line))
    assert by_message.result() == by_event.result()


@pytest.mark.parametrize("weird", [None, 3, "x", {"type": 5}, {"type": "response.completed", "response": "no"}, {"type": "error", "error": [1]}])
def test_feed_message_never_raises(weird):
    parser = OpenAIResponsesParser()
    parser.feed_message(weird)  # type: ignore[arg-type]
    assert parser.result().usage is None


def test_responses_json_body_error_in_200():
    parser = OpenAIResponsesParser()
    parser.feed_json({"id": "resp_1", "status": "failed", "model": "gpt-5", "error": {"code": "server_error", "message": "boom"}, "usage": None}, 200)
    result = parser.result()
    assert result.stream_error and result.error_type == "server_error" and result.stop_reason == "failed"


def test_responses_request_from_codex():
    info = parse_request("openai", "responses", body("openai_responses_request_codex.json"))
    assert (info.model, info.stream) == ("gpt-5-codex", True)
    assert info.prompt_cache_key == "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert info.body_session_id is None  # the session addon reads prompt_cache_key itself
    assert info.system == "You are Codex."
    assert info.message_count == 5
    assert info.tool_errors is None
    assert info.messages == [
        {"role": "developer", "content": "<permissions>...</permissions>"},
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": '{"command":["ls"]}'},
        {"role": "tool", "content": "README.md\nsrc"},
    ]


def test_responses_request_with_string_input_and_websocket_frame():
    info = parse_request("openai", "responses", {"model": "gpt-5", "input": "hello"})
    assert info.messages == [{"role": "user", "content": "hello"}] and info.message_count == 1
    frame = {"type": "response.create", "response": {"model": "gpt-5-codex", "input": [], "prompt_cache_key": "t1"}}
    info = parse_request("openai", "responses", frame)
    assert (info.model, info.prompt_cache_key, info.message_count) == ("gpt-5-codex", "t1", 0)
