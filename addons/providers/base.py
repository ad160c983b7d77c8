"""What every provider parser produces. Pure data: no mitmproxy, no I/O.

A parser sees one exchange. The gateway hands it the request body once (`RequestInfo`), then
either the whole JSON response body (`feed_json`) or each SSE event as it passes
(`feed_event`), and reads `result()` when the exchange is over, however it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmsm.analytics.events import Usage

log = logging.getLogger("llmsm.parsers")

Conversation = tuple[list[dict[str, Any]], str | None]  # (chat-style messages, system text)


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: the `event:` name (None when absent) and its joined `data:` lines."""

    event: str | None
    data: str


@dataclass(slots=True)
class RequestInfo:
    """What the gateway needs to know about a request body. Never stored as content."""

    model: str | None = None
    stream: bool = False
    include_usage: bool = False  # OpenAI chat: stream_options.include_usage
    message_count: int | None = None
    tool_errors: int | None = None  # failed tool results in the newest turn
    long_context: bool = False  # Anthropic context-1m beta (set from headers by the gateway)
    cache_ttl: str | None = None  # '5m' / '1h' when the request asks for prompt caching
    # Session identity found in the body (Claude Code metadata.user_id, Codex prompt_cache_key).
    body_session_id: str | None = None
    prompt_cache_key: str | None = None
    # An assistant's side call (a title, a routing decision): it asks for JSON-schema output and
    # offers no tools. It and the turn it serves share a text part of their newest user message.
    side_call: bool = False
    newest_user_parts: tuple[str, ...] = ()
    # The conversation, kept in memory only, for a tiktoken estimate when the provider reports
    # no usage and for conversation-continuity attribution. Read from the body on first use
    # (`messages`, `system`): walking every message's text costs milliseconds on a long
    # conversation, and most requests never need it. Until then the parsed messages stay in
    # memory with the exchange (mitmproxy holds the raw body that long anyway).
    read_conversation: Callable[[], Conversation] | None = field(default=None, repr=False, compare=False)
    # The body's own message list (messages / input / contents) and system (system /
    # instructions / systemInstruction) as parsed: references, no copy, for the session digest
    # (addons/digest.py). `items_are_new`: the body continues a stored response
    # (previous_response_id), so its items are only what is new.
    items: list[Any] | None = field(default=None, repr=False, compare=False)
    instructions: Any = field(default=None, repr=False, compare=False)
    items_are_new: bool = False
    offers_tools: bool = False  # the body offers tools: an assistant's turn does, its side requests not
    _conversation: Conversation | None = field(default=None, repr=False, compare=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat-style messages {"role", "content"} with all their readable text."""
        return self._read()[0]

    @property
    def system(self) -> str | None:
        return self._read()[1]

    def _read(self) -> Conversation:
        if self._conversation is None:
            conversation: Conversation = ([], None)
            if self.read_conversation is not None:
                try:
                    conversation = self.read_conversation()
                except Exception:  # untrusted data: an odd body has no readable conversation
                    log.debug("conversation of a request could not be read", exc_info=True)
            self._conversation = conversation
        return self._conversation


@dataclass(slots=True)
class ParseResult:
    usage: Usage | None = None  # as reported by the provider; None when it reported nothing
    usage_raw: Any = None  # the provider's own usage object(s), unchanged
    model: str | None = None  # the model that served the request
    stop_reason: str | None = None
    message_id: str | None = None
    counted_tokens: int | None = None  # count_tokens / countTokens answers
    error_type: str | None = None
    error_message: str | None = None
    stream_error: bool = False  # an error arrived inside an HTTP 200 stream
    complete: bool = False  # the terminal event (or a whole JSON body) was seen
    # Generated text and tool arguments, for estimates only, read through `output_text`: built
    # on first use, since most exchanges report their usage and never need it.
    text_source: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    _text: str | None = field(default=None, init=False, repr=False, compare=False)  # the text, once built

    @property
    def output_text(self) -> str:
        if self._text is None:
            self._text = self.text_source() if self.text_source is not None else ""
        return self._text


class ResponseParser(Protocol):
    def feed_event(self, event: SSEEvent) -> None: ...

    def feed_json(self, body: Any, status_code: int) -> None: ...

    def result(self) -> ParseResult: ...
