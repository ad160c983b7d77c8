"""Runs the gateway: mitmproxy embedded in this process, with the parts of mitmproxy it runs on
(`mitmproxy_addons`) and llmsm's own addons (`llmsm_addons`, also what `mitmdump -s
addons/gateway.py` loads).

`llmsm proxy` calls `run()`; it returns an exit code and never raises for the user's mistakes
(a busy port, an unwritable database): those come back as `GatewayError` with one clear line.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import re
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from llmsm.addons import routes

log = logging.getLogger("llmsm.server")


class GatewayError(Exception):
    """A problem the user can fix; the message is one line."""


@dataclass
class GatewayConfig:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8787
    upstreams: list[str] = field(default_factory=list)
    proxy_port: int | None = None  # explicit-proxy (HTTPS_PROXY) listener with TLS interception
    intercept_hosts: list[str] = field(default_factory=list)  # beyond routes.KNOWN_API_HOSTS
    upstream_timeout: float = 600.0  # seconds to wait for response headers
    auth_token: str = ""  # required of every client when set; mandatory off loopback
    upstream_ca: Path | None = None  # extra CA bundle to verify https upstreams (a corporate gateway)
    state_file: Path | None = None  # where a running gateway says where it listens
    content: bool = True  # keep the session digest (scrubbed text of the conversation); --no-content: none
    team_db: str = ""  # PostgreSQL URL every event is shipped to (docs/team.md)
    developer: str = ""  # who the shipped events belong to (default user@host)
    team_share_content: bool = False  # ship session digests too
    otlp_endpoint: str = ""  # OTLP/HTTP endpoint (or the OTEL_EXPORTER_OTLP_* variables)
    flush_interval: float | None = None  # seconds between the writer's commits (None: the writer's default)
    status_files: bool = True  # the per-session status snapshot for `llmsm statusline` (status_snapshot.py)


def ca_dir() -> Path:
    """llmsm's own certificate authority lives here (mitmproxy's confdir), key 0600."""
    import platformdirs

    path = platformdirs.user_data_path("llmsm") / "ca"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def upstream_bundle(extra_ca: Path) -> Path:
    """mitmproxy trusts only the file it is given: the public roots (certifi) plus the user's CA."""
    import certifi

    bundle = ca_dir() / "upstream-bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text().rstrip("\n") + "\n" + extra_ca.read_text())
    return bundle


def state_file_for(db_path: Path) -> Path:
    """A running gateway writes its pid and port here, beside the database it records into."""
    return db_path.with_name(db_path.name + ".gateway.json")


def check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GatewayError(f"port {port} on {host} is already in use (try --port with another number)") from None
            raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_db_writable(db_path: Path) -> None:
    parent = db_path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GatewayError(f"cannot create the database folder {parent}: {exc.strerror or exc}") from None
    if db_path.is_dir():
        raise GatewayError(f"the database path {db_path} is a directory")
    target = db_path if db_path.exists() else parent
    if not os.access(target, os.W_OK):
        raise GatewayError(f"the database path {db_path} is not writable")


