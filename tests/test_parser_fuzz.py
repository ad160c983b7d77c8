"""Property tests: chunking never changes what is decoded or parsed, and nothing raises."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsm.addons.providers import PARSERS, REQUEST_PARSERS, new_parser, parse_request, replay_sse
from llmsm.addons.providers.base import ParseResult, RequestInfo, SSEEvent
from llmsm.addons.providers.openai_responses import OpenAIResponsesParser
from llmsm.addons.providers.sse import SSEDecoder
from llmsm.analytics.apis import APIS
from llmsm.analytics.events import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
STREAMS = {
    path.name: (path.read_bytes(), api)
    for prefix, api in (
        ("anthropic_stream_", ("anthropic", "messages")),
        ("openai_chat_stream_", ("openai", "chat_completions")),
        ("openai_responses_stream_", ("openai", "responses")),
        ("gemini_stream_", ("gemini", "generate_content")),
    )
    for path in sorted(FIXTURES.glob(f"{prefix}*.sse"))
}

# Hypothesis's default of 100 examples per property (drawing the nested JSON is most of the cost).
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that sit on the edges the decoder must get right: line breaks of every kind, field
# names, comments, a BOM and multi-byte UTF-8 (which random chunking will split).
SSE_PIECES = st.sampled_from(
    [b"data:", b"data: ", b"event: ", b"event:x", b":", b": ping", b"\n", b"\r", b"\r\n", b"\n\n",
     b"\r\n\r\n", b" ", b"{}", b"[DONE]", b"id: 1", b"retry: 5", b"\xef\xbb\xbf", "é✓👋".encode(), b"\xff", b"x"]
)
SSE_LIKE_BYTES = st.lists(SSE_PIECES, max_size=40).map(b"".join) | st.binary(max_size=300)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def decode_chunks(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


@FUZZ
@given(data=SSE_LIKE_BYTES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30))
def test_decoder_events_do_not_depend_on_chunking(data: bytes, cuts: list[int]):
    assert decode_chunks(split_at(data, cuts)) == decode_chunks([data])


@FUZZ
@given(data=SSE_LIKE_BYTES)
def test_decoder_one_byte_chunks_match_the_whole(data: bytes):
    assert decode_chunks([data[i : i + 1] for i in range(len(data))]) == decode_chunks([data])


@FUZZ
@given(name=st.sampled_from(sorted(STREAMS)), cuts=st.lists(st.integers(min_value=0, max_value=2500), max_size=40))
def test_parse_result_does_not_depend_on_chunking(name: str, cuts: list[int]):
    data, api = STREAMS[name]
    chunked, whole = replay_sse(new_parser(*api), split_at(data, cuts)), replay_sse(new_parser(*api), [data])
    assert chunked == whole
    assert chunked.output_text == whole.output_text  # built on demand, so not part of ==


@FUZZ
@given(data=SSE_LIKE_BYTES, api=st.sampled_from(sorted(PARSERS)))
def test_arbitrary_bytes_never_raise(data: bytes, api: tuple[str, str]):
    result = replay_sse(new_parser(*api), [data])
    assert isinstance(result, ParseResult)


# JSON shaped like provider payloads, built from the keys the parsers look at, so that the
# random values land on real code paths (wrong types in the right places).
KEYS = st.sampled_from(
    ["type", "message", "usage", "delta", "content", "content_block", "text", "input", "model", "id",
     "stop_reason", "error", "choices", "finish_reason", "tool_calls", "function", "arguments",
     "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens", "input_tokens",
     "output_tokens", "input_tokens_details", "output_tokens_details", "iterations", "cache_creation",
     "cache_creation_input_tokens", "ephemeral_1h_input_tokens", "response", "output", "status",
     "incomplete_details", "candidates", "parts", "finishReason", "usageMetadata", "promptTokenCount",
     "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount", "totalTokens", "code"]
)
TYPES = st.sampled_from(
    ["message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta", "error",
     "ping", "response.completed", "response.failed", "response.incomplete", "response.output_text.delta",
     "response.created"]
)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8) | TYPES
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)


def json_text(value) -> str:
    return json.dumps(value, allow_nan=True)


@FUZZ
@given(
    api=st.sampled_from(sorted(PARSERS)),
    events=st.lists(st.tuples(st.none() | TYPES, JSON_VALUES), max_size=8),
    status=st.sampled_from([200, 400, 429, 500, 529]),
)
def test_payload_shaped_garbage_never_raises(api, events, status):
    parser = new_parser(*api)
    for name, value in events:
        parser.feed_event(SSEEvent(name, json_text(value)))
        parser.feed_json(value, status)
        if isinstance(parser, OpenAIResponsesParser):
            parser.feed_message(value)
    result = parser.result()
    assert isinstance(result, ParseResult)
    assert result.usage is None or isinstance(result.usage, Usage)
    assert isinstance(result.output_text, str)


@FUZZ
@given(api=st.sampled_from(sorted(REQUEST_PARSERS)), body=JSON_VALUES)
def test_parse_request_never_raises(api, body):
    shaped = {"model": "m", "messages": body, "contents": body, "input": body, "system": body, "metadata": body}
    for candidate in (body, shaped):
        info = parse_request(*api, candidate)
        assert isinstance(info, RequestInfo)


# -- the registry --------------------------------------------------------------------------------
def test_registry_covers_every_routed_api_and_nothing_else():
    assert set(PARSERS) == set(REQUEST_PARSERS) == {(spec.provider, spec.api) for spec in APIS}
    for api in PARSERS:
        parser = new_parser(*api)
        assert callable(parser.feed_event) and callable(parser.feed_json)
        assert parser.result() == ParseResult()  # nothing fed, nothing reported
    assert new_parser("anthropic", "other") is None
    assert new_parser("mistral", "messages") is None


def test_registry_parse_request_for_unknown_apis_and_non_dict_bodies():
    assert parse_request("openai", "other", {"model": "x"}) == RequestInfo()
    assert parse_request("anthropic", "messages", ["not", "a", "dict"]) == RequestInfo()  # type: ignore[arg-type]
    assert parse_request("anthropic", "count_tokens", {"model": "claude-x"}).model == "claude-x"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(value=JSON_VALUES)
def test_parse_json_equals_json_loads(value):
    from llmsm.addons.providers._common import parse_json

    text = json.dumps(value, ensure_ascii=False)
    assert parse_json(text.encode()) == json.loads(text)


def test_parse_json_answers_like_json_loads_where_orjson_is_stricter():
    import math

    import pytest

    from llmsm.addons.providers._common import parse_json

    for raw in (b'{"n": 18446744073709551615}', b'{"a": 1, "a": 2}', '{"t": "\u00e9"}'.encode("utf-16"),
                b'{"deep": ' + b"[" * 100 + b"]" * 100 + b"}"):
        assert parse_json(raw) == json.loads(raw)
    assert math.isnan(parse_json(b"[NaN]")[0]) and parse_json(b"[Infinity]") == [math.inf]
    with pytest.raises(ValueError):
        parse_json(b"{not json")
    # nesting too deep for json.loads (its RecursionError) is not JSON either, for every caller
    with pytest.raises(ValueError):
        parse_json(b"[" * 100_000)
    from llmsm.addons.gateway import _json_object  # a WebSocket frame

    assert _json_object(b"[" * 100_000) == {}
