"""Request bodies read incrementally (addons/providers/incremental.py): a conversation's next
request reuses what its previous one parsed, and gives exactly what parsing it from scratch gives
(every RequestInfo field, the digest's items, the CRC), or it is parsed whole: edits in the middle
of the history, a changed system prompt, compaction, interleaved sessions, duplicate keys, JSON
that is not compact, bodies that are not JSON. Then the same through the real gateway: a growing
conversation's events and digests are those of the same bodies each parsed from scratch."""

from __future__ import annotations

import dataclasses
import threading
import time
import json
import uuid
import zlib

import httpx
import pytest

from llmsm.addons.providers import parse_request
from llmsm.addons.providers._common import parse_json
from llmsm.addons.providers.incremental import MIN_BODY, RequestBodies
from tests.conftest import TEST_KEYS

CC_UA = "claude-cli/2.1.197 (external, cli)"
SYSTEM = [{"type": "text", "text": "You are Claude Code.\n<env>\nPrimary working directory: /home/u/shop\n</env>",
           "cache_control": {"type": "ephemeral"}}]
TOOLS = [{"name": n, "description": f"The {n} tool.", "input_schema": {"type": "object"}} for n in ("Read", "Edit", "Bash")]
PAD = "lorem ipsum dolor sit amet, \"quoted\" \\ back [brackets] {braces}\n" * 600  # ~38 KB


def _messages(tag: str, turns: int, *, ttl: str | None = None) -> list[dict]:
    """A Claude Code history: a long first message, then tool calls and their results; the cache
    marker on the newest message (moved there each turn, as Claude Code does)."""
    m: list[dict] = [{"role": "user", "content": [{"type": "text", "text": f"Fix the importer {tag}\n{PAD}"}]}]
    for t in range(1, turns):
        m.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {t}: ünïcode ✓ and a tab\t."},
            {"type": "tool_use", "id": f"toolu_{t}", "name": "Edit" if t % 2 else "Bash",
             "input": {"file_path": f"/home/u/shop/src/m{t}.py"} if t % 2 else {"command": f"pytest -q tests/t{t}.py"}}]})
        m.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{t}",
                                               "is_error": t % 3 == 0, "content": f"result {t} " + "x" * 300}]})
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    m[-1] = {**m[-1], "content": [*m[-1]["content"][:-1], {**m[-1]["content"][-1], "cache_control": control}]}
    return m


def _body(messages: list[dict], *, system=SYSTEM, sid: str = "s1", **extra) -> dict:
    # Claude Code's order: the messages before the system prompt, the tools and the metadata.
    return {"model": "claude-sonnet-4-5", "messages": messages, "system": system, "tools": TOOLS,
            "metadata": {"user_id": json.dumps({"session_id": sid})}, "max_tokens": 32000, "stream": True, **extra}


def _raw(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _signature(info, crc: int) -> tuple:
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name not in ("read_conversation", "_conversation")}
    return fields, crc, info.messages, info.system


def _scratch(raw: bytes, api: tuple[str, str] = ("anthropic", "messages")) -> tuple:
    try:
        body = parse_json(raw)
    except ValueError:
        return None
    return _signature(parse_request(*api, body if isinstance(body, dict) else {}), zlib.crc32(raw))


def _through(bodies: RequestBodies, raw: bytes, scope=("anthropic", "messages", "acct"), api=("anthropic", "messages")):
    """What the gateway does: reuse, else parse whole, and release the kept body once the
    exchange's event is made. (signature or None, reused?)"""
    reused = bodies.reuse(*api, scope, raw)
    got = reused or bodies.parse(*api, scope, raw)
    if got is None:
        return None, reused is not None
    signature = _signature(got.info, got.crc)
    bodies.release(got.kept)
    return signature, reused is not None


def _run(bodies: RequestBodies, raws: list[bytes], **kw) -> list[bool]:
    """Every body through `bodies` gives what it gives from scratch; which ones were reused."""
    out = []
    for raw in raws:
        got, reused = _through(bodies, raw, **kw)
        assert got == _scratch(raw, kw.get("api", ("anthropic", "messages")))
        out.append(reused)
    return out


def test_a_growing_conversation_is_reused_and_exact():
    bodies = RequestBodies()
    raws = [_raw(_body(_messages("a", t))) for t in range(1, 9)]
    assert len(raws[0]) >= MIN_BODY
    # the second changes the first message (its cache marker moves on): parsed whole
    assert _run(bodies, raws) == [False, False] + [True] * 6
    # a retry (the same bytes again), then the next turn
    assert _run(bodies, [raws[-1], _raw(_body(_messages("a", 9)))]) == [True, True]
    assert len(bodies) == 2  # each request replaced the body it extends (the first stays: not extended)


