"""OpenAI Chat Completions (`POST /v1/chat/completions`) and OpenAI-compatible servers.

A stream carries usage only when the request set `stream_options.include_usage`: then one
chunk with `"choices": []` holds it just before `data: [DONE]`. Some servers put usage in other
chunks too; the last non-null one wins. Errors arrive as `{"error": {...}}` inside a chunk or as
an `event: error`, both inside an HTTP 200 stream.

When is a chat stream complete? `data: [DONE]` is the terminator and the normal signal.
A usage chunk that arrives at or after a finish_reason also counts: by the API contract it is
the last data chunk, so a stream cut between it and `[DONE]` lost nothing. A finish_reason
alone does NOT make a stream complete: with include_usage the usage chunk still follows it,
and a stream cut there has lost the usage (the gateway can still see `stop_reason`).
"""

from __future__ import annotations

from typing import Any

from llmsm.addons.providers._common import (
    JSON_OUTPUT_TYPES,
    BaseResponseParser,
    as_dict,
    as_int,
    as_list,
    as_str,
    chat_message,
    dig,
    newest_user_parts,
    request_basics,
    returns_on_error,
    uncached,
)
from llmsm.addons.providers.base import RequestInfo
from llmsm.analytics.events import Usage

__all__ = ["OpenAIChatParser", "parse_request", "openai_usage"]

_DONE = "[DONE]"


def openai_usage(raw: dict[str, Any], input_key: str, output_key: str) -> Usage | None:
    """Normalized usage of an OpenAI usage object (chat: prompt/completion, responses:
    input/output; details live under `<key>_details`). None when it reports no counts."""
    prompt = as_int(raw.get(input_key))
    completion = as_int(raw.get(output_key))
    if prompt is None and completion is None:
        return None
    input_details = as_dict(raw.get(f"{input_key}_details"))
    output_details = as_dict(raw.get(f"{output_key}_details"))
    # Absent details mean nothing was cached / no reasoning: OpenAI omits zero details.
    cache_read = as_int(input_details.get("cached_tokens")) or 0
    # OpenAI charges nothing extra for cache writes, so the normalized count is 0,
    # except newer responses that carry `cache_write_tokens` as a part of the prompt.
    cache_write = as_int(input_details.get("cache_write_tokens")) or 0
    return Usage(
        input_tokens=uncached(prompt, cache_read, cache_write),
        output_tokens=completion,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=None,
        reasoning_tokens=as_int(output_details.get("reasoning_tokens")) or 0,
    )


class OpenAIChatParser(BaseResponseParser):
    def __init__(self) -> None:
        super().__init__()
        self._finish_seen = False

    def _on_event(self, name: str | None, data: str, payload: Any) -> None:
        if isinstance(payload, dict) and name != "error":
            self._on_chunk(payload, in_stream=True)
        elif data.strip() == _DONE:
            self.out.complete = True
        elif name == "error":
            self._record_error(payload, in_stream=True, raw_text=data)

    def _on_json(self, body: Any, status_code: int) -> None:
        if not isinstance(body, dict):
            return
        if status_code >= 400:
            self._record_error(body, in_stream=False)
            return
        self._on_chunk(body, in_stream=False)

    def _on_chunk(self, chunk: dict[str, Any], *, in_stream: bool) -> None:
        if chunk.get("error"):
            self._record_error(chunk, in_stream=True)  # an error object in a 200 body or stream
        self._set_model(chunk.get("model"))
        self._set_message_id(chunk.get("id"))
        for choice in as_list(chunk.get("choices")):
            if isinstance(choice, dict):
                self._on_choice(choice)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage_raw = usage
            if in_stream and self._finish_seen:
                self.out.complete = True

    def _on_choice(self, choice: dict[str, Any]) -> None:
        message = choice.get("delta")  # a stream chunk
        if not isinstance(message, dict):
            message = as_dict(choice.get("message"))  # a whole completion
        self._add_text(message.get("content"))
        self._add_text(message.get("refusal"))
        # Reasoning text of compatible servers (reasoning_content: DeepSeek/vLLM, reasoning: Groq,
        # OpenRouter); billed as completion tokens, so it belongs in an estimate.
        self._add_text(message.get("reasoning_content") or message.get("reasoning"))
        for call in as_list(message.get("tool_calls")):
            self._add_text(dig(call, "function", "arguments"))
        self._add_text(dig(message, "function_call", "arguments"))  # legacy functions API
        reason = choice.get("finish_reason")
        if as_str(reason):
            self.out.stop_reason = reason
            self._finish_seen = True

    def _usage(self) -> Usage | None:
        if not isinstance(self._usage_raw, dict):
            return None
        return openai_usage(self._usage_raw, "prompt_tokens", "completion_tokens")


REQUEST_ITEMS_KEY = "messages"  # the body's message list (addons/providers/incremental.py)


@returns_on_error(RequestInfo)
def parse_request(body: dict[str, Any]) -> RequestInfo:
    body = as_dict(body)
    info = request_basics(body)
    info.include_usage = dig(body, "stream_options", "include_usage") is True
    messages = as_list(body.get("messages"))
    info.message_count = len(messages) if "messages" in body else None
    info.read_conversation = lambda: ([chat_message(m) for m in messages if isinstance(m, dict)], None)
    info.items, info.offers_tools = messages, bool(body.get("tools") or body.get("functions"))
    # Tool results carry no error flag in chat completions: tool_errors stays None.
    info.prompt_cache_key = as_str(body.get("prompt_cache_key"))
    no_tools = not body.get("tools") and not body.get("functions")
    info.side_call = no_tools and dig(body, "response_format", "type") in JSON_OUTPUT_TYPES
    info.newest_user_parts = newest_user_parts(messages)
    return info
