"""`llmsm proxy`: run the gateway in the foreground."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmsm.analytics.apis import PROVIDERS
from llmsm.cli.common import DbOption, fail, resolve_db


def register(app: typer.Typer) -> None:
    app.command(
        "proxy",
        help="Run the gateway on 127.0.0.1 and record every API exchange. Point an assistant at it: "
        "ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/anthropic, OPENAI_BASE_URL=http://127.0.0.1:PORT/openai/v1, "
        "GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:PORT/gemini (add /s/LABEL before the route to name the session).",
        short_help="Run the gateway that records your assistants' API traffic.",
    )(proxy)
    app.command("stop", help="Stop the gateway running for this database (e.g. one `llmsm run` started).")(stop)


def proxy(
    port: Annotated[int, typer.Option("--port", "-p", help="Port for base-URL routes (0 picks a free one).", min=0, max=65535)] = 8787,
    db: DbOption = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option("--upstream", "-u", help=f"Point a route elsewhere: NAME=URL ({', '.join(PROVIDERS)}). Repeatable.", metavar="NAME=URL"),
    ] = None,
    proxy_port: Annotated[
        int | None,
        typer.Option("--proxy-port", help="Also accept HTTPS_PROXY clients on this port, intercepting TLS for known AI API hosts only (see `llmsm certs env`).", min=0, max=65535),
    ] = None,
    intercept_host: Annotated[
        list[str] | None,
        typer.Option("--intercept-host", help="Another host whose TLS the proxy port intercepts (default list: docs/sessions.md). Repeatable.", metavar="HOST"),
    ] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option("--upstream-ca", help="PEM file of a CA to trust for https upstreams (e.g. a corporate gateway); the public roots stay trusted.", dir_okay=False, show_default=False),
    ] = None,
    upstream_timeout: Annotated[
        float, typer.Option("--upstream-timeout", help="Seconds to wait for an upstream's response headers before answering 502 (0: forever).", min=0)
    ] = 600.0,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs --auth-token.")] = "127.0.0.1",
    auth_token: Annotated[
        str | None,
        typer.Option("--auth-token", envvar="LLMSM_AUTH_TOKEN", help="Clients must send it: header x-llmsm-token, or as the proxy password (http://label:TOKEN@host:port).", show_default=False),
    ] = None,
    no_content: Annotated[
        bool, typer.Option("--no-content", help="Keep no text of the conversations at all: no session digest (project, goal, files, commands) for `llmsm handoff`.")
    ] = False,
    team_db: Annotated[
        str | None,
        typer.Option("--team-db", envvar="LLMSM_TEAM_DB", help="PostgreSQL URL of the team database: every event is shipped there in the background (docs/team.md).", show_default=False),
    ] = None,
    developer: Annotated[
        str | None, typer.Option("--developer", envvar="LLMSM_DEVELOPER", help="Your name in the team database (default user@host).", show_default=False)
    ] = None,
    team_share_content: Annotated[bool, typer.Option("--team-share-content", help="Also ship session digests (content); by default only usage leaves the machine.")] = False,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option("--otlp-endpoint", help="OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318): one span per exchange. The OTEL_EXPORTER_OTLP_* variables work too.", show_default=False),
    ] = None,
    flush_interval: Annotated[
        float | None,
        typer.Option("--flush-interval", help="Seconds between the database writer's commits, i.e. how far behind `llmsm watch` may be (1 by default).", min=0.01, show_default=False),
    ] = None,
    no_status_files: Annotated[
        bool, typer.Option("--no-status-files", help="Keep no per-session status file for `llmsm statusline` (it then prints the global line).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every exchange.")] = False,
) -> None:
    from llmsm.addons.server import GatewayConfig, GatewayError, run, state_file_for

    db_path = resolve_db(db)
    _setup_logging(verbose)
    config = GatewayConfig(
        db_path=db_path, host=host, port=port, upstreams=list(upstream or []), state_file=state_file_for(db_path),
        proxy_port=proxy_port, intercept_hosts=list(intercept_host or []), upstream_timeout=upstream_timeout,
        auth_token=auth_token or "", upstream_ca=upstream_ca, content=not no_content,
        team_db=team_db or "", developer=developer or "",
        team_share_content=team_share_content, otlp_endpoint=otlp_endpoint or "",
        flush_interval=flush_interval, status_files=not no_status_files,
    )

    def on_ready(state: dict) -> None:
        base = f"http://{state['host']}:{state['port']}"
        print(f"llmsm gateway listening on {base} (db: {db_path})", file=sys.stderr)
        print(f"  export ANTHROPIC_BASE_URL={base}/anthropic", file=sys.stderr)
        print(f"  export OPENAI_BASE_URL={base}/openai/v1", file=sys.stderr)
        print(f"  export GOOGLE_GEMINI_BASE_URL={base}/gemini", file=sys.stderr, flush=True)
        if state.get("proxy_port"):
            print(f"llmsm explicit proxy on http://{state['host']}:{state['proxy_port']} "
                  "(HTTPS_PROXY; trust the CA: llmsm certs env)", file=sys.stderr, flush=True)

    try:
        code = run(config, on_ready)
    except GatewayError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("llmsm").setLevel(logging.DEBUG if verbose else logging.INFO)


def stop(
    db: DbOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for it to flush and exit.")] = 15.0,
) -> None:
    import json
    import os
    import signal
    import time

    from llmsm.addons.server import state_file_for

    db_path = resolve_db(db)
    state_file = state_file_for(db_path)
    try:
        pid = int(json.loads(state_file.read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        print(f"no gateway is running for {db_path}", file=sys.stderr)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A gateway removes its state file as the last step of a clean exit.
        if not state_file.exists() or not _alive(pid):
            print(f"stopped the gateway (pid {pid})", file=sys.stderr)
            return
        time.sleep(0.1)
    fail(f"the gateway (pid {pid}) did not exit within {timeout:g} s")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie has exited; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
