"""OpenAI Responses API (`POST /v1/responses`, Codex's `/backend-api/codex/responses`).

Usage is only in the terminal event (`response.completed`, `response.incomplete` or
`response.failed`, under `response.usage`); there is no `[DONE]`. The same events arrive as
WebSocket messages when Codex uses its WebSocket transport: `feed_message` takes those
already-parsed dicts, and `feed_event` is a thin SSE adapter over it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmsm.addons.providers._common import (
    JSON_OUTPUT_TYPES,
    BaseResponseParser,
    as_dict,
    as_list,
    as_str,
    chat_message,
    dig,
    newest_user_parts,
    request_basics,
    returns_on_error,
    swallow_errors,
    text_of,
)
from llmsm.addons.providers.base import RequestInfo
from llmsm.addons.providers.openai_chat import openai_usage
from llmsm.analytics.events import Usage

__all__ = ["OpenAIResponsesParser", "parse_request"]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_EVENTS = TERMINAL_EVENTS | {"response.created", "response.in_progress", "response.queued"}
# Deltas of generated text and tool input (not audio: base64 is no text to estimate).
_TEXT_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",  # Codex's apply_patch is a custom tool
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)


class OpenAIResponsesParser(BaseResponseParser):
    TEXT_ONLY_EVENTS = _TEXT_DELTA_EVENTS

    def _deferred_text(self, payload: Any) -> Iterable[Any]:
        if isinstance(payload, dict) and payload.get("type") in _TEXT_DELTA_EVENTS:
            return [payload.get("delta")]
        return ()

    @swallow_errors
    def feed_message(self, message: dict[str, Any]) -> None:
        """One Responses event as a parsed dict (a WebSocket message, or an SSE event's data)."""
        if isinstance(message, dict):
            self._on_message(message.get("type"), message)

    def _on_event(self, name: str | None, data: str, payload: Any) -> None:
        if isinstance(payload, dict):
            kind = payload.get("type")
            self._on_message(kind if isinstance(kind, str) else name, payload)
        else:
            super()._on_event(name, data, payload)

    def _on_message(self, kind: Any, message: dict[str, Any]) -> None:
        if kind in _TEXT_DELTA_EVENTS:  # the most frequent events
            self._add_text(message.get("delta"))
        elif kind in _RESPONSE_EVENTS:
            response = as_dict(message.get("response"))
            self._take_response(response, terminal=kind in TERMINAL_EVENTS)
            if kind in TERMINAL_EVENTS:
                self.out.complete = True
                if kind == "response.failed":
                    self._record_error(response.get("error"), in_stream=True)
                    self.out.stream_error = True  # failed even when its error object is missing
        elif kind == "error":
            self._record_error(message, in_stream=True)

    def _on_json(self, body: Any, status_code: int) -> None:
        if not isinstance(body, dict):
            return
        if status_code >= 400:
            self._record_error(body, in_stream=False)
            return
        self._take_response(body, terminal=True)
        for item in as_list(body.get("output")):
            self._add_text(text_of(item))
        if isinstance(body.get("error"), dict):  # a failed response in a 200 body
            self._record_error(body, in_stream=True)

    def _take_response(self, response: dict[str, Any], *, terminal: bool) -> None:
        self._set_model(response.get("model"))
        self._set_message_id(response.get("id"))
        usage = response.get("usage")
        if isinstance(usage, dict):
            self._usage_raw = usage
        if terminal:
            # No finish reason in this API: why it stopped early, else its final status.
            reason = as_str(dig(response, "incomplete_details", "reason")) or as_str(response.get("status"))
            if reason:
                self.out.stop_reason = reason

    def _usage(self) -> Usage | None:
        if not isinstance(self._usage_raw, dict):
            return None
        return openai_usage(self._usage_raw, "input_tokens", "output_tokens")


def _input_messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages = []
    for item in as_list(items):
        if isinstance(item, str):
            messages.append({"role": "user", "content": item})
        elif isinstance(item, dict):
            kind = item.get("type")
            if kind in ("function_call_output", "custom_tool_call_output"):
                messages.append(chat_message(item, role="tool"))
            elif kind in ("function_call", "custom_tool_call"):
                messages.append(chat_message(item, role="assistant"))
            elif kind != "reasoning":  # reasoning items are encrypted: no readable text
                messages.append(chat_message(item))
    return messages


REQUEST_ITEMS_KEY = "input"  # the body's message list (addons/providers/incremental.py)


@returns_on_error(RequestInfo)
def parse_request(body: dict[str, Any]) -> RequestInfo:
    body = as_dict(body)
    # A WebSocket `response.create` frame may nest the request under "response".
    if body.get("type") == "response.create" and isinstance(body.get("response"), dict):
        body = body["response"]
    info = request_basics(body)
    items = body.get("input")
    info.message_count = 1 if isinstance(items, str) else (len(items) if isinstance(items, list) else None)
    instructions = as_str(body.get("instructions"))
    info.read_conversation = lambda: (_input_messages(items), instructions)
    info.items, info.instructions = [items] if isinstance(items, str) else as_list(items), instructions
    info.items_are_new, info.offers_tools = bool(body.get("previous_response_id")), bool(body.get("tools"))
    info.prompt_cache_key = as_str(body.get("prompt_cache_key"))
    info.side_call = not body.get("tools") and dig(body, "text", "format", "type") in JSON_OUTPUT_TYPES
    info.newest_user_parts = newest_user_parts([items] if isinstance(items, str) else as_list(items))
    # Tool outputs carry no error flag in this API: tool_errors stays None.
    return info
