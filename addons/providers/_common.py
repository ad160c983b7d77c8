"""Helpers shared by the provider parsers: defensive accessors, error extraction, request text.

Provider payloads are untrusted: any field can be missing, null or of the wrong type, and
new fields appear often. Every accessor here returns None / empty instead of raising, and
`BaseResponseParser` wraps each entry point so that one malformed event never breaks the
parse of the rest of the stream.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from llmsm.addons.providers.base import ParseResult, RequestInfo, SSEEvent
from llmsm.analytics.events import Usage

log = logging.getLogger("llmsm.providers")

# Error messages are stored in a column; an HTML error page or a huge message is cut.
MAX_ERROR_MESSAGE = 2000


# -- defensive accessors ------------------------------------------------------------------
def parse_json(data: bytes | str) -> Any:
    """`json.loads`, but about twice as fast on the large bodies a coding assistant sends with
    every turn (orjson). Where orjson refuses what json accepts (NaN, UTF-16, deep nesting) the
    standard library answers. One difference remains: an integer beyond 64 bits becomes a float
    (no count comes near). Raises ValueError for anything that is not JSON, nesting too deep for
    json.loads (its RecursionError) included."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def loads(text: str) -> Any:
    """JSON value of `text`, or None when it is not JSON (trailing spaces are fine)."""
    try:
        return parse_json(text)
    except (ValueError, TypeError):
        return None


def as_int(value: Any) -> int | None:
    """An integer count, or None. Booleans are not counts; integral floats are accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None as soon as a level is not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def sum_reported(values: Iterable[int | None]) -> int | None:
    """Sum of the values that were reported; None when none was."""
    total: int | None = None
    for value in values:
        if value is not None:
            total = value if total is None else total + value
    return total


def uncached(total: int | None, *cached_parts: int) -> int | None:
    """Uncached input = the provider's whole prompt count minus its cached parts."""
    if total is None:
        return None
    return max(total - sum(cached_parts), 0)


def dumps_compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return ""


# -- errors -------------------------------------------------------------------------------
def error_fields(source: Any) -> tuple[str | None, str | None]:
    """(error type, message) from any provider's error shape.

    Handles `{"error": {...}}` (Anthropic, OpenAI, Gemini), a bare error object, a Responses
    `error` event (`{"type": "error", "code", "message"}`) and `{"error": "text"}`.
    The type prefers a symbolic name: `type`, then Gemini's `status`, then `code`.
    """
    if not isinstance(source, dict):
        return None, None
    nested = source.get("error")
    if isinstance(nested, str):
        return None, nested[:MAX_ERROR_MESSAGE] or None
    err = nested if isinstance(nested, dict) else source
    kind = as_str(err.get("type"))
    if kind == "error":  # the event's own type, not the error's
        kind = None
    if kind is None:
        kind = as_str(err.get("status"))
    if kind is None:
        code = err.get("code")
        if isinstance(code, str | int) and not isinstance(code, bool):
            kind = str(code) or None
    message = err.get("message")
    if not isinstance(message, str):
        message = None
    return kind, (message[:MAX_ERROR_MESSAGE] if message else None)


