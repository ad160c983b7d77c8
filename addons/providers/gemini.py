"""Google Gemini: `:generateContent` (JSON), `:streamGenerateContent?alt=sse`, `:countTokens`.

Every stream chunk carries a cumulative `usageMetadata`: the LAST one is the usage (never a sum
or a max: a real capture goes 15, 15, 13 for the prompt). There are no `event:` lines and no
`[DONE]`: a stream is complete once a candidate with a `finishReason` was seen.
Gemini CLI with a Google login talks to Code Assist, which wraps each body in
`{"response": {...}}` and each request in `{"model", "project", "request": {...}}`.
"""

from __future__ import annotations

from typing import Any

from llmsm.addons.providers._common import (
    BaseResponseParser,
    as_dict,
    as_int,
    as_list,
    as_str,
    chat_message,
    dumps_compact,
    newest_user_parts,
    returns_on_error,
    text_of,
    uncached,
)
from llmsm.addons.providers.base import RequestInfo
from llmsm.analytics.events import Usage

__all__ = ["GeminiParser", "GeminiCountTokensParser", "parse_request", "gemini_usage"]

# generationConfig keys that ask for JSON-schema output (Gemini CLI's routing call sends the first).
_SCHEMA_KEYS = ("responseJsonSchema", "responseSchema", "response_json_schema", "response_schema")


def gemini_usage(meta: dict[str, Any]) -> Usage | None:
    """Normalized usage of a `usageMetadata`; None when it reports no counts.

    input = promptTokenCount + toolUsePromptTokenCount - cachedContentTokenCount;
    output = candidates + thoughts. The tool-use prompt (what a built-in tool such as URL
    context or search fetched into the prompt) is billed as input and is part of
    totalTokenCount, which the normalized counts therefore add up to; genai-prices prices it
    as input too. A real capture: prompt 32, tool-use prompt 4,610, total 4,704.
    """
    prompt = as_int(meta.get("promptTokenCount"))
    candidates = as_int(meta.get("candidatesTokenCount"))
    thoughts = as_int(meta.get("thoughtsTokenCount"))
    tool_prompt = as_int(meta.get("toolUsePromptTokenCount"))
    if prompt is None and candidates is None and thoughts is None and tool_prompt is None:
        return None
    # Protobuf JSON omits zero counts: an absent count is 0, not unknown.
    cached = as_int(meta.get("cachedContentTokenCount")) or 0
    if tool_prompt:
        prompt = (prompt or 0) + tool_prompt
    return Usage(
        input_tokens=uncached(prompt, cached),
        output_tokens=(candidates or 0) + (thoughts or 0),
        cache_read_tokens=cached,
        cache_write_tokens=0,  # Gemini bills no cache writes per request (cached content is created apart)
        cache_write_1h_tokens=None,
        reasoning_tokens=thoughts or 0,
    )


def unwrap_code_assist(body: Any) -> Any:
    """The Gemini body inside a Code Assist `{"response": {...}}` envelope (or `body` itself)."""
    if isinstance(body, dict) and isinstance(body.get("response"), dict) and "candidates" not in body:
        return body["response"]
    return body


class GeminiParser(BaseResponseParser):
    def _on_event(self, name: str | None, data: str, payload: Any) -> None:
        if isinstance(payload, dict):
            self._on_chunk(payload)
        elif isinstance(payload, list):  # a JSON-array stream cut into events by a proxy
            for item in payload:
                if isinstance(item, dict):
                    self._on_chunk(item)
        else:
            super()._on_event(name, data, payload)

    def _on_json(self, body: Any, status_code: int) -> None:
        # streamGenerateContent without alt=sse answers a JSON array of chunks
        for chunk in body if isinstance(body, list) else [body]:
            if isinstance(chunk, dict):
                if status_code >= 400:
                    self._record_error(unwrap_code_assist(chunk), in_stream=False)
                else:
                    self._on_chunk(chunk)

    def _on_chunk(self, chunk: dict[str, Any]) -> None:
        chunk = as_dict(unwrap_code_assist(chunk))
        if chunk.get("error"):
            self._record_error(chunk, in_stream=True)  # an error in a 200 body or stream
            return
        self._set_model(chunk.get("modelVersion"))
        self._set_message_id(chunk.get("responseId"))
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage_raw = usage
        for candidate in as_list(chunk.get("candidates")):
            if isinstance(candidate, dict):
                self._on_candidate(candidate)

    def _on_candidate(self, candidate: dict[str, Any]) -> None:
        for part in as_list(as_dict(candidate.get("content")).get("parts")):
            part = as_dict(part)
            self._add_text(part.get("text"))  # thought parts too: thoughts are billed as output
            call = part.get("functionCall")
            if isinstance(call, dict):
                self._add_text(dumps_compact(call.get("args")))
        reason = candidate.get("finishReason")
        if as_str(reason):
            self.out.stop_reason = reason
            self.out.complete = True

    def _usage(self) -> Usage | None:
        return gemini_usage(self._usage_raw) if isinstance(self._usage_raw, dict) else None


class GeminiCountTokensParser(BaseResponseParser):
    """`{"totalTokens": N}` is a count, not consumption: it goes to `counted_tokens`."""

    def _on_json(self, body: Any, status_code: int) -> None:
        body = unwrap_code_assist(body)
        if not isinstance(body, dict):
            return
        if status_code >= 400 or body.get("error"):
            self._record_error(body, in_stream=status_code < 400)
            return
        self.out.counted_tokens = as_int(body.get("totalTokens"))


REQUEST_ITEMS_KEY = "contents"  # the body's message list (addons/providers/incremental.py)


@returns_on_error(RequestInfo)
def parse_request(body: dict[str, Any]) -> RequestInfo:
    body = as_dict(body)
    # The model is in the URL path, except for Code Assist, whose envelope names it.
    info = RequestInfo(model=as_str(body.get("model")))
    if isinstance(body.get("request"), dict):
        body = body["request"]
    contents = as_list(body.get("contents"))
    info.message_count = len(contents) if "contents" in body else None
    system = body.get("systemInstruction") or body.get("system_instruction")  # not the whole body
    config = as_dict(body.get("generationConfig") or body.get("generation_config"))
    structured = any(k in config for k in _SCHEMA_KEYS) or config.get("responseMimeType") == "application/json"
    info.side_call = structured and not body.get("tools")
    info.newest_user_parts = newest_user_parts(contents)
    info.items, info.instructions, info.offers_tools = contents, system, bool(body.get("tools"))
    info.read_conversation = lambda: (
        [
            chat_message(content, role="assistant" if content.get("role") == "model" else None)
            for content in contents
            if isinstance(content, dict)
        ],
        text_of(system) or None,
    )
    return info
