"""Real providers are https: the gateway re-targets plain-HTTP clients to a TLS upstream."""

from __future__ import annotations

import ssl
import threading
import uuid

import anthropic
import pytest

from tests.conftest import TEST_KEYS, Gateway
from tests.test_explicit_proxy import _self_signed
from tests.upstream import EXPECTED, FakeUpstream, _Handler


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(tmp)
    owner = FakeUpstream()  # only for its request log; its plain listener is not started
    server = FakeUpstream._Server(("127.0.0.1", 0), _Handler)
    server.owner = owner
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # quick shutdown
    yield f"https://localhost:{server.server_address[1]}", cert
    server.shutdown()


def test_https_upstream_with_its_ca(tls_upstream, tmp_path):
    url, cert = tls_upstream
    gw = Gateway(tmp_path, url, extra_args=("--upstream-ca", str(cert))).start()
    try:
        label = "tls-" + uuid.uuid4().hex[:6]
        client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                     default_headers={"x-llmsm-session": label})
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as s:
            "".join(s.text_stream)
        [row] = gw.wait_rows(1, f"session_id = '{label}'")
        assert (row["input_tokens"], row["output_tokens"]) == EXPECTED["anthropic"][:2]
        assert row["upstream"].startswith("https://localhost:")
    finally:
        gw.stop()


def test_https_upstream_with_an_untrusted_certificate_is_refused(tls_upstream, tmp_path):
    url, _ = tls_upstream
    gw = Gateway(tmp_path, url).start()
    try:
        label = "tlsbad-" + uuid.uuid4().hex[:6]
        client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                     default_headers={"x-llmsm-session": label})
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 502 and "certificate" in str(info.value).lower()
        [row] = gw.wait_rows(1, f"session_id = '{label}'")
        assert row["outcome"] == "proxy_error"
    finally:
        gw.stop()
