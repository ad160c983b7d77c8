"""Anthropic Messages API: `POST /v1/messages` (JSON or SSE) and `/v1/messages/count_tokens`.

How the Messages API reports usage:
- a stream starts with `message_start.message.usage`; every non-null field of each
  `message_delta.usage` then *replaces* it (output_tokens there is the final total, and input
  and cache counts can grow mid-turn with server tools);
- when `usage.iterations[]` exists (compaction), the top level covers only the last pass and
  the billed usage is the sum over the iterations;
- `cache_creation.ephemeral_1h_input_tokens` is the part of the cache write with a 1 h TTL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from llmsm.addons.providers._common import (
    BaseResponseParser,
    as_dict,
    as_int,
    as_list,
    as_str,
    chat_message,
    dig,
    dumps_compact,
    loads,
    newest_user_parts,
    request_basics,
    returns_on_error,
    sum_reported,
    text_of,
)
from llmsm.addons.providers.base import RequestInfo
from llmsm.analytics.events import Usage

__all__ = ["AnthropicMessagesParser", "AnthropicCountTokensParser", "parse_request", "anthropic_usage"]

# Delta fields that carry generated text: text, tool-call JSON, thinking, compaction summary.
_DELTA_TEXT_KEYS = ("text", "partial_json", "thinking", "content")


def anthropic_usage(raw: dict[str, Any]) -> Usage | None:
    """Normalized usage of a (merged) Anthropic usage object; None when it reports no counts."""
    iterations = [item for item in as_list(raw.get("iterations")) if isinstance(item, dict)]
    passes = iterations or [raw]
    input_tokens = sum_reported(as_int(p.get("input_tokens")) for p in passes)
    output_tokens = sum_reported(as_int(p.get("output_tokens")) for p in passes)
    cache_read = sum_reported(as_int(p.get("cache_read_input_tokens")) for p in passes)
    cache_write = sum_reported(as_int(p.get("cache_creation_input_tokens")) for p in passes)
    if input_tokens is None and output_tokens is None and cache_read is None and cache_write is None:
        return None
    write_1h = sum_reported(as_int(dig(p, "cache_creation", "ephemeral_1h_input_tokens")) for p in passes)
    if write_1h is None and not cache_write:
        write_1h = 0  # nothing was written, so nothing was written for 1 h either
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        # Absent cache counts (older API versions) mean no caching happened.
        cache_read_tokens=cache_read or 0,
        cache_write_tokens=cache_write or 0,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=None,  # Anthropic bills thinking as output and does not split it out
    )


class _AnthropicParser(BaseResponseParser):
    def _on_json_error(self, body: Any, status_code: int) -> bool:
        """Record an error body; True when `body` was one."""
        if status_code >= 400 or (isinstance(body, dict) and body.get("type") == "error"):
            self._record_error(body, in_stream=status_code < 400)
            return True
        return False


class AnthropicMessagesParser(_AnthropicParser):
    """Messages responses, streamed or whole. In a stream, `_usage_raw` is the merged usage:
    message_start's values overwritten by each message_delta's non-null fields."""

    TEXT_ONLY_EVENTS = frozenset({"content_block_delta"})

    def _deferred_text(self, payload: Any) -> Iterable[Any]:
        if isinstance(payload, dict) and payload.get("type") == "content_block_delta":
            delta = as_dict(payload.get("delta"))
            return [delta.get(key) for key in _DELTA_TEXT_KEYS]
        return ()

    def _on_event(self, name: str | None, data: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            super()._on_event(name, data, payload)  # a non-JSON `event: error` still counts
            return
        kind = payload.get("type") if isinstance(payload.get("type"), str) else name
        if kind == "content_block_delta":  # by far the most frequent event: test it first
            delta = as_dict(payload.get("delta"))
            for key in _DELTA_TEXT_KEYS:
                self._add_text(delta.get(key))
        elif kind == "message_start":
            message = as_dict(payload.get("message"))
            self._take_message_fields(message)
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._usage_raw = usage
        elif kind == "message_delta":
            self._set_stop_reason(dig(payload, "delta", "stop_reason"))
            usage = payload.get("usage")
            if isinstance(usage, dict):
                # A new dict, not an update in place: a result() taken earlier keeps its values.
                start = self._usage_raw if isinstance(self._usage_raw, dict) else {}
                self._usage_raw = start | {key: value for key, value in usage.items() if value is not None}
        elif kind == "content_block_start":
            self._add_block_text(as_dict(payload.get("content_block")))
        elif kind == "message_stop":
            self.out.complete = True
        elif kind == "error":
            self._record_error(payload, in_stream=True)
        # ping and unknown event types are ignored on purpose

    def _on_json(self, body: Any, status_code: int) -> None:
        if self._on_json_error(body, status_code) or not isinstance(body, dict):
            return
        self._take_message_fields(body)
        usage = body.get("usage")
        if isinstance(usage, dict):
            self._usage_raw = usage
        for block in as_list(body.get("content")):
            if isinstance(block, dict):
                self._add_block_text(block)

    def _usage(self) -> Usage | None:
        return anthropic_usage(self._usage_raw) if isinstance(self._usage_raw, dict) else None

    def _take_message_fields(self, message: dict[str, Any]) -> None:
        self._set_model(message.get("model"))
        self._set_message_id(message.get("id"))
        self._set_stop_reason(message.get("stop_reason"))

    def _set_stop_reason(self, reason: Any) -> None:
        if as_str(reason):
            self.out.stop_reason = reason

    def _add_block_text(self, block: dict[str, Any]) -> None:
        self._add_text(block.get("text"))
        self._add_text(block.get("thinking"))
        tool_input = block.get("input")
        if isinstance(tool_input, dict) and tool_input:  # streamed blocks start with `{}`
            self._add_text(dumps_compact(tool_input))


class AnthropicCountTokensParser(_AnthropicParser):
    """`{"input_tokens": N}` is a count, not consumption: it goes to `counted_tokens`."""

    def _on_json(self, body: Any, status_code: int) -> None:
        if self._on_json_error(body, status_code) or not isinstance(body, dict):
            return
        self.out.counted_tokens = as_int(body.get("input_tokens"))


# -- requests -------------------------------------------------------------------------------
# Older Claude Code builds: metadata.user_id = "user_<hash>_account_<uuid>_session_<uuid>".
_LEGACY_SESSION_ID = re.compile(r"_session_([0-9A-Za-z-]+)$")


def session_id_from_user_id(user_id: Any) -> str | None:
    if not isinstance(user_id, str):
        return None
    text = user_id.strip()
    if text.startswith("{"):
        return as_str(as_dict(loads(text)).get("session_id"))
    match = _LEGACY_SESSION_ID.search(text)
    return match.group(1) if match else None


def cache_ttl(body: dict[str, Any], messages_rank: int | None = None) -> str | None:
    """'1h' when any `cache_control` asks for a 1 h TTL, '5m' when there is one at all, else None.

    A `cache_control` may sit on the body (automatic caching), system blocks, tools, message
    content blocks and the blocks nested in tool results. `messages_rank`: the largest
    `item_summary` of the messages, when known (messages reused from the conversation's previous
    request are not walked again)."""
    rank = _ttl_rank((body,), as_list(body.get("system")), as_list(body.get("tools")))
    if rank < 2:
        if messages_rank is None:
            messages_rank = max((item_summary(message) for message in as_list(body.get("messages"))), default=0)
        rank = max(rank, messages_rank)
    return _TTLS[rank]


_TTLS = (None, "5m", "1h")
REQUEST_ITEMS_KEY = "messages"  # the body's message list (addons/providers/incremental.py)


def item_summary(message: Any) -> int:
    """What `parse_request` needs of one message: the rank of its longest `cache_control` TTL
    (0 none, 1 5m, 2 1h) over its content blocks and the blocks nested in tool results."""
    if not isinstance(message, dict):
        return 0
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    groups: list[Any] = [content]
    for block in content:
        if isinstance(block, dict):
            nested = block.get("content")
            if isinstance(nested, list):
                groups.append(nested)
    return _ttl_rank(*groups)


def _ttl_rank(*groups: Any) -> int:
    """Written as plain loops: it runs over every block of a new message."""
    seen = 0
    for group in groups:
        for item in group:
            if isinstance(item, dict):
                control = item.get("cache_control")
                if isinstance(control, dict):
                    if control.get("ttl") == "1h":
                        return 2
                    seen = 1
    return seen


def tool_errors_in_last_user_message(messages: list[Any]) -> int | None:
    for message in reversed(messages):
        message = as_dict(message)
        if message.get("role") != "user":
            continue
        return sum(
            1
            for block in as_list(message.get("content"))
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error") is True
        )
    return None


@returns_on_error(RequestInfo)
def parse_request(body: dict[str, Any], items_summary: int | None = None) -> RequestInfo:
    """`items_summary`: the largest `item_summary` of the messages, when the caller has it."""
    body = as_dict(body)
    info = request_basics(body)
    messages = as_list(body.get("messages"))
    info.message_count = len(messages) if "messages" in body else None
    info.tool_errors = tool_errors_in_last_user_message(messages)
    info.cache_ttl = cache_ttl(body, items_summary)
    info.body_session_id = session_id_from_user_id(dig(body, "metadata", "user_id"))
    info.side_call = not body.get("tools") and isinstance(dig(body, "output_config", "format"), dict)
    info.newest_user_parts = newest_user_parts(messages)
    system = body.get("system")  # the closure keeps these two, not the whole body (tools, ...)
    info.items, info.instructions, info.offers_tools = messages, system, bool(body.get("tools"))
    info.read_conversation = lambda: (
        [chat_message(m) for m in messages if isinstance(m, dict)],
        text_of(system) or None,
    )
    return info