# -- never raise ----------------------------------------------------------------------------
def returns_on_error[**P, T](fallback: Callable[[], T]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator: log and return `fallback()` instead of raising (parsers see untrusted data)."""

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return func(*args, **kwargs)
            except Exception:
                log.debug("%s failed on malformed input", func.__qualname__, exc_info=True)
                return fallback()

        return wrapper

    return decorate


def _none() -> None:
    return None


swallow_errors = returns_on_error(_none)


# -- response parser plumbing ---------------------------------------------------------------
class BaseResponseParser:
    """Shared plumbing of every response parser.

    Subclasses implement `_on_event(name, data, payload)` (payload = the JSON of `data`, or None),
    `_on_json(body, status_code)` and, when they report usage, `_usage()`.
    `self.out` collects the result fields; text for estimates goes through `_add_text`.
    """

    # SSE events (by their `event:` name) that carry nothing but generated text: kept as they
    # came and parsed only if the text is ever wanted (`_deferred_text`). Parsing each token's
    # delta as it passes was most of what a stream cost llmsm.
    TEXT_ONLY_EVENTS: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.out = ParseResult()
        self._text_parts: list[str | tuple[str]] = []  # text, or (raw event data,) to read later
        self._usage_raw: Any = None

    # The ResponseParser protocol ------------------------------------------------------------
    @swallow_errors
    def feed_event(self, event: SSEEvent) -> None:
        if event.event in self.TEXT_ONLY_EVENTS:
            self._text_parts.append((event.data,))
            return
        self._on_event(event.event, event.data, loads(event.data))

    @swallow_errors
    def feed_json(self, body: Any, status_code: int) -> None:
        """A whole JSON body (success or error): once read, the exchange is complete."""
        self._on_json(body, as_int(status_code) or 0)
        if isinstance(body, dict | list):
            self.out.complete = True

    def result(self) -> ParseResult:
        parts = list(self._text_parts)  # a result taken mid-stream keeps what was seen by then
        out = dataclasses.replace(self.out, text_source=lambda: self._join_text(parts))
        try:
            out.usage = self._usage()
            out.usage_raw = self._usage_raw
        except Exception:
            log.debug("usage of %s could not be computed", type(self).__name__, exc_info=True)
        return out

    # For subclasses ---------------------------------------------------------------------------
    def _on_event(self, name: str | None, data: str, payload: Any) -> None:
        if name == "error":
            self._record_error(payload, in_stream=True, raw_text=data)

    def _on_json(self, body: Any, status_code: int) -> None:
        raise NotImplementedError

    def _usage(self) -> Usage | None:
        return None

    def _deferred_text(self, payload: Any) -> Iterable[Any]:
        """The text of a TEXT_ONLY_EVENTS event's (parsed) data."""
        return ()

    def _join_text(self, parts: list[str | tuple[str]]) -> str:
        out = []
        for part in parts:
            if type(part) is tuple:
                try:
                    out.extend(t for t in self._deferred_text(loads(part[0])) if isinstance(t, str) and t)
                except Exception:  # untrusted data: text is only for estimates
                    log.debug("a deferred event of %s could not be read", type(self).__name__, exc_info=True)
            else:
                out.append(part)
        return "".join(out)

    def _add_text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self._text_parts.append(text)

    def _set_model(self, model: Any) -> None:
        if as_str(model):
            self.out.model = model

    def _set_message_id(self, message_id: Any) -> None:
        if as_str(message_id):
            self.out.message_id = message_id

    def _record_error(self, source: Any, *, in_stream: bool, raw_text: str | None = None) -> None:
        """An error object was seen. In a stream or in a 2xx body it is a `stream_error`:
        the HTTP status says success, the payload says failure."""
        kind, message = error_fields(source)
        if message is None and raw_text and not isinstance(source, dict):
            message = raw_text.strip()[:MAX_ERROR_MESSAGE] or None
        self.out.error_type = kind or self.out.error_type
        self.out.error_message = message or self.out.error_message
        if in_stream:
            self.out.stream_error = True


# -- request bodies -------------------------------------------------------------------------
# Keys whose value is text the model reads (or wrote), across the three providers' content
# shapes. Binary payloads (image `source`, Gemini `inlineData`) are never descended into.
_TEXT_KEYS = ("text",)
# Tool call arguments and Gemini functionResponse.response: free-form objects, read as JSON text.
_JSON_KEYS = ("input", "arguments", "args", "response")
_NESTED_KEYS = (
    "content",  # every provider's message content; Anthropic tool_result content
    "output",  # Responses function_call_output
    "parts",  # Gemini contents
    "tool_calls",  # OpenAI chat assistant messages
    "function",  # ... whose entries hold the arguments here
    "functionCall",  # Gemini
    "functionResponse",
)
_MAX_DEPTH = 16


def text_of(content: Any) -> str:
    """The readable text of a message's content, whatever its provider shape."""
    parts: list[str] = []
    _collect_text(content, parts, 0)
    return "\n".join(parts)


def _collect_text(node: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, str):
        if node:
            out.append(node)
        return
    if isinstance(node, list):
        for item in node:
            _collect_text(item, out, depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key in _TEXT_KEYS:
        value = node.get(key)
        if isinstance(value, str) and value:
            out.append(value)
    for key in _JSON_KEYS:
        value = node.get(key)
        if isinstance(value, str):
            if value:
                out.append(value)
        elif isinstance(value, dict | list) and value:
            out.append(dumps_compact(value))
    for key in _NESTED_KEYS:
        value = node.get(key)
        if value is not None:
            _collect_text(value, out, depth + 1)


def chat_message(message: dict[str, Any], role: str | None = None) -> dict[str, Any]:
    """A provider message (or Responses item, or Gemini content) as `{"role", "content"}`
    with all its readable text: content, tool calls' arguments and tool results."""
    if role is None:
        role = as_str(message.get("role")) or "user"
    return {"role": role, "content": text_of(message)}


# OpenAI's structured-output formats (chat `response_format.type`, Responses `text.format.type`).
JSON_OUTPUT_TYPES = ("json_schema", "json_object")


def newest_user_parts(messages: list[Any]) -> tuple[str, ...]:
    """The text parts of the newest user message, in any provider's shape (Anthropic and OpenAI
    `content`, Gemini `parts`, Responses input items). A tool-result turn has none. Only that one
    message is read: cheap on any history."""
    for message in reversed(messages):
        if isinstance(message, str):  # a Responses input item given as a bare string
            return (message,) if message else ()
        if not isinstance(message, dict):
            continue
        role = message.get("role") or ("user" if "parts" in message else None)  # Gemini may omit it
        if role != "user":
            continue
        content = message.get("parts", message.get("content"))
        if isinstance(content, str):
            return (content,) if content else ()
        return tuple(
            part["text"] for part in as_list(content) if isinstance(part, dict) and as_str(part.get("text"))
        )
    return ()


def request_basics(body: dict[str, Any]) -> RequestInfo:
    """The fields every API names the same way: `model` and `stream`."""
    return RequestInfo(model=as_str(body.get("model")), stream=body.get("stream") is True)