def test_the_cache_ttl_and_tool_errors_follow_the_new_messages():
    bodies = RequestBodies()
    raws = [_raw(_body(_messages("t", 3))), _raw(_body(_messages("t", 4, ttl="1h"))), _raw(_body(_messages("t", 5)))]
    assert _run(bodies, raws) == [False, True, True]
    assert [_scratch(r)[0]["cache_ttl"] for r in raws] == ["5m", "1h", "5m"]
    assert _scratch(raws[1])[0]["tool_errors"] == 1


def test_an_edit_in_the_middle_of_the_history_is_read_exactly():
    bodies = RequestBodies()
    history = _messages("e", 6)
    edited = json.loads(json.dumps(history))
    edited[3]["content"][0]["content"] = "edited result"
    raws = [_raw(_body(history)), _raw(_body(_messages("e", 7))), _raw(_body(edited)), _raw(_body(edited[:1]))]
    _run(bodies, raws)


def test_a_changed_system_prompt_or_tools_or_model_is_read_exactly():
    bodies = RequestBodies()
    m = _messages("p", 4)
    other_system = [{"type": "text", "text": "Another system prompt", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    raws = [_raw(_body(m)), _raw(_body(_messages("p", 5), system=other_system)),
            _raw(_body(_messages("p", 6), system=other_system, tools=[])),  # tools after: parsed again
            _raw({"model": "claude-opus-4-5", **_body(_messages("p", 7))})]
    assert _run(bodies, raws)[:3] == [False, True, True]


def test_compaction_and_a_new_conversation_are_parsed_whole():
    bodies = RequestBodies()
    compacted = [{"role": "user", "content": [{"type": "text", "text": "Summary of the conversation so far: " + PAD}]}]
    raws = [_raw(_body(_messages("c", 6))), _raw(_body(compacted)), _raw(_body(_messages("d", 2)))]
    assert _run(bodies, raws) == [False, False, False]


def test_two_interleaved_sessions_each_reuse_their_own():
    bodies = RequestBodies()
    raws = []
    for t in range(2, 6):
        raws += [_raw(_body(_messages("A", t), sid="A")), _raw(_body(_messages("B", t), sid="B"))]
    assert _run(bodies, raws) == [False, False] + [True] * 6
    # another account's request is never read from these
    assert _run(bodies, [_raw(_body(_messages("A", 6), sid="A"))], scope=("anthropic", "messages", "other")) == [False]


def test_bodies_that_are_not_json_or_not_plain_fall_back():
    bodies = RequestBodies()
    good = _raw(_body(_messages("n", 4)))
    _run(bodies, [good])
    grown = _raw(_body(_messages("n", 5)))
    for bad in (grown[:-1], grown[:-2] + b",}", grown.replace(b'"stream":true', b'"stream":NaN')):
        assert bodies.reuse("anthropic", "messages", ("anthropic", "messages", "acct"), bad) is None
        assert _scratch(bad) is None or _through(bodies, bad)[0] in (None, _scratch(bad))
    # a trailing comma after the newest message: not JSON, whatever the kept body
    start = grown.index(b'"messages":[') + len(b'"messages":[')
    end = grown.index(b'],"system"')
    trailing = grown[:end] + b"," + grown[end:]
    assert bodies.reuse("anthropic", "messages", ("anthropic", "messages", "acct"), trailing) is None
    assert _scratch(trailing) is None
    # an element that is a number, a duplicate key after the list, a key spelt with an escape
    assert grown[start:start + 1] == b"{"
    odd = [grown[:end] + b",5" + grown[end:],
           grown[:-1] + b',"model":"claude-haiku-4-5"}',
           grown[:-1] + b',"me\\u0073sages":[]}']
    _run(bodies, odd)


def test_json_that_is_not_compact_is_reused_exactly():
    bodies = RequestBodies()
    raws = [json.dumps(_body(_messages("w", t))).encode() for t in (3, 4, 5)]  # ", " and ": "
    assert _run(bodies, raws) == [False, True, True]
    pretty = [json.dumps(_body(_messages("x", t)), indent=2).encode() for t in (3, 4)]
    assert _run(bodies, pretty) == [False, True]


def test_other_apis_message_lists_are_reused_exactly():
    bodies = RequestBodies()
    api = ("openai", "chat_completions")
    chat = [{"role": "system", "content": "You are a coder."}, {"role": "user", "content": PAD}]
    raws = []
    for t in range(4):
        chat = chat + [{"role": "assistant", "content": f"step {t}"}, {"role": "user", "content": f"go on {t}"}]
        raws.append(_raw({"model": "gpt-5", "messages": chat, "stream": True, "tools": [{"type": "function"}]}))
    assert _run(bodies, raws, api=api, scope=api) == [False, True, True, True]


def test_random_edits_are_read_exactly_or_parsed_whole():
    """A kept body, then the next one with one byte changed, dropped or added anywhere (often
    no longer JSON): whatever is reused gives what a parse from scratch gives."""
    import random

    rng = random.Random(7)
    small_pad = _messages("r", 4)
    small_pad[0]["content"][0]["text"] = "x" * (MIN_BODY + 100)
    first, nxt = _raw(_body(small_pad)), _raw(_body(small_pad + _messages("r", 5)[-2:]))
    reused = 0
    for _ in range(300):
        bodies = RequestBodies()
        bodies.release(bodies.parse("anthropic", "messages", ("s",), first).kept)
        p = rng.randrange(len(nxt)) if rng.random() < 0.5 else len(nxt) - rng.randrange(1, 3000)
        ch = rng.choice(b'{}[],:" \\0a')
        kind = rng.randrange(3)
        raw = nxt[:p] + (bytes([ch]) if kind != 1 else b"") + nxt[p + (kind != 2):]
        got, was_reused = _through(bodies, raw, scope=("s",))
        reused += was_reused
        assert got is None or got == _scratch(raw)
    assert reused > 50


def test_a_message_list_in_use_is_never_changed_and_a_released_one_is_continued():
    """A request's RequestInfo holds its kept body's message list while its exchange is in
    flight: the next request of the conversation copies it then, and continues it in place once
    it is released (the event made). Either way each request reads what a whole parse gives."""
    bodies = RequestBodies()
    scope, api = ("anthropic", "messages", "acct"), ("anthropic", "messages")
    raws = [_raw(_body(_messages("f", t))) for t in (3, 4, 5, 6)]
    edited = _messages("f", 6)
    edited[2]["content"][0]["content"] = "edited result"
    raws.append(_raw(_body(edited)))
    expected = [parse_json(raw)["messages"] for raw in raws]
    first = bodies.parse(*api, scope, raws[0])
    second = bodies.reuse(*api, scope, raws[1])  # the first still in flight
    third = bodies.reuse(*api, scope, raws[2])  # and the second
    assert first.info.items == expected[0] and second.info.items == expected[1] and third.info.items == expected[2]
    assert len({id(first.info.items), id(second.info.items), id(third.info.items)}) == 3
    bodies.release(third.kept)
    fourth = bodies.reuse(*api, scope, raws[3])
    assert fourth.info.items is third.info.items  # continued in place
    assert fourth.info.items == expected[3] and first.info.items == expected[0] and second.info.items == expected[1]
    bodies.release(fourth.kept)
    fifth = bodies.reuse(*api, scope, raws[4])  # an edit in the middle: the list cut there, then continued
    assert fifth is not None and fifth.info.items is fourth.info.items and fifth.info.items == expected[4]
    assert (_signature(fifth.info, fifth.crc) == _scratch(raws[4]))


def test_what_is_kept_is_bounded():
    bodies = RequestBodies(max_bytes=3 * 60_000)
    for i in range(10):
        _run(bodies, [_raw(_body(_messages(f"m{i}", 3), sid=str(i)))])
        assert bodies.kept_bytes <= 3 * 60_000
    assert 1 <= len(bodies) < 10


def test_no_content_keeps_no_bodies():
    """`llmsm proxy --no-content` (the option llmsm_content off): no body outlives its flow."""
    from mitmproxy.test import taddons

    from llmsm.addons.digest import DigestKeeper
    from llmsm.addons.gateway import LLMGateway

    gw, keeper = LLMGateway(), DigestKeeper()
    with taddons.context(gw, keeper) as tctx:
        gw.bodies.parse("anthropic", "messages", ("s",), _raw(_body(_messages("k", 3))))
        assert len(gw.bodies) == 1 and gw.keep_bodies
        tctx.configure(gw, llmsm_content=False)
        assert len(gw.bodies) == 0 and not gw.keep_bodies


# -- through the real gateway ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def conversation():
    """A Claude Code session's bodies: growing, a retry, an edit in the middle, a changed system
    prompt, compaction, and one that is not JSON; its other session interleaved."""
    edited = _messages("g", 5)
    edited[2]["content"][0]["content"] = "edited"
    main = [_raw(_body(_messages("g", t))) for t in (1, 2, 3, 4)]
    main += [main[-1], _raw(_body(_messages("g", 5))), _raw(_body(edited)),
             _raw(_body(_messages("g", 6), system=[{"type": "text", "text": "Other"}])),
             _raw(_body([{"role": "user", "content": "Summary: " + PAD}])), b'{"model":"claude-sonnet-4-5","messages":[' + PAD.encode()]
    side = [_raw(_body(_messages("h", t))) for t in (1, 2, 3)]
    return main, side


def _send(gateway, raws: list[bytes], sid: str, key) -> None:
    for i, raw in enumerate(raws):
        headers = {"user-agent": CC_UA, "x-app": "cli", "anthropic-version": "2023-06-01", "content-type": "application/json",
                   "x-claude-code-session-id": sid, "x-api-key": key(i)}
        r = httpx.post(f"{gateway.url}/anthropic/v1/messages?beta=true", content=raw, headers=headers, timeout=15)
        assert r.status_code in (200, 400), r.text


COMPARED = ("request_bytes", "request_hash", "requested_model", "message_count", "tool_errors", "cache_ttl",
            "input_tokens", "output_tokens", "outcome", "digest")


def test_through_the_gateway_events_and_digests_are_those_of_whole_parses(gateway, conversation):
    main, side = conversation
    tag = uuid.uuid4().hex[:8]
    one_key = TEST_KEYS["anthropic"] + tag
    # The conversation with one key (each request reads its previous one), its other session
    # interleaved; then the same bodies, each with a key of its own (no kept body to reuse).
    for i, raw in enumerate(main):
        _send(gateway, [raw], f"inc-{tag}", lambda _: one_key)
        if i < len(side):
            _send(gateway, [side[i]], f"inc2-{tag}", lambda _: one_key)
    _send(gateway, main, f"scr-{tag}", lambda i: f"{one_key}-{i}")
    inc = gateway.wait_rows(len(main), f"session_id = 'inc-{tag}'")
    scr = gateway.wait_rows(len(main), f"session_id = 'scr-{tag}'")
    assert [{c: row[c] for c in COMPARED} for row in inc] == [{c: row[c] for c in COMPARED} for row in scr]
    assert [row["message_count"] for row in inc] == [1, 3, 5, 7, 7, 9, 9, 11, 1, None]
    assert [row["request_hash"] for row in inc] == [f"{zlib.crc32(r):08x}{len(r):08x}" for r in main]
    assert any(row["digest"] for row in inc)


def test_a_request_that_arrives_while_the_one_it_extends_is_in_flight(gateway):
    """Turn 4 is sent while turn 3 still waits for its answer (then its stream breaks, so the
    gateway estimates its tokens from its messages after turn 4 has been read); turn 5 follows.
    Each row is what the same body gives parsed from scratch: turn 4 did not change the message
    list turn 3's estimate reads, and turn 5 continued turn 4's in place."""

    tag = uuid.uuid4().hex[:8]
    one_key = TEST_KEYS["anthropic"] + tag
    raws = [_raw(_body(_messages("f", t))) for t in (2, 3, 4, 5)]

    def send(raw: bytes, sid: str, key: str, fake: str = "") -> None:
        headers = {"user-agent": CC_UA, "x-app": "cli", "anthropic-version": "2023-06-01", "content-type": "application/json",
                   "x-claude-code-session-id": sid, "x-api-key": key, "x-fake": fake}
        try:
            httpx.post(f"{gateway.url}/anthropic/v1/messages", content=raw, headers=headers, timeout=15)
        except httpx.HTTPError:
            pass  # the broken stream

    sid = f"flight-{tag}"
    send(raws[0], sid, one_key)
    slow = threading.Thread(target=send, args=(raws[1], sid, one_key, "stall=1.5,reset_after=0"))
    slow.start()
    time.sleep(0.5)
    send(raws[2], sid, one_key)
    slow.join()
    send(raws[3], sid, one_key)
    for i, raw in enumerate(raws):  # each from scratch: a key of its own, nothing to reuse
        send(raw, f"scratch-{tag}", f"{one_key}-{i}", "reset_after=0" if i == 1 else "")
    got = gateway.wait_rows(4, f"session_id = '{sid}'")
    want = gateway.wait_rows(4, f"session_id = 'scratch-{tag}'")
    compared = (*COMPARED, "usage_source")
    by_count = lambda rows: sorted(({c: row[c] for c in compared} for row in rows), key=lambda r: r["message_count"])  # noqa: E731
    assert by_count(got) == by_count(want)
    assert [r["message_count"] for r in by_count(got)] == [3, 5, 7, 9]
    assert [r["usage_source"] for r in by_count(got)].count("estimated") == 1
