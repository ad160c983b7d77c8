"""When the upstream cannot answer, the client gets a JSON error its SDK can read, and the
exchange is kept as a `proxy_error` row."""

from __future__ import annotations

import socket
import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.conftest import TEST_KEYS, Gateway


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


@pytest.fixture(scope="module")
def broken_gateway(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broken")
    gw = Gateway(tmp, upstream.url, extra_args=(
        "--upstream", f"anthropic=http://127.0.0.1:{_closed_port()}",
        "--upstream", "gemini=http://no-such-host.invalid",
        "--upstream-timeout", "1",
    )).start()
    yield gw
    gw.stop()


def test_refused_connection_gives_a_readable_502(broken_gateway):
    label = "refused-" + uuid.uuid4().hex[:6]
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{broken_gateway.url}/anthropic",
                                 max_retries=0, default_headers={"x-llmsm-session": label})
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert "llmsm" in str(info.value) and "<html>" not in str(info.value)
    [row] = broken_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "proxy_error" and row["status_code"] is None
    assert row["error_message"]


def test_unresolvable_host_gives_a_readable_502(broken_gateway):
    label = "nxdomain-" + uuid.uuid4().hex[:6]
    r = httpx.post(f"{broken_gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                   json={"contents": []}, headers={"x-llmsm-session": label}, timeout=30)
    assert r.status_code == 502
    body = r.json()
    assert body["error"]["code"] == 502 and body["error"]["status"] == "UNAVAILABLE"
    [row] = broken_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "proxy_error"


def test_hanging_upstream_times_out(broken_gateway):
    label = "hang-" + uuid.uuid4().hex[:6]
    client = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{broken_gateway.url}/openai/v1", max_retries=0,
                           default_headers={"x-llmsm-session": label, "x-fake": "stall=5"})
    t0 = time.time()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert time.time() - t0 < 4
    [row] = broken_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "proxy_error"
    assert "no response within 1 s" in row["error_message"]


def test_gateway_keeps_serving_after_errors(broken_gateway):
    label = "after-" + uuid.uuid4().hex[:6]
    client = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{broken_gateway.url}/openai/v1", max_retries=0,
                           default_headers={"x-llmsm-session": label})
    out = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert out.usage.prompt_tokens == 120
