"""Provider parsers, looked up by (provider, api) as `analytics/apis.py` names them.

`new_parser` gives a fresh response parser for one exchange; `parse_request` reads a request
body and never raises (a body it cannot read gives an empty `RequestInfo`); `replay_sse` runs
a recorded SSE body through a parser.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from llmsm.addons.providers.base import ParseResult, RequestInfo, ResponseParser
from llmsm.addons.providers.sse import SSEDecoder
from llmsm.analytics.apis import APIS

__all__ = ["ITEMS_KEYS", "ITEM_SUMMARIES", "PARSERS", "REQUEST_PARSERS", "new_parser", "parse_request", "replay_sse"]

log = logging.getLogger("llmsm.providers")

# Both read from the table of APIs (analytics/apis.py): each row names its parser module, the
# response parser class in it, and the module's `parse_request` reads its request bodies. A row
# whose parser is missing fails here, at import, not on the first request.
PARSERS: dict[tuple[str, str], type[ResponseParser]] = {}
REQUEST_PARSERS: dict[tuple[str, str], Callable[..., RequestInfo]] = {}
# For addons/providers/incremental.py: the top-level key of a request body's message list
# (`REQUEST_ITEMS_KEY` in the module), and the module's `item_summary`, if it has one: what its
# `parse_request` needs of each item, as a small int (0-127) of which it needs the largest,
# `parse_request(body, items_summary=...)` (computed once per item, so a reused item is not
# walked again).
ITEMS_KEYS: dict[tuple[str, str], str] = {}
ITEM_SUMMARIES: dict[tuple[str, str], Callable[[Any], int]] = {}
for _spec in APIS:
    _module = importlib.import_module(f"{__name__}.{_spec.module}")
    PARSERS[(_spec.provider, _spec.api)] = getattr(_module, _spec.parser)
    REQUEST_PARSERS[(_spec.provider, _spec.api)] = _module.parse_request
    if getattr(_module, "REQUEST_ITEMS_KEY", None):
        ITEMS_KEYS[(_spec.provider, _spec.api)] = _module.REQUEST_ITEMS_KEY
    if getattr(_module, "item_summary", None) is not None:
        ITEM_SUMMARIES[(_spec.provider, _spec.api)] = _module.item_summary


def new_parser(provider: str, api: str) -> ResponseParser | None:
    """A fresh response parser for one exchange, or None for an API without one."""
    parser_class = PARSERS.get((provider, api))
    return parser_class() if parser_class is not None else None


def parse_request(
    provider: str, api: str, body: dict[str, Any], *, items_summary: int | None = None
) -> RequestInfo:
    """What the gateway needs from a request body. Never raises. `items_summary`: the largest
    of the module's `item_summary` over the items of the body's message list, when the caller
    has it."""
    try:
        reader = REQUEST_PARSERS.get((provider, api))
        if reader is None or not isinstance(body, dict):
            return RequestInfo()
        info = reader(body) if items_summary is None else reader(body, items_summary=items_summary)
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
