"""The stream tap returns every chunk unchanged, whatever happens to its copy."""

from __future__ import annotations

import gzip
import zlib

import pytest
from mitmproxy.net import encoding as mitmproxy_encoding

from llmsm.addons.providers import new_parser
from llmsm.addons.tap import StreamTap, make_decoder
from tests.upstream import anthropic_messages

BODY = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}


def _stream_bytes() -> bytes:
    _, events = anthropic_messages(BODY, error_event=False)
    return b"".join(events)


def _encode(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding in ("br", "zstd"):  # as mitmproxy itself encodes them
        return mitmproxy_encoding.encode(data, encoding)
    return data


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_tap_reads_any_encoding_and_chunking(encoding, piece):
    wire = _encode(_stream_bytes(), encoding)
    tap = StreamTap(new_parser("anthropic", "messages"), sse=True, content_encoding=encoding)
    out = b""
    for i in range(0, len(wire), piece):
        chunk = wire[i : i + piece]
        returned = tap(chunk)
        assert returned is chunk
        out += returned
    assert tap(b"") == b""
    assert out == wire and tap.response_bytes == len(wire)
    result = tap.result()
    assert not tap.failed
    assert result.complete and result.usage.output_tokens == 42 and result.usage.cache_read_tokens == 1000


class ExplodingParser:
    def feed_event(self, event):
        raise RuntimeError("parser bug")

    def feed_json(self, body, status_code):
        raise RuntimeError("parser bug")

    def result(self):
        raise RuntimeError("parser bug")


@pytest.mark.parametrize("sse", [True, False])
def test_tap_survives_a_broken_parser(sse):
    tap = StreamTap(ExplodingParser(), sse=sse)
    data = _stream_bytes() if sse else b'{"a": 1}'
    assert tap(data) is data
    assert tap(b"") == b""
    assert tap.failed
    assert tap.result().usage is None


def test_tap_survives_garbage_and_bad_encoding():
    tap = StreamTap(new_parser("anthropic", "messages"), sse=True, content_encoding="gzip")
    junk = b"\x00\xffnot gzip at all"
    assert tap(junk) is junk
    assert tap(b"") == b""
    tap = StreamTap(new_parser("openai", "chat_completions"), sse=False, content_encoding="x-unknown")
    assert tap(b"abc") == b"abc" and tap(b"") == b""


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError):
        make_decoder("compress")
