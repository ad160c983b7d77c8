"""Shared fixtures: a fake upstream and the real gateway (`llmsm proxy`) as a subprocess, and
`run_cli`, the other `llmsm` commands run in this process (no interpreter start-up per call)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.upstream import FakeUpstream

REPO = Path(__file__).resolve().parents[1]
TEST_KEYS = {
    "anthropic": "sk-ant-test-SECRET-0123456789abcdef",
    "openai": "sk-proj-test-SECRET-0123456789abcdef",
    "gemini": "AIzaTEST-SECRET-0123456789abcdef",
}


def isolated_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_DATA_HOME"] = str(tmp / "data")
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    env["HOME"] = str(tmp / "home")
    env["NO_COLOR"] = "1"
    env.pop("LLMSM_DB", None)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(k, None)
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    return env


class _LastResort(logging.StreamHandler):
    """Python's last-resort handler: WARNING and above, the bare message, to sys.stderr as it is
    at the time of the call (the runner's capture while a command runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def run_cli(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """`llmsm ARGS` run in this process, answered as subprocess.run would (returncode, stdout,
    stderr): `env` (default: this process's) is the whole environment, `input` is stdin. What a
    child process would do differently is done here: an exception escaping the command is
    printed to stderr as Python prints it (exit code 1), a warning logged while the CLI has no
    handler of its own reaches stderr, and the price overrides (read once per process) are read
    again for this environment. Not for `llmsm proxy` or `llmsm run`: they own signals, logging
    and child processes, so they run as processes."""
    from typer.testing import CliRunner

    from llmsm.analytics import prices
    from llmsm.cli.main import app

    overrides: dict[str, str | None] = {}
    if env is not None:
        overrides = {k: None for k in os.environ if k not in env}
        overrides.update(env)
    root, handler = logging.getLogger(), _LastResort()
    root.addHandler(handler)
    prices.set_default_overrides(None)
    _fresh_consoles(overrides)
    try:
        result = CliRunner().invoke(app, list(args), input=input, env=overrides, prog_name="llmsm")
    finally:
        root.removeHandler(handler)
        prices.set_default_overrides(None)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    if result.exc_info is not None:
        # A child's exit would free what the command's frames still hold (a connection left open
        # holds the database's lock): clear them rather than wait for the garbage collector.
        traceback.clear_frames(result.exc_info[2])
    return subprocess.CompletedProcess(["llmsm", *args], result.exit_code, result.stdout, stderr)


def _fresh_consoles(overrides: Mapping[str, str | None]) -> None:
    """Make the CLI's consoles anew in the command's environment: rich reads COLUMNS, NO_COLOR
    and the rest when a console is made, once per process in real use, so here one command's
    environment must not decide the width or colour of the next."""
    from llmsm.cli import common

    saved = dict(os.environ)
    try:
        for k, v in overrides.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        common.console.__init__(highlight=False)
        common.err_console.__init__(stderr=True, highlight=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Gateway:
    """`llmsm proxy` running in a child process."""

    def __init__(self, tmp: Path, upstream_url: str, *, db: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.db = db or tmp / "llmsm.duckdb"
        self.upstream_url = upstream_url
        self.env = isolated_env(tmp)
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log = tmp / "gateway.log"

    def start(self, timeout: float = 30.0) -> "Gateway":
        args = [sys.executable, "-m", "llmsm.cli.main", "proxy", "--port", "0", "--db", str(self.db)]
        for name in ("anthropic", "openai", "gemini"):
            args += ["--upstream", f"{name}={self.upstream_url}"]
        if "--flush-interval" not in self.extra_args:  # rows show up soon after each exchange: short polls
            args += ["--flush-interval", "0.05"]
        args += list(self.extra_args)
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log_fh, stderr=self._log_fh, env=self.env, cwd=REPO)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log.read_text(errors="replace")
            m = re.search(r"listening on http://[^ ]+:(\d+) ", text)
            p = re.search(r"explicit proxy on http://[^ ]+:(\d+) ", text)
            if m and (p or "--proxy-port" not in self.extra_args):
                self.port = int(m.group(1))
                self.proxy_port = int(p.group(1)) if p else None
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{text}")
            time.sleep(0.05)
        raise RuntimeError("gateway did not start:\n" + self.log.read_text(errors="replace"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log_fh.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`llmsm ARGS --db` this gateway's database (in this process: run_cli), in its environment
        (plus `env`): never a traceback, and (with `check`) exit code 0."""
        p = run_cli(*args, "--db", str(self.db), env={**self.env, **(env or {})})
        assert "Traceback" not in p.stderr, p.stderr
        if check:
            assert p.returncode == 0, p.stdout + p.stderr
        return p

    def query(self, sql: str, timeout: float = 10.0) -> list[dict]:
        from llmsm.analytics.store import open_for_query, run_query

        con = open_for_query(self.db, timeout=timeout)
        try:
            cols, rows = run_query(con, sql)
        finally:
            con.close()
        return [dict(zip(cols, r)) for r in rows]

    def wait_rows(self, n: int, where: str = "true", timeout: float = 10.0) -> list[dict]:
        """Poll until at least n request rows match (the test gateways commit every 0.05 s)."""
        deadline = time.time() + timeout
        rows: list[dict] = []
        while time.time() < deadline:
            if self.db.exists():
                try:
                    rows = self.query(f"SELECT * FROM requests WHERE {where} ORDER BY started_at")
                except Exception:
                    rows = []
                if len(rows) >= n:
                    return rows
            time.sleep(0.03)
        raise AssertionError(f"expected {n} rows where {where}, found {len(rows)}:\n{self.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """This process's cache directory (prices.py keeps its answer cache there), not the user's."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def upstream():
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def gateway(upstream, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("gw"), upstream.url).start()
    yield gw
    gw.stop()


@pytest.fixture
def fresh_gateway(upstream, tmp_path):
    """A gateway of its own, for tests that kill or restart it."""
    gw = Gateway(tmp_path, upstream.url)
    yield gw
    gw.stop()
