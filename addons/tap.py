"""The stream tap: watches a response body go by without ever touching it.

mitmproxy calls a `StreamTap` with each piece of a streamed body and forwards whatever it
returns; if it raised, mitmproxy would drop the piece and the client would silently lose data.
So `__call__` returns its input object unchanged, always, and everything it does with a copy sits
behind one catch-all. Once the tap has failed it stops looking and only counts bytes.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any, Callable

import brotli

try:  # Python 3.14+
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # mitmproxy depends on the backport
    from backports import zstd  # type: ignore[no-redef]

from llmsm.addons.providers._common import parse_json
from llmsm.addons.providers.base import ParseResult, ResponseParser
from llmsm.addons.providers.sse import SSEDecoder

log = logging.getLogger("llmsm.tap")

# A JSON body larger than this is passed on but not parsed (no API answers with one).
MAX_JSON_BODY = 32 * 1024 * 1024


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._d.process(data)


class _Deflate:
    """HTTP 'deflate' is meant to be zlib-wrapped, but raw deflate is common: sniff the first byte."""

    def __init__(self) -> None:
        self._d: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._d is None:
            if not data:
                return b""
            wbits = zlib.MAX_WBITS if (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            self._d = zlib.decompressobj(wbits)
        return self._d.decompress(data)


def make_decoder(content_encoding: str | None) -> Any:
    """An incremental decoder for one Content-Encoding; ValueError for ones we cannot read."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return _Identity()
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Deflate()
    if enc == "br":
        return _Brotli()
    if enc == "zstd":
        return zstd.ZstdDecompressor()
    raise ValueError(f"unsupported content-encoding {enc!r}")


class StreamTap:
    """Feeds a copy of a streamed response body to a provider parser.

    `sse` selects the framing: server-sent events are parsed as they pass; anything else is
    collected (decoded, up to MAX_JSON_BODY) and parsed as JSON when the body ends.
    """

    def __init__(
        self,
        parser: ResponseParser | None,
        *,
        sse: bool,
        content_encoding: str | None = None,
        status_code: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.parser = parser
        self.sse = sse
        self.status_code = status_code
        self._clock = clock
        self.response_bytes = 0
        self.first_byte_at: float | None = None
        self.ended_at: float | None = None
        self.failed = False
        self.json_text: str | None = None  # a non-JSON body, kept short for error messages
        self._sse = SSEDecoder() if sse else None
        self._body = bytearray()
        self._body_overflow = False
        try:
            self._decoder = make_decoder(content_encoding)
        except Exception as exc:
            self._fail(exc)

    # -- what mitmproxy calls -------------------------------------------------------------
    def __call__(self, chunk: bytes) -> bytes:
        try:
            if chunk:
                self.response_bytes += len(chunk)
                if self.first_byte_at is None:
                    self.first_byte_at = self._clock()
                if not self.failed:
                    self._observe(self._decoder.decompress(chunk))
            else:  # b"" marks the end of the body
                self.ended_at = self._clock()
                if not self.failed:
                    self._finish()
        except Exception as exc:  # never let anything reach mitmproxy
            self._fail(exc)
        return chunk

    # -- the copy -------------------------------------------------------------------------
    def _observe(self, data: bytes) -> None:
        if not data:
            return
        if self._sse is not None:
            if self.parser is not None:
                for event in self._sse.feed(data):
                    self.parser.feed_event(event)
        elif len(self._body) + len(data) <= MAX_JSON_BODY:
            self._body += data
        else:
            self._body_overflow = True

    def _finish(self) -> None:
        flush = getattr(self._decoder, "flush", None)
        tail = flush() if flush is not None else b""
        if tail:
            self._observe(tail)
        if self._sse is not None:
            if self.parser is not None:
                for event in self._sse.close():
                    self.parser.feed_event(event)
            return
        if self._body_overflow or not self._body:
            return
        self.feed_body(bytes(self._body))

    def feed_body(self, raw: bytes) -> None:
        """Parse a whole (decoded) JSON body; a body that is not JSON is kept as a short text."""
        try:
            body = parse_json(raw)
        except ValueError:
            self.json_text = raw[:500].decode("utf-8", "replace").strip()
            return
        if self.parser is None:
            return
        if isinstance(body, list):  # Gemini streams a JSON array without alt=sse
            for item in body:
                self.parser.feed_json(item, self.status_code)
        else:
            self.parser.feed_json(body, self.status_code)

    def _fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            log.warning("llmsm could not read a response body (traffic is unaffected): %r", exc)

    def result(self) -> ParseResult:
        if self.parser is None:
            return ParseResult()
        try:
            return self.parser.result()
        except Exception as exc:
            self._fail(exc)
            return ParseResult()


class MessageTap:
    """The WebSocket counterpart of StreamTap: each server message is one JSON event.

    Codex may speak the Responses API over a WebSocket: `response.create` frames go out and the
    same events as in the SSE stream come back, one per message. mitmproxy forwards messages
    itself; the tap only reads them, and never raises.
    """

    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

    def __init__(self, parser: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.parser = parser
        self._clock = clock
        self.response_bytes = 0
        self.first_byte_at: float | None = None
        self.ended_at: float | None = None
        self.failed = False
        self.json_text: str | None = None
        self.done = False  # a terminal event arrived: the exchange is over

    def feed(self, content: bytes) -> None:
        try:
            self.response_bytes += len(content)
            if self.first_byte_at is None:
                self.first_byte_at = self._clock()
            message = parse_json(content)
            if isinstance(message, dict):
                self.parser.feed_message(message)
                if message.get("type") in self.TERMINAL:
                    self.done = True
                    self.ended_at = self._clock()
        except Exception as exc:
            if not self.failed:
                self.failed = True
                log.warning("llmsm could not read a WebSocket message (traffic is unaffected): %r", exc)

    def result(self) -> ParseResult:
        try:
            return self.parser.result()
        except Exception:
            return ParseResult()
