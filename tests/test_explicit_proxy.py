"""Explicit-proxy mode: HTTPS_PROXY clients, TLS intercepted only for known AI hosts."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import REPO, TEST_KEYS, Gateway
from tests.upstream import EXPECTED

CLIENT = """
import anthropic, openai, sys
kind = sys.argv[1]
if kind == "anthropic":
    c = anthropic.Anthropic(api_key=sys.argv[2], max_retries=0)  # default base URL: https://api.anthropic.com
    m = c.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    print(m.usage.output_tokens)
else:
    c = openai.OpenAI(api_key=sys.argv[2], max_retries=0)
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True}))
    print(chunks[-1].usage.completion_tokens)
"""


@pytest.fixture(scope="module")
def proxy_gateway(upstream, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("xp"), upstream.url, extra_args=("--proxy-port", "0")).start()
    yield gw
    gw.stop()


def _ca_env(gw: Gateway) -> dict:
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "certs", "env", "--json", "--db", str(gw.db)],
                       capture_output=True, text=True, env=gw.env, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_certs_env_and_key_permissions(proxy_gateway):
    env = _ca_env(proxy_gateway)
    for key in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CODEX_CA_CERTIFICATE"):
        assert key in env
    assert env["HTTPS_PROXY"] == f"http://127.0.0.1:{proxy_gateway.proxy_port}"
    from pathlib import Path

    cert = Path(env["NODE_EXTRA_CA_CERTS"])
    key = cert.parent / "mitmproxy-ca.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    assert cert.read_text().strip() in bundle and bundle.count("BEGIN CERTIFICATE") > 10  # system roots too
    # `llmsm certs` never prints the key
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "certs", "env", "--db", str(proxy_gateway.db)],
                       capture_output=True, text=True, env=proxy_gateway.env, cwd=REPO, timeout=60)
    assert "PRIVATE KEY" not in p.stdout + p.stderr


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_sdk_through_https_proxy_with_ca_from_ssl_cert_file(proxy_gateway, kind):
    ca = _ca_env(proxy_gateway)
    label = f"xp-{kind}-{uuid.uuid4().hex[:6]}"
    env = dict(proxy_gateway.env, SSL_CERT_FILE=ca["SSL_CERT_FILE"],
               HTTPS_PROXY=f"http://{label}@127.0.0.1:{proxy_gateway.proxy_port}")
    env.pop("NO_PROXY", None)
    p = subprocess.run([sys.executable, "-c", CLIENT, kind, TEST_KEYS[kind]], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    [row] = proxy_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["session_source"] == "label_proxy_user"
    expected = EXPECTED["anthropic" if kind == "anthropic" else "openai_chat"]
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == expected[:3]
    # the request went to the route's --upstream, not to the real host
    assert row["upstream"].startswith("http://127.0.0.1:")


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "srv.pem"
    key_pem = tmp_path / "srv.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_pem, key_pem


def test_non_ai_host_is_tunnelled_untouched(proxy_gateway, tmp_path):
    cert_pem, key_pem = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_pem, key_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            data = tls.recv(100)
            tls.sendall(b"echo:" + data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", proxy_gateway.proxy_port), timeout=10) as s:
        s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        assert b" 200 " in s.recv(4096)
        # trust ONLY the server's own certificate: an intercepted (llmsm-signed) one would fail here
        client_ctx = ssl.create_default_context(cafile=str(cert_pem))
        with client_ctx.wrap_socket(s, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"echo:ping"
    t.join(5)
    listener.close()