def validate(config: GatewayConfig) -> None:
    """Everything that can be checked before mitmproxy starts, each with a clear message."""
    try:
        routes.build_upstreams(config.upstreams)
    except routes.RouteError as exc:
        raise GatewayError(str(exc)) from None
    if not is_loopback(config.host) and not config.auth_token:
        raise GatewayError(
            f"refusing to listen on {config.host} without authentication: anyone who can reach it could "
            "use your API keys' sessions and read usage. Add --auth-token TOKEN (or LLMSM_AUTH_TOKEN)"
        )
    check_db_writable(config.db_path)
    if config.team_db and not config.team_db.startswith(("postgresql://", "postgres://")):
        raise GatewayError("--team-db must be a PostgreSQL URL: postgresql://user:password@host:5432/dbname")
    if config.upstream_ca is not None and not config.upstream_ca.is_file():
        raise GatewayError(f"--upstream-ca {config.upstream_ca}: no such file")
    check_port_free(config.host, config.port)
    if config.proxy_port is not None:
        if config.proxy_port == config.port and config.port != 0:
            raise GatewayError("--proxy-port must differ from --port")
        check_port_free(config.host, config.proxy_port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def intercept_patterns(extra_hosts: list[str]) -> list[str]:
    """mitmproxy `allow_hosts`: TLS is intercepted for these hosts only; the rest is tunnelled."""
    hosts = list(routes.KNOWN_API_HOSTS) + [h.strip().lower() for h in extra_hosts if h.strip()]
    return [rf"^{re.escape(h)}(:\d+)?$" for h in dict.fromkeys(hosts)]


def mitmproxy_addons() -> list:
    """The parts of mitmproxy the gateway runs on. mitmdump loads some thirty more (replay, flow
    editing, saving, header and body rewriting, sticky cookies, the console's history, ...),
    and mitmproxy calls every loaded addon on every hook of every request, whether it acts or
    not: ~0.3 ms of CPU per request on the benchmark machine, more than llmsm's own work
    (docs/benchmarks.md). None of them can be switched on through `llmsm proxy`, and without
    them mitmproxy leaves compression and caching headers alone, as llmsm needs."""
    from mitmproxy.addons import block, core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig

    return [
        core.Core(),  # option checks
        block.Block(),  # clients from public addresses refused (block_global), as in mitmdump
        disable_h2c.DisableH2C(),  # no h2c upgrade through the explicit proxy: mitmproxy can't follow it
        proxyserver.Proxyserver(),  # the listeners and their connections
        next_layer.NextLayer(),  # which protocol each connection speaks; allow_hosts
        tlsconfig.TlsConfig(),  # llmsm's CA, TLS interception, upstream certificate checks
        errorcheck.ErrorCheck(),  # a startup error (a port that cannot be bound) ends the run
    ]


def llmsm_addons() -> list:
    """llmsm's addons, in the order mitmproxy calls them on each hook. Each does one thing, and
    has no method for a hook it has nothing to do on. Adding an addon is one line here."""
    from llmsm.addons.auth import GatewayAuth
    from llmsm.addons.budget_guard import BudgetGuard
    from llmsm.addons.digest import DigestKeeper
    from llmsm.addons.gateway import LLMGateway
    from llmsm.addons.recorder import Recorder
    from llmsm.addons.shipper import Shipper
    from llmsm.addons.status_snapshot import StatusSnapshot

    recorder = Recorder()
    gateway = LLMGateway()
    guard = BudgetGuard(recorder)
    status = StatusSnapshot(recorder, guard)

    def late_event(event) -> None:  # a side call finished outside a hook
        recorder.put(event)
        status.put(event)

    gateway.late_event = late_event
    return [
        GatewayAuth(),  # the token; the proxy user name. First: a refused request goes no further
        gateway,  # route, parse, attribute; leaves each finished event in flow.metadata
        guard,  # after the gateway, which attributed the request it checks
        DigestKeeper(),  # what each turn showed of the work, onto its event: after attribution, before writing
        recorder,  # writes each finished event, after every addon that may still change it
        status,  # queues each finished event for the per-session status files `llmsm statusline` reads
        Shipper(recorder, guard),  # no request hooks: threads ship the database to the team and OTLP
    ]


class Llmsm:
    """llmsm's addons as one entry of mitmproxy's chain, its children (`addons`), as a script's
    module is for `mitmdump -s addons/gateway.py`. mitmproxy dispatches every hook of every
    request to each entry of its chain, which costs microseconds per entry whether it acts or
    not; the children of one entry are called in order within that one dispatch."""

    def __init__(self) -> None:
        self.addons = llmsm_addons()


class _Announce:
    """Says where the gateway listens once the sockets are bound, then leaves the addon chain:
    mitmproxy would otherwise call it on every hook of every request (~10 µs each time)."""

    def __init__(self, config: GatewayConfig, on_ready) -> None:
        self.config = config
        self.on_ready = on_ready

    def running(self) -> None:
        from mitmproxy import ctx

        ports: dict[str, int | None] = {"reverse": None, "regular": None}
        for server in ctx.master.addons.get("proxyserver").servers:
            addrs = server.listen_addrs
            if addrs:
                ports[server.mode.type_name] = addrs[0][1]
        state = {
            "pid": os.getpid(),
            "host": self.config.host,
            "port": ports["reverse"],
            "proxy_port": ports["regular"],
            "db": str(self.config.db_path),
        }
        if self.config.state_file is not None:
            try:
                self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
                self.config.state_file.write_text(json.dumps(state))
            except OSError as exc:
                log.warning("could not write %s: %s", self.config.state_file, exc)
        self.on_ready(state)
        ctx.master.addons.remove(self)


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Client connections still open at shutdown are cancelled; that is not an error to print."""
    exc = context.get("exception")
    if isinstance(exc, asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def _serve(config: GatewayConfig, on_ready) -> None:
    from mitmproxy.master import Master
    from mitmproxy.options import Options

    from llmsm.addons.errors import install_json_error_pages

    install_json_error_pages()

    # The listener speaks plain HTTP to clients; every routed request is re-targeted (https or
    # http) by the gateway, so the reverse target itself is never contacted. An https target
    # would put a TLS layer in every connection's stack for nothing.
    modes = [f"reverse:http://api.anthropic.com@{config.port}"]
    if config.proxy_port is not None:
        modes.append(f"regular@{config.proxy_port}")
    opts = Options(confdir=str(ca_dir()), listen_host=config.host, mode=modes)
    master = Master(opts)
    master.addons.add(*mitmproxy_addons(), Llmsm(), _Announce(config, on_ready))
    opts.update(
        connection_strategy="lazy",
        llmsm_upstream=list(config.upstreams),
        llmsm_db=str(config.db_path),
        llmsm_upstream_timeout=config.upstream_timeout,
        llmsm_auth_token=config.auth_token,
        llmsm_content=config.content,
        llmsm_team_db=config.team_db,
        llmsm_developer=config.developer,
        llmsm_team_share_content=config.team_share_content,
        llmsm_otlp_endpoint=config.otlp_endpoint,
        allow_hosts=intercept_patterns(config.intercept_hosts),
    )
    if config.flush_interval is not None:
        opts.update(llmsm_flush_interval=config.flush_interval)
    if not config.status_files:
        opts.update(llmsm_status=False)
    if config.upstream_ca is not None:
        opts.update(ssl_verify_upstream_trusted_ca=str(upstream_bundle(config.upstream_ca)))
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_cancellations)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    try:
        await master.run()  # the recorder's writer starts in `running` and is flushed in `done`
    finally:
        if config.state_file is not None:
            try:
                config.state_file.unlink()
            except OSError:
                pass


def run(config: GatewayConfig, on_ready) -> int:
    validate(config)
    try:
        asyncio.run(_serve(config, on_ready))
    except SystemExit as exc:  # mitmproxy exits this way when it cannot bind
        if exc.code:
            raise GatewayError(f"the gateway could not start on {config.host}:{config.port}") from None
    return 0
