"""Every expected value that the real captures' SOURCES.md lists, checked against the parsers.

The captures are public response bodies (see SOURCES.md for provenance); they live outside the
repository and are read in place. Set LLMSM_REAL_FIXTURES to read them from elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from llmsm.addons.providers import new_parser, replay_sse
from llmsm.addons.providers.base import ParseResult
from llmsm.addons.providers.sse import SSEDecoder
from llmsm.analytics.events import Usage

REAL = Path(os.environ.get("LLMSM_REAL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared/fixtures/real")

pytestmark = [
    pytest.mark.real_captures,
    pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason=f"real captures not found at {REAL}"),
]

MESSAGES = ("anthropic", "messages")
ANTHROPIC_COUNT = ("anthropic", "count_tokens")
CHAT = ("openai", "chat_completions")
RESPONSES = ("openai", "responses")
GEMINI = ("gemini", "generate_content")


def usage(input_tokens, output_tokens, cache_read=0, reasoning=0, cache_write=0) -> Usage:
    """OpenAI / Gemini: cache writes cost nothing extra there, so they are 0."""
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=None,
        reasoning_tokens=reasoning,
    )


def anthropic_usage(input_tokens, output_tokens, cache_read=0, cache_write=0, write_1h=0) -> Usage:
    """Anthropic: cache writes (and their 1 h part) reported, thinking not split out."""
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=None,
    )


# file -> (parser, HTTP status, expected ParseResult fields). Every field listed is asserted;
# `usage_raw` entries are checked key by key against the provider's raw object.
EXPECTED: dict[str, tuple[tuple[str, str], int, dict[str, Any]]] = {
    # -- Anthropic ------------------------------------------------------------------------
    "anthropic_sse_1.sse": (MESSAGES, 200, dict(
        model="claude-sonnet-4-5-20250929", stop_reason="end_turn", complete=True, stream_error=False,
        usage=anthropic_usage(135, 10), usage_raw={"output_tokens": 10, "service_tier": "standard"},
        start_usage=anthropic_usage(135, 1), message_id="msg_013nnniYDrJDocdy5nrMU7cH",
        output_text="[12345,67890]")),
    "anthropic_sse_2.sse": (MESSAGES, 200, dict(
        model="claude-haiku-4-5-20251001", stop_reason="tool_use", complete=True,
        usage=anthropic_usage(656, 74), start_usage=anthropic_usage(656, 26),
        output_text='{"location": "San Francisco, CA", "units": "f"}')),
    "anthropic_sse_3.sse": (MESSAGES, 200, dict(
        model="claude-sonnet-4-6", stop_reason="end_turn", complete=True,
        start_usage=anthropic_usage(100, 7, cache_read=55096),
        # billed = sum over iterations: 100+181 uncached, 55096 cache read, 83+8 output
        usage=anthropic_usage(281, 91, cache_read=55096), prompt_tokens=55377,
        usage_raw={"input_tokens": 181, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 8},
        iterations=[("compaction", 100, 55096, 83), ("message", 181, 0, 8)])),
    "anthropic_sse_4.sse": (MESSAGES, 200, dict(
        model="claude-sonnet-4-20250514", stop_reason="end_turn", complete=True,
        start_usage=anthropic_usage(2050, 1), usage=anthropic_usage(31772, 644),
        usage_raw={"server_tool_use": {"web_search_requests": 2}})),
    "anthropic_sse_5.sse": (MESSAGES, 200, dict(
        model="claude-sonnet-4-20250514", stop_reason="end_turn", complete=True, usage=anthropic_usage(43, 282))),
    "anthropic_sse_6.sse": (MESSAGES, 200, dict(
        usage=None, usage_raw=None, complete=False, stream_error=True,
        error_type="overloaded_error", error_message="Overloaded")),
    "anthropic_json_1.json": (MESSAGES, 200, dict(
        model="claude-sonnet-4-5-20250929", stop_reason="end_turn", complete=True, usage=anthropic_usage(249, 26),
        usage_raw={"cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}, "service_tier": "standard"})),
    "anthropic_json_2.json": (MESSAGES, 200, dict(
        model="claude-sonnet-4-5-20250929", stop_reason="end_turn",
        usage=anthropic_usage(3, 33, cache_read=1111, cache_write=418, write_1h=0), prompt_tokens=1532,
        usage_raw={"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 418}})),
    # request_id and x-should-retry of the two error captures come from response headers,
    # which the gateway reads; the parser reports the error body.
    "anthropic_json_3.json": (MESSAGES, 429, dict(
        usage=None, stream_error=False, error_type="rate_limit_error",
        error_message_startswith="This request would exceed your organization's rate limit")),
    "anthropic_json_4.json": (MESSAGES, 400, dict(
        usage=None, stream_error=False, error_type="invalid_request_error",
        error_message_startswith="messages.0.content.1: unexpected `tool_use_id`")),
    "anthropic_json_5.json": (ANTHROPIC_COUNT, 200, dict(counted_tokens=1114, usage=None, usage_raw=None)),
    "anthropic_json_6.json": (ANTHROPIC_COUNT, 404, dict(
        counted_tokens=None, usage=None, error_type="not_found_error", error_message="model: claude-does-not-exist")),
    # -- OpenAI chat -----------------------------------------------------------------------
    "openai_chat_sse_1.sse": (CHAT, 200, dict(
        model="gpt-4o-2024-08-06", stop_reason="stop", complete=True, stream_error=False,
        usage=usage(14, 30), usage_raw={"total_tokens": 44, "completion_tokens_details": {"reasoning_tokens": 0}})),
    "openai_chat_sse_2.sse": (CHAT, 200, dict(
        model="gpt-4o-mini-2024-07-18", stop_reason="tool_calls", complete=True,
        usage=usage(53, 15), usage_raw={"total_tokens": 68}, output_text='{"country":"UK"}')),
    # the include_usage chunk removed: no usage anywhere, so the parser reports none
    "openai_chat_sse_3.sse": (CHAT, 200, dict(
        model="gpt-4o-2024-08-06", stop_reason="stop", complete=True, usage=None, usage_raw=None)),
    "openai_chat_json_1.json": (CHAT, 200, dict(
        model="gpt-4o-2024-08-06", stop_reason="stop", complete=True, usage=usage(14, 37), usage_raw={"total_tokens": 51})),
    "openai_chat_json_2.json": (CHAT, 200, dict(
        model="gpt-5.6-sol", stop_reason="stop", usage=usage(8, 4, cache_read=4012, cache_write=0), prompt_tokens=4020,
        usage_raw={"total_tokens": 4024})),
    "openaicompat_chat_sse_1.sse": (CHAT, 200, dict(
        model="minimax/minimax-m2:free", complete=True, stream_error=True, error_type="400",
        error_message="Token limit reached", stop_reason="length",
        usage=usage(43, 10, reasoning=11), usage_raw={"total_tokens": 53}, comment_lines=17)),
    "openaicompat_chat_sse_2.sse": (CHAT, 200, dict(
        model="openai/gpt-oss-120b", usage=None, complete=False, stream_error=True,
        error_type="invalid_request_error", error_message_startswith="Tool call validation failed")),
    # -- OpenAI Responses ------------------------------------------------------------------
    "openai_responses_sse_1.sse": (RESPONSES, 200, dict(
        model="gpt-4o-2024-08-06", complete=True, stop_reason="completed", usage=usage(255, 16),
        usage_raw={"total_tokens": 271}, output_text='{"country":"France"}')),
    "openai_responses_sse_2.sse": (RESPONSES, 200, dict(
        model="gpt-5-2025-08-07", complete=True, usage=usage(53, 469, reasoning=448), usage_raw={"total_tokens": 522})),
    "openai_responses_sse_3.sse": (RESPONSES, 200, dict(
        model="gpt-5-2025-08-07", complete=True, usage=usage(1143, 582, cache_read=8320, reasoning=512),
        prompt_tokens=9463, usage_raw={"total_tokens": 10045})),
    "openai_responses_json_1.json": (RESPONSES, 200, dict(
        model="gpt-4o-mini-2024-07-18", complete=True, stop_reason="completed", usage=usage(14, 50, cache_write=0),
        usage_raw={"total_tokens": 64})),
    "openai_responses_json_2.json": (RESPONSES, 400, dict(
        usage=None, stream_error=False, error_type="invalid_request_error",
        error_message_startswith="Invalid 'temperature': decimal below minimum value")),
    # -- Gemini ------------------------------------------------------------------------------
    "gemini_sse_1.sse": (GEMINI, 200, dict(
        model="gemini-2.0-flash-exp", stop_reason="STOP", complete=True, usage=usage(13, 8),
        usage_raw={"totalTokenCount": 21}, events=3, start_usage=usage(15, 0))),
    "gemini_sse_2.sse": (GEMINI, 200, dict(
        model="gemini-2.5-flash", complete=True, usage=usage(18, 115, reasoning=35), usage_raw={"totalTokenCount": 133},
        candidates_per_event=[31, 79, 80])),
    "gemini_sse_3.sse": (GEMINI, 200, dict(
        model="gemini-2.5-flash", complete=True, usage=usage(32 + 4610, 62, reasoning=37), total_tokens=4704,
        usage_raw={"toolUsePromptTokenCount": 4610, "totalTokenCount": 4704})),
    "gemini_sse_4.sse": (GEMINI, 200, dict(
        model="gemini-2.5-pro", complete=True, usage=usage(34, 1256, reasoning=787), usage_raw={"totalTokenCount": 1290},
        events=23)),
    "gemini_json_1.json": (GEMINI, 200, dict(
        model="gemini-2.5-flash", stop_reason="STOP", complete=True,
        usage=usage(334, 889, cache_read=17379, reasoning=821), prompt_tokens=17713, total_tokens=18602,
        usage_raw={"promptTokensDetails": [{"modality": "TEXT", "tokenCount": 16}, {"modality": "VIDEO", "tokenCount": 15780}, {"modality": "AUDIO", "tokenCount": 1917}]})),
}

# Keys of EXPECTED that are not ParseResult fields: checked by `check_extras`.
EXTRA_KEYS = {
    "start_usage", "prompt_tokens", "total_tokens", "iterations", "error_message_startswith",
    "comment_lines", "events", "candidates_per_event", "usage_raw",
}


def run(name: str, chunk_size: int | None = None) -> ParseResult:
    api, status, _ = EXPECTED[name]
    parser = new_parser(*api)
    data = (REAL / name).read_bytes()
    if name.endswith(".sse"):
        size = chunk_size or len(data)
        return replay_sse(parser, (data[i : i + size] for i in range(0, len(data), size)))
    parser.feed_json(json.loads(data), status)
    return parser.result()


def sse_events(name: str):
    decoder = SSEDecoder()
    return decoder.feed((REAL / name).read_bytes()) + decoder.close()


def test_every_capture_has_expectations():
    captures = sorted(p.name for p in REAL.iterdir() if p.suffix in (".sse", ".json"))
    assert captures == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture(name: str):
    _, _, expected = EXPECTED[name]
    result = run(name)
    for field, value in expected.items():
        if field not in EXTRA_KEYS:
            assert getattr(result, field) == value, field
    check_raw_usage(result, expected)
    check_extras(name, result, expected)


def check_raw_usage(result: ParseResult, expected: dict[str, Any]) -> None:
    if "usage_raw" not in expected:
        return
    if expected["usage_raw"] is None:
        assert result.usage_raw is None
        return
    for key, value in expected["usage_raw"].items():
        assert result.usage_raw[key] == value, key


def check_extras(name: str, result: ParseResult, expected: dict[str, Any]) -> None:
    if "prompt_tokens" in expected:
        assert result.usage.prompt_tokens == expected["prompt_tokens"]
    if "total_tokens" in expected:
        assert result.usage.total_tokens == expected["total_tokens"]
    if "error_message_startswith" in expected:
        assert result.error_message.startswith(expected["error_message_startswith"])
    if "iterations" in expected:
        got = [
            (it["type"], it["input_tokens"], it["cache_read_input_tokens"], it["output_tokens"])
            for it in result.usage_raw["iterations"]
        ]
        assert got == expected["iterations"]
    if "comment_lines" in expected:
        lines = (REAL / name).read_bytes().splitlines()
        assert sum(line.startswith(b":") for line in lines) == expected["comment_lines"]
        assert all(event.data.strip() for event in sse_events(name))  # comments made no events
    if "events" in expected:
        assert len(sse_events(name)) == expected["events"]
    if "start_usage" in expected:
        # What a parser that stopped at the first usage-bearing event would report: the values
        # a correct parser must NOT end with (they differ from the final ones).
        parser = new_parser(*EXPECTED[name][0])
        parser.feed_event(sse_events(name)[0])
        assert parser.result().usage == expected["start_usage"]
        assert expected["start_usage"] != result.usage
    if "candidates_per_event" in expected:
        parser = new_parser(*EXPECTED[name][0])
        seen = []
        for event in sse_events(name):
            parser.feed_event(event)
            seen.append(parser.result().usage_raw["candidatesTokenCount"])
        assert seen == expected["candidates_per_event"]


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.endswith(".sse")))
def test_capture_result_does_not_depend_on_chunking(name: str):
    whole = run(name)
    for size in (1, 3, 64, 1000):
        if size == 1 and (REAL / name).stat().st_size > 20_000:
            continue  # the big captures are covered by the other sizes
        assert run(name, size) == whole, size
