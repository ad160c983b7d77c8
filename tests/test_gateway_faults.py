"""Byte-identical pass-through, provider errors, broken streams, a busy database and SIGKILL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.conftest import TEST_KEYS
from tests.upstream import EXPECTED

MSG_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def _label() -> str:
    return "f-" + uuid.uuid4().hex[:10]


def _raw(url: str, body: dict, headers: dict) -> tuple[int, dict, bytes]:
    """The exact bytes on the wire after de-chunking, without decoding Content-Encoding."""
    with httpx.Client(timeout=10) as c:
        with c.stream("POST", url, json=body, headers=headers) as r:
            data = b"".join(r.iter_raw())
            return r.status_code, dict(r.headers), data


def test_upstream_gets_the_clients_headers_as_sent(gateway, upstream):
    """Only llmsm's own headers are taken off: no mitmproxy addon rewrites compression or cache
    validators (mitmdump's anticomp and anticache would), nor anything else."""
    label = _label()
    sent = {
        "x-api-key": TEST_KEYS["anthropic"], "accept-encoding": "gzip, br", "if-none-match": '"v1"',
        "if-modified-since": "Wed, 25 Nov 2026 10:00:00 GMT", "cookie": "a=1", "x-custom": label,
        "anthropic-beta": "context-1m-2025-08-07",
    }
    status, _, _ = _raw(f"{gateway.url}/anthropic/v1/messages", MSG_BODY, dict(sent, **{"x-llmsm-session": label}))
    assert status == 200
    [got] = [r for r in upstream.requests if r["headers"].get("x-custom") == label]
    received = {k.lower(): v for k, v in got["headers"].items()}
    assert {k: received.get(k) for k in sent} == sent
    assert "x-llmsm-session" not in received


@pytest.mark.parametrize("flags", ["", "gzip", "bytewise", "gzip,bytewise"])
@pytest.mark.parametrize("stream", [True, False])
def test_pass_through_is_byte_identical(gateway, upstream, flags, stream):
    label = _label()
    body = dict(MSG_BODY, stream=stream)
    headers = {"x-fake": flags, "x-api-key": TEST_KEYS["anthropic"], "accept-encoding": "gzip"}
    s1, h1, direct = _raw(f"{upstream.url}/v1/messages", body, headers)
    s2, h2, proxied = _raw(f"{gateway.url}/anthropic/v1/messages", body, dict(headers, **{"x-llmsm-session": label}))
    assert s1 == s2 == 200
    assert proxied == direct
    assert h2.get("content-encoding") == h1.get("content-encoding")
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == EXPECTED["anthropic"][:4]
    assert row["response_bytes"] == len(direct)


@pytest.mark.parametrize("status,kind", [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error")])
def test_anthropic_http_errors(gateway, status, kind):
    label = _label()
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                                 default_headers={"x-llmsm-session": label, "x-fake": f"status={status}"})
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(**MSG_BODY)
    assert info.value.status_code == status
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "http_error" and row["status_code"] == status
    assert row["error_type"] == kind
    assert row["usage_source"] == "none" and row["input_tokens"] is None


def test_non_json_error_page(gateway):
    label = _label()
    r = httpx.post(f"{gateway.url}/anthropic/v1/messages", json=MSG_BODY,
                   headers={"x-llmsm-session": label, "x-fake": "status=413,html"}, timeout=10)
    assert r.status_code == 413 and b"<html>" in r.content
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "http_error" and row["error_type"] == "http_413"
    assert "Request Entity Too Large" in row["error_message"]


@pytest.mark.parametrize("route", ["anthropic", "openai"])
def test_error_event_inside_200_stream(gateway, route):
    label = _label()
    headers = {"x-llmsm-session": label, "x-fake": "error_event"}
    if route == "anthropic":
        client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0, default_headers=headers)
        with pytest.raises(anthropic.APIStatusError):
            with client.messages.stream(**MSG_BODY) as s:
                for _ in s.text_stream:
                    pass
    else:
        client = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1", max_retries=0, default_headers=headers)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True):
                pass
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["status_code"] == 200 and row["outcome"] == "stream_error"
    assert row["error_type"]


def test_upstream_reset_mid_stream(gateway):
    label = _label()
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                                 default_headers={"x-llmsm-session": label, "x-fake": "reset_after=4"})
    with pytest.raises(Exception):
        with client.messages.stream(**MSG_BODY) as s:
            for _ in s.text_stream:
                pass
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "upstream_aborted"
    # what was seen is kept: message_start's input, and the output estimated from the text that passed
    assert row["input_tokens"] == 21 and row["usage_source"] == "estimated"


def test_client_gone_mid_stream(gateway):
    label = _label()
    body = dict(MSG_BODY, stream=True)
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        payload = json.dumps(body).encode()
        s.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"x-llmsm-session: {label}\r\nx-fake: slow=0.3\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        first = s.recv(4096)
        assert b"200" in first.split(b"\r\n", 1)[0]
    [row] = gateway.wait_rows(1, f"session_id = '{label}'", timeout=15)
    assert row["outcome"] == "client_aborted"


