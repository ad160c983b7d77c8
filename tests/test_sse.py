"""SSEDecoder: framing rules, chunk-boundary independence, and its cost per event."""

from __future__ import annotations

import json
import time

import pytest

from llmsm.addons.providers.base import SSEEvent
from llmsm.addons.providers.sse import SSEDecoder


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def one_byte_at_a_time(data: bytes) -> list[SSEEvent]:
    return decode(*(data[i : i + 1] for i in range(len(data))))


def test_named_event_and_data():
    assert decode(b"event: message_start\ndata: {\"a\":1}\n\n") == [SSEEvent("message_start", '{"a":1}')]


def test_missing_event_line_gives_none():
    assert decode(b'data: {"x":1}\n\ndata: [DONE]\n\n') == [SSEEvent(None, '{"x":1}'), SSEEvent(None, "[DONE]")]


def test_event_name_does_not_leak_into_the_next_event():
    events = decode(b"event: ping\ndata: {}\n\ndata: 2\n\n")
    assert events == [SSEEvent("ping", "{}"), SSEEvent(None, "2")]


def test_comments_are_ignored_everywhere():
    data = b": OPENROUTER PROCESSING\n\n:keep-alive\nevent: a\n: inside an event\ndata: 1\n\n"
    assert decode(data) == [SSEEvent("a", "1")]


def test_only_one_space_after_the_colon_is_removed():
    assert decode(b"data:x\n\ndata:  two\n\n") == [SSEEvent(None, "x"), SSEEvent(None, " two")]


def test_trailing_spaces_are_kept_and_still_parse_as_json():
    events = decode(b'data: {"type":"message_stop"}      \n\n')
    assert events[0].data.endswith("      ")
    assert json.loads(events[0].data) == {"type": "message_stop"}


def test_multi_line_data_is_joined_with_newlines():
    assert decode(b"data: {\ndata: \"a\": 1\ndata: }\n\n") == [SSEEvent(None, '{\n"a": 1\n}')]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline: bytes):
    data = b"event: e" + newline + b"data: 1" + newline + newline + b"data: 2" + newline + newline
    assert decode(data) == [SSEEvent("e", "1"), SSEEvent(None, "2")]


def test_mixed_line_endings_in_one_stream():
    assert decode(b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n") == [SSEEvent(None, str(n)) for n in (1, 2, 3)]


def test_crlf_split_between_chunks_is_one_line_break():
    # If the LF were read as a second line break, "data: 1" would end early and the event
    # would be dispatched before "data: 2" arrived.
    assert decode(b"data: 1\r", b"\ndata: 2\r", b"\n\r", b"\n") == [SSEEvent(None, "1\n2")]


def test_lone_cr_at_chunk_end_followed_by_a_non_lf():
    assert decode(b"data: 1\r", b"\rdata: 2\r\r") == [SSEEvent(None, "1"), SSEEvent(None, "2")]


def test_one_byte_chunks_give_the_same_events():
    data = b"event: a\r\ndata: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93\r\n\r\n: c\n\ndata: x\rdata: y\r\r"
    assert one_byte_at_a_time(data) == decode(data) == [SSEEvent("a", "été ✓"), SSEEvent(None, "x\ny")]


def test_utf8_character_split_across_chunks_is_decoded_whole():
    smile = "👋".encode()
    assert decode(b"data: hi " + smile[:2], smile[2:] + b"\n\n") == [SSEEvent(None, "hi 👋")]


def test_invalid_utf8_is_replaced_not_raised():
    assert decode(b"data: \xff\xfe ok\n\n") == [SSEEvent(None, "\ufffd\ufffd ok")]


def test_bom_at_stream_start_is_dropped_even_when_split():
    assert decode(b"\xef", b"\xbb", b"\xbfdata: 1\n\n") == [SSEEvent(None, "1")]


def test_bom_is_only_special_at_the_start():
    events = decode(b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n")
    assert events == [SSEEvent(None, "1")]  # "\ufeffdata" is an unknown field, not a data line


def test_close_flushes_an_event_without_its_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: message_stop\ndata: {}\n") == []
    assert decoder.close() == [SSEEvent("message_stop", "{}")]


def test_close_flushes_an_unterminated_last_line():
    assert decode(b"data: [DONE]") == [SSEEvent(None, "[DONE]")]


def test_close_with_nothing_pending_returns_nothing():
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\n")
    assert decoder.close() == []


def test_event_without_data_is_not_dispatched():
    assert decode(b"event: ping\n\nid: 7\nretry: 100\n\n") == []


def test_data_field_without_colon_is_an_empty_data_line():
    assert decode(b"data\n\n") == [SSEEvent(None, "")]


def test_empty_chunks_are_harmless():
    assert decode(b"", b"data: 1", b"", b"\n\n", b"") == [SSEEvent(None, "1")]


def test_events_are_returned_by_the_chunk_that_completes_them():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\ndata: 2") == [SSEEvent(None, "1")]
    assert decoder.feed(b"\n\n") == [SSEEvent(None, "2")]


def test_twenty_thousand_events_across_chunk_boundaries():
    # Its cost per event is measured by benchmarks/bench_gateway.py (streams), not here.
    event = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello"}}   \n\n'
    data = event * 20_000
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    events = decode(*chunks)
    assert len(events) == 20_000 and {e.event for e in events} == {"content_block_delta"}
    assert events[-1].data.endswith('"text":"hello"}}   ')


def test_long_line_in_one_byte_chunks_is_linear():
    line = b"data: " + b"x" * 100_000 + b"\n\n"
    started = time.perf_counter()
    events = one_byte_at_a_time(line)
    elapsed = time.perf_counter() - started
    assert events == [SSEEvent(None, "x" * 100_000)]
    assert elapsed < 2.0  # ~0.1 s when linear; a quadratic buffer takes minutes
