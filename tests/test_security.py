"""Loopback by default; anything else needs a token; the token never travels upstream."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import REPO, TEST_KEYS, Gateway, isolated_env

TOKEN = "tok-" + uuid.uuid4().hex


def test_refuses_a_public_address_without_a_token(tmp_path):
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "proxy", "--host", "0.0.0.0", "--port", "0",
                        "--db", str(tmp_path / "x.duckdb")], capture_output=True, text=True, env=isolated_env(tmp_path),
                       cwd=REPO, timeout=60)
    assert p.returncode != 0
    assert "--auth-token" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_default_listens_on_loopback_only(gateway):
    # the gateway answers on 127.0.0.1 but not on this machine's other addresses
    others = {ip for *_, (ip, *_r) in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1", "127.0.1.1"}
    for ip in others:
        with pytest.raises(OSError):
            socket.create_connection((ip, gateway.port), timeout=1).close()
    assert httpx.get(f"{gateway.url}/", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def token_gateway(upstream, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("tok"), upstream.url,
                 extra_args=("--host", "0.0.0.0", "--auth-token", TOKEN, "--proxy-port", "0")).start()
    yield gw
    gw.stop()


def test_token_is_required_and_never_forwarded(token_gateway, upstream):
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{token_gateway.url}/anthropic/v1/messages"
    r = httpx.post(url, json=body, headers={"x-api-key": TEST_KEYS["anthropic"]}, timeout=10)
    assert r.status_code == 401 and "x-llmsm-token" in r.json()["error"]["message"]
    r = httpx.post(url, json=body, headers={"x-api-key": TEST_KEYS["anthropic"], "x-llmsm-token": "wrong"}, timeout=10)
    assert r.status_code == 401
    label = "tok-" + uuid.uuid4().hex[:6]
    r = httpx.post(url, json=body, headers={"x-api-key": TEST_KEYS["anthropic"], "x-llmsm-token": TOKEN,
                                            "x-llmsm-session": label}, timeout=10)
    assert r.status_code == 200
    [row] = token_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "ok"
    forwarded = [q for q in upstream.requests if label.encode() not in q["body"] and q["headers"].get("x-llmsm-token")]
    assert not forwarded
    assert all("x-llmsm-token" not in {k.lower() for k in q["headers"]} for q in upstream.requests)
    time.sleep(1.0)  # the writer's batch is in; the token is in no file llmsm wrote either
    blob = b"".join(p.read_bytes() for p in token_gateway.db.parent.rglob("*") if p.is_file())
    assert token_gateway.log.is_relative_to(token_gateway.db.parent) and TOKEN.encode() not in blob


def test_proxy_port_needs_the_token_as_password(token_gateway):
    with socket.create_connection(("127.0.0.1", token_gateway.proxy_port), timeout=10) as s:
        s.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
        assert b" 407 " in s.recv(4096).split(b"\r\n", 1)[0]


def test_the_token_as_proxy_password_opens_the_tunnel_and_the_user_names_the_session(token_gateway, upstream):
    """HTTPS_PROXY=http://NAME:TOKEN@host:port: the CONNECT carries the token, every request in
    the tunnel passes, NAME labels the session, and neither reaches the upstream."""
    from tests.test_explicit_proxy import CLIENT, _ca_env

    label = "tok-user-" + uuid.uuid4().hex[:6]
    env = dict(token_gateway.env, SSL_CERT_FILE=_ca_env(token_gateway)["SSL_CERT_FILE"],
               HTTPS_PROXY=f"http://{label}:{TOKEN}@127.0.0.1:{token_gateway.proxy_port}")
    env.pop("NO_PROXY", None)
    p = subprocess.run([sys.executable, "-c", CLIENT, "anthropic", TEST_KEYS["anthropic"]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    [row] = token_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["session_source"] == "label_proxy_user"
    assert not [q for q in upstream.requests if TOKEN.encode() in b"".join(
        k.encode() + str(v).encode() for k, v in q["headers"].items())]
    # a wrong password is refused at the CONNECT
    env["HTTPS_PROXY"] = f"http://{label}:wrong@127.0.0.1:{token_gateway.proxy_port}"
    p = subprocess.run([sys.executable, "-c", CLIENT, "anthropic", TEST_KEYS["anthropic"]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and "407" in p.stderr
