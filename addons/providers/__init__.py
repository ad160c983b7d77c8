"""Provider parsers, looked up by (provider, api) as `addons/routes.py` names them.

`new_parser` gives a fresh response parser for one exchange; `parse_request` reads a request
body and never raises (a body it cannot read gives an empty `RequestInfo`); `replay_sse` runs
a recorded SSE body through a parser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from llmsm.addons.providers import anthropic, gemini, openai_chat, openai_responses
from llmsm.addons.providers.base import ParseResult, RequestInfo, ResponseParser
from llmsm.addons.providers.sse import SSEDecoder

__all__ = ["PARSERS", "REQUEST_PARSERS", "new_parser", "parse_request", "replay_sse"]

log = logging.getLogger("llmsm.providers")

PARSERS: dict[tuple[str, str], type[ResponseParser]] = {
    ("anthropic", "messages"): anthropic.AnthropicMessagesParser,
    ("anthropic", "count_tokens"): anthropic.AnthropicCountTokensParser,
    ("openai", "chat_completions"): openai_chat.OpenAIChatParser,
    ("openai", "responses"): openai_responses.OpenAIResponsesParser,
    ("gemini", "generate_content"): gemini.GeminiParser,
    ("gemini", "count_tokens"): gemini.GeminiCountTokensParser,
}

# A count_tokens request has the same body shape as the provider's generation request.
REQUEST_PARSERS: dict[tuple[str, str], Callable[[dict[str, Any]], RequestInfo]] = {
    ("anthropic", "messages"): anthropic.parse_request,
    ("anthropic", "count_tokens"): anthropic.parse_request,
    ("openai", "chat_completions"): openai_chat.parse_request,
    ("openai", "responses"): openai_responses.parse_request,
    ("gemini", "generate_content"): gemini.parse_request,
    ("gemini", "count_tokens"): gemini.parse_request,
}


def new_parser(provider: str, api: str) -> ResponseParser | None:
    """A fresh response parser for one exchange, or None for an API without one."""
    parser_class = PARSERS.get((provider, api))
    return parser_class() if parser_class is not None else None


def parse_request(provider: str, api: str, body: dict[str, Any]) -> RequestInfo:
    """What the gateway needs from a request body. Never raises."""
    try:
        reader = REQUEST_PARSERS.get((provider, api))
        if reader is None or not isinstance(body, dict):
            return RequestInfo()
        info = reader(body)
        return info if isinstance(info, RequestInfo) else RequestInfo()
    except Exception:
        log.debug("request body of %s/%s could not be read", provider, api, exc_info=True)
        return RequestInfo()


def replay_sse(parser: ResponseParser, chunks: Iterable[bytes]) -> ParseResult:
    """Feed a recorded SSE body (in any chunking) through a fresh decoder into `parser`,
    as the gateway's tap does, and return the result. For replays and tests."""
    decoder = SSEDecoder()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            parser.feed_event(event)
    for event in decoder.close():
        parser.feed_event(event)
    return parser.result()