HOLDER = textwrap.dedent(
    """
    import sys, time
    from llmsm.analytics import store
    # The gateway's writer holds the file for a moment each batch (other tests share this
    # gateway): the holder waits for its turn as llmsm's own commands do.
    con = store.connect(sys.argv[1], timeout=20)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def test_reader_holding_the_database_loses_nothing(gateway):
    gateway.wait_rows(0)
    tag = _label()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(gateway.db), "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                                     default_headers={"x-llmsm-session": tag})
        t0 = time.time()
        for _ in range(10):
            client.messages.create(**MSG_BODY)
        # traffic was not slowed by the held database
        assert time.time() - t0 < 3
    finally:
        holder.wait(20)
    rows = gateway.wait_rows(10, f"session_id = '{tag}'", timeout=15)
    assert len(rows) == 10


def test_sigkill_and_restart_loses_no_completed_exchange(fresh_gateway):
    gw = fresh_gateway.start()
    tag = _label()
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                 default_headers={"x-llmsm-session": tag})
    done = 0
    stop = threading.Event()

    def traffic():
        nonlocal done
        while not stop.is_set():
            try:
                client.messages.create(**MSG_BODY)
                done += 1
            except Exception:
                return

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(1.0)
    gw.kill()
    stop.set()
    t.join(10)
    assert done > 0
    gw.start()
    rows = gw.wait_rows(done, f"session_id = '{tag}'", timeout=15)
    assert len(rows) >= done
    assert len({r["id"] for r in rows}) == len(rows)


def test_api_keys_never_stored(gateway):
    label = _label()
    a = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                            default_headers={"x-llmsm-session": label, "cookie": "session=COOKIE-SECRET-42"})
    a.messages.create(**MSG_BODY)
    o = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1", max_retries=0,
                      default_headers={"x-llmsm-session": label})
    o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={TEST_KEYS['gemini']}",
               json={"contents": []}, headers={"x-llmsm-session": label}, timeout=10)
    rows = gateway.wait_rows(3, f"session_id = '{label}'")
    assert len({r["account"] for r in rows}) == 3 and all(r["account"].startswith("key:") for r in rows)
    time.sleep(1.0)  # let the writer close the file
    files = [p for p in gateway.db.parent.rglob("*") if p.is_file()]
    blob = b"".join(p.read_bytes() for p in files if p.is_file())
    for secret in [*TEST_KEYS.values(), "COOKIE-SECRET-42"]:
        assert secret.encode() not in blob


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_flushes_and_exits_cleanly(fresh_gateway, sig):
    import signal as signals

    gw = fresh_gateway.start()
    tag = _label()
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                 default_headers={"x-llmsm-session": tag})
    for _ in range(5):
        client.messages.create(**MSG_BODY)
    code = gw.stop(getattr(signals, sig))  # right away: the writer may not have flushed yet
    assert code == 0
    assert not gw.db.with_name(gw.db.name + ".gateway.json").exists()
    spool = gw.db.with_name(gw.db.name + ".spool")
    assert not any(p.stat().st_size for p in spool.glob("*")) if spool.exists() else True
    assert len(gw.query(f"SELECT id FROM requests WHERE session_id = '{tag}'")) == 5
    assert "Traceback" not in gw.log.read_text()


def test_gzip_request_body_is_read_and_forwarded_as_sent(gateway, upstream):
    """A compressed request body: forwarded byte for byte, and read (decoded) for the row."""
    import gzip

    label = _label()
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                    {"role": "user", "content": "again"}]}).encode()
    packed = gzip.compress(body)
    headers = {"x-api-key": TEST_KEYS["anthropic"], "content-type": "application/json", "content-encoding": "gzip",
               "x-llmsm-session": label}
    r = httpx.post(f"{gateway.url}/anthropic/v1/messages", content=packed, headers=headers, timeout=30)
    assert r.status_code == 200
    assert upstream.requests[-1]["body"] == packed  # the upstream got the client's bytes
    rows = gateway.wait_rows(1, f"session_id = '{label}'")
    assert rows[0]["requested_model"] == "claude-sonnet-4-6" and rows[0]["message_count"] == 3


def test_the_same_request_again_has_the_same_request_hash(gateway):
    """request_hash tells a retry (the very same body) from the next turn (any other body)."""
    label = _label()
    headers = {"x-api-key": TEST_KEYS["anthropic"], "content-type": "application/json", "x-llmsm-session": label}
    first = json.dumps(dict(MSG_BODY, messages=[{"role": "user", "content": "hi there"}])).encode()
    other = first.replace(b"hi there", b"hi thera")  # same length, one byte apart
    for body in (first, first, other):
        assert httpx.post(f"{gateway.url}/anthropic/v1/messages", content=body, headers=headers, timeout=30).status_code == 200
    rows = sorted(gateway.wait_rows(3, f"session_id = '{label}'"), key=lambda r: r["started_at"])
    hashes = [r["request_hash"] for r in rows]
    assert hashes[0] == hashes[1] != hashes[2]
    assert all(len(h) == 16 for h in hashes)
