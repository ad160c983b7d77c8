"""`llmsm certs path|env|init`: llmsm's own certificate authority for TLS interception.

The CA lives in the per-user llmsm data directory (the key is 0600 and never printed). Clients
that cannot be pointed at a base URL trust it through the variables `llmsm certs env` prints;
Python and Rust clients replace their trust store with a file, so they get a bundle of the
system roots plus llmsm's CA.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from llmsm.cli.common import DbOption, JsonOption, console, fail, print_json, resolve_db

CA_CERT = "mitmproxy-ca-cert.pem"
CA_KEY = "mitmproxy-ca.pem"
BUNDLE = "ca-bundle.pem"


def ca_cert_path() -> Path:
    from llmsm.addons.server import ca_dir

    return ca_dir() / CA_CERT


def ensure_ca() -> Path:
    """Create the CA on first use (the gateway would create the same files when it starts)."""
    cert = ca_cert_path()
    if not cert.exists():
        from mitmproxy.certs import CertStore

        CertStore.from_store(cert.parent, "mitmproxy", 2048)
    key = cert.parent / CA_KEY
    if key.exists():
        key.chmod(0o600)
    return cert


def _system_roots() -> Path | None:
    import ssl  # here: every other command would pay for its import

    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def ensure_bundle() -> Path:
    """System roots + llmsm's CA in one file, rewritten when either changed."""
    cert = ensure_ca()
    bundle = cert.parent / BUNDLE
    roots = _system_roots()
    sources = [p for p in (roots, cert) if p is not None]
    newest = max(p.stat().st_mtime for p in sources)
    if not bundle.exists() or bundle.stat().st_mtime < newest:
        text = "".join(p.read_text() .rstrip("\n") + "\n" for p in sources)
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, bundle)
    return bundle


def ca_env() -> dict[str, str]:
    """The variables each client needs to trust llmsm's CA."""
    cert = ensure_ca()
    bundle = ensure_bundle()
    return {
        "NODE_EXTRA_CA_CERTS": str(cert),  # Claude Code, Gemini CLI and other Node clients: added to Node's roots
        "SSL_CERT_FILE": str(bundle),  # Python (httpx, the SDKs), OpenSSL, Codex (rustls)
        "REQUESTS_CA_BUNDLE": str(bundle),  # requests
        "CODEX_CA_CERTIFICATE": str(bundle),  # Codex
    }


def proxy_env(db_path: Path) -> dict[str, str]:
    """HTTPS_PROXY for a running gateway that has an explicit-proxy port, if there is one."""
    import json

    from llmsm.addons.server import state_file_for

    try:
        state = json.loads(state_file_for(db_path).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not state.get("proxy_port"):
        return {}
    url = f"http://{state['host']}:{state['proxy_port']}"
    return {"HTTPS_PROXY": url, "https_proxy": url, "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}


certs_app = typer.Typer(help="llmsm's certificate authority, for clients that use HTTPS_PROXY (TLS interception).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")


@certs_app.command("path", help="Print the path of llmsm's CA certificate (create it if needed).")
def path_cmd() -> None:
    try:
        print(ensure_ca())
    except OSError as exc:
        fail(f"cannot create llmsm's CA: {exc}")


@certs_app.command("init", help="Create llmsm's CA and the trust bundle now, and say where they are.")
def init_cmd(as_json: JsonOption = False) -> None:
    try:
        cert, bundle = ensure_ca(), ensure_bundle()
    except OSError as exc:
        fail(f"cannot create llmsm's CA: {exc}")
    if as_json:
        print_json({"ca_cert": str(cert), "bundle": str(bundle)})
        return
    console.print(f"CA certificate: {cert}\ntrust bundle:   {bundle}\nnext: eval \"$(llmsm certs env)\"")


@certs_app.command("env", help="Print the exports that make clients trust llmsm's CA (and use its proxy port, if a gateway runs one).")
def env_cmd(
    db: DbOption = None,
    as_json: JsonOption = False,
    shell: Annotated[str, typer.Option("--shell", help="sh (export X=Y) or fish (set -gx X Y).")] = "sh",
) -> None:
    try:
        env = {**proxy_env(resolve_db(db)), **ca_env()}
    except OSError as exc:
        fail(f"cannot create llmsm's CA: {exc}")
    if as_json:
        print_json(env)
        return
    for key, value in env.items():
        if shell == "fish":
            print(f"set -gx {key} {shlex.quote(value)}")
        else:
            print(f"export {key}={shlex.quote(value)}")
