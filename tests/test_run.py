"""`llmsm run`: real processes end to end (the gateway, the child, the database)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_env

PY = sys.executable


def llmsm_run(*args: str, env: dict, cwd: Path | str = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "llmsm.cli.main", "run", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def state_of(db: Path) -> dict:
    return json.loads(db.with_name(db.name + ".gateway.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not a running gateway
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, state_file: Path) -> None:
    """Stop a gateway started by `llmsm run` (it is not our child)."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)


def wait_rows(db: Path, where: str, timeout: float = 10.0) -> list[dict]:
    from llmsm.analytics.store import open_for_query, run_query

    deadline = time.time() + timeout
    while True:
        try:
            con = open_for_query(db, timeout=timeout)
            try:
                cols, rows = run_query(con, f"SELECT * FROM requests WHERE {where}")
            finally:
                con.close()
        except Exception:
            rows = []
        if rows or time.time() > deadline:
            return [dict(zip(cols, r)) for r in rows] if rows else []
        time.sleep(0.1)


def ca_env_available() -> bool:
    try:
        from llmsm.cli.certs import ca_env  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def auto(upstream, tmp_path_factory):
    """A database whose gateway `llmsm run` starts itself (and leaves running); stopped at the end."""
    tmp = tmp_path_factory.mktemp("run")
    env = isolated_env(tmp)
    db = tmp / "data" / "llmsm.duckdb"
    env["LLMSM_DB"] = str(db)
    ups = [a for name in ("anthropic", "openai", "gemini") for a in ("--upstream", f"{name}={upstream.url}")]
    # A stale state file, as a SIGKILLed gateway leaves it: a dead pid and a closed port.
    db.parent.mkdir(parents=True)
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    db.with_name(db.name + ".gateway.json").write_text(json.dumps(
        {"pid": dead.pid, "host": "127.0.0.1", "port": 9, "proxy_port": None, "db": str(db)}
    ))
    first = llmsm_run(*ups, "--", PY, "-c", "pass", env=env)
    state_file = db.with_name(db.name + ".gateway.json")
    try:
        assert first.returncode == 0, first.stderr
        yield {"env": env, "db": db, "tmp": tmp, "state": state_of(db), "upstreams": ups}
    finally:
        if state_file.exists():
            stop_pid(json.loads(state_file.read_text())["pid"], state_file)


PRINT_ENV = (
    "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
    "('LLMSM_SESSION', 'ANTHROPIC_BASE_URL', 'OPENAI_BASE_URL', 'GOOGLE_GEMINI_BASE_URL', "
    "'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', "
    "'REQUESTS_CA_BUNDLE', 'CODEX_CA_CERTIFICATE', 'OPENCODE_CONFIG_CONTENT', 'COPILOT_PROVIDER_BASE_URL', "
    "'COPILOT_PROVIDER_HEADERS')}))"
)


def test_started_gateway_stays_running_and_is_reused(auto):
    db, state = auto["db"], auto["state"]
    assert state["proxy_port"] and state["port"] and alive(state["pid"])
    log = db.with_name(db.name + ".gateway.log")
    assert log.read_text().count("llmsm run starts") == 1

    # The next run reuses it: same pid, no second start, and the child gets the label in every base URL.
    p = llmsm_run("--session", "my label/1", "--", PY, "-c", PRINT_ENV, env=auto["env"])
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # the info line is for terminals only; nothing to warn about
    env = json.loads(p.stdout)
    base = f"http://127.0.0.1:{state['port']}/s/my%20label%2F1"
    assert env["LLMSM_SESSION"] == "my label/1"
    assert env["ANTHROPIC_BASE_URL"] == f"{base}/anthropic"
    assert env["OPENAI_BASE_URL"] == f"{base}/openai/v1"
    assert env["GOOGLE_GEMINI_BASE_URL"] == f"{base}/gemini"
    assert env["HTTPS_PROXY"] is None
    assert state_of(db)["pid"] == state["pid"] and alive(state["pid"])
    assert log.read_text().count("llmsm run starts") == 1


# What Copilot CLI (bring your own key) and opencode do with what `llmsm run` gives them: send
# their requests to the provider's base URL with the extra headers configured, and their marks.
COPILOT_CHILD = """
import os, httpx
name, _, value = os.environ["COPILOT_PROVIDER_HEADERS"].partition(":")
headers = {name.strip(): value.strip(), "authorization": "Bearer sk-test", "x-initiator": "user",
           "x-interaction-type": "conversation-user", "user-agent": "OpenAI/JS 5.23.2"}
body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}
print(httpx.post(os.environ["COPILOT_PROVIDER_BASE_URL"] + "/chat/completions", json=body, headers=headers).status_code)
"""
OPENCODE_CHILD = """
import json, os, httpx
options = json.loads(os.environ["OPENCODE_CONFIG_CONTENT"])["provider"]["anthropic"]["options"]
headers = dict(options["headers"], **{"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "x-session-id": "ses_x",
                                      "user-agent": "opencode/1.18.4 ai-sdk/provider-utils/3.0.9 runtime/bun/1.3.1"})
body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
print(httpx.post(options["baseURL"] + "/messages", json=body, headers=headers).status_code)
"""


def test_copilot_and_opencode_are_set_up_and_labelled(auto, upstream):
    from llmsm.addons.sessions import LABEL_HEADER
    from llmsm.cli import run as run_module

    assert run_module.LABEL_HEADER == LABEL_HEADER  # run.py keeps its own copy to start fast
    port = auto["state"]["port"]
    theirs = {"theme": "tokyonight", "provider": {"openai": {"options": {"timeout": 5000}}}}
    env = dict(auto["env"], COPILOT_PROVIDER_BASE_URL=f"{upstream.url}/v1", COPILOT_PROVIDER_API_KEY="sk-test",
               OPENCODE_CONFIG_CONTENT=json.dumps(theirs))
    p = llmsm_run("-s", "byok", "--", PY, "-c", PRINT_ENV, env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    got = json.loads(p.stdout)
    base = f"http://127.0.0.1:{port}/s/byok"
    assert got["COPILOT_PROVIDER_BASE_URL"] == f"{base}/openai/v1"
    assert got["COPILOT_PROVIDER_HEADERS"] == "x-llmsm-session: byok"
    config = json.loads(got["OPENCODE_CONFIG_CONTENT"])
    assert config["theme"] == "tokyonight" and config["provider"]["openai"]["options"]["timeout"] == 5000
    assert {name: prov["options"]["baseURL"] for name, prov in config["provider"].items()} == {
        "openai": f"{base}/openai/v1", "anthropic": f"{base}/anthropic/v1", "google": f"{base}/gemini/v1beta"}
    assert {prov["options"]["headers"]["x-llmsm-session"] for prov in config["provider"].values()} == {"byok"}

    # Messages (COPILOT_PROVIDER_TYPE=anthropic); the user's own extra headers are left as they are
    env2 = dict(env, COPILOT_PROVIDER_TYPE="anthropic", COPILOT_PROVIDER_HEADERS="x-team: blue")
    got = json.loads(llmsm_run("-s", "byok", "--", PY, "-c", PRINT_ENV, env=env2).stdout)
    assert (got["COPILOT_PROVIDER_BASE_URL"], got["COPILOT_PROVIDER_HEADERS"]) == (f"{base}/anthropic", "x-team: blue")
    # a provider elsewhere than the gateway's route: its key must not go there; left alone, and said so
    p = llmsm_run("-s", "byok", "--", PY, "-c", PRINT_ENV, env=dict(env, COPILOT_PROVIDER_BASE_URL="http://127.0.0.1:9/v1"))
    assert json.loads(p.stdout)["COPILOT_PROVIDER_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert p.stderr.startswith("warning:") and "--upstream openai=http://127.0.0.1:9/v1" in p.stderr
    # without COPILOT_PROVIDER_BASE_URL (GitHub login) nothing of Copilot's is set
    assert json.loads(llmsm_run("--", PY, "-c", PRINT_ENV, env=auto["env"]).stdout)["COPILOT_PROVIDER_BASE_URL"] is None

    # end to end: each lands in the run's session, recognised
    for child, client in ((COPILOT_CHILD, "copilot-cli"), (OPENCODE_CHILD, "opencode")):
        label = f"{client}-{uuid.uuid4().hex[:6]}"
        p = llmsm_run("-s", label, "--", PY, "-c", child, env=env)
        assert p.returncode == 0 and p.stdout.strip() == "200", p.stderr
        rows = wait_rows(auto["db"], f"session_id = '{label}'")
        assert [(r["session_source"], r["client"]) for r in rows] == [("label_header", client)]


def test_exit_code_and_signal_death(auto):
    p = llmsm_run("--", PY, "-c", "import sys; sys.exit(3)", env={**auto["env"], "PYTHONPROFILEIMPORTTIME": "1"})
    assert p.returncode == 3, p.stderr
    assert "llmsm.cli.run" in p.stderr and "mitmproxy" not in p.stderr  # llmsm run stays light
    p = llmsm_run("--", PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", env=auto["env"])
    assert p.returncode == 128 + signal.SIGKILL


def test_arguments_reach_the_child_verbatim(auto):
    args = ["a b", "$HOME", "; echo pwned", "*", '"q"', "`id`", "a\nb", "", "--db", "-h", "--session", "x"]
    p = llmsm_run("-s", "verbatim", PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args, env=auto["env"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == args


def test_command_not_found_and_not_executable(tmp_path):
    env = isolated_env(tmp_path)
    db = tmp_path / "db" / "x.duckdb"
    p = llmsm_run("--db", str(db), "--", "no-such-command-llmsm-test", "--flag", env=env)
    assert p.returncode == 127
    assert p.stderr.startswith("error:") and "no-such-command-llmsm-test" in p.stderr
    no_traceback(p)
    assert not db.with_name(db.name + ".gateway.json").exists()  # no gateway started for nothing
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    p = llmsm_run("--db", str(db), "--", str(script), env=env)
    assert p.returncode == 126 and p.stderr.startswith("error:")
    no_traceback(p)
    p = llmsm_run("--db", str(db), "--bogus", "--", "true", env=env)
    assert p.returncode == 2 and "error:" in p.stderr and "--bogus" in p.stderr
    no_traceback(p)


CHILD_TRAPS = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
signal.signal(signal.SIGINT, lambda *a: sys.exit(8))
signal.signal(signal.SIGUSR1, lambda *a: print("usr1", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 7), (signal.SIGINT, 8)])
def test_signals_are_forwarded(auto, sig, code):
    proc = subprocess.Popen(
        [PY, "-m", "llmsm.cli.main", "run", "--", PY, "-c", CHILD_TRAPS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=auto["env"], cwd=REPO,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout.readline().strip() == "usr1"
        proc.send_signal(sig)  # to llmsm only (no terminal here): it must pass it on
        assert proc.wait(15) == code, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


COUNT_SIGINT = """
import signal, sys, time
seen = []
signal.signal(signal.SIGINT, lambda *a: seen.append(1))
print("ready", flush=True)
while not seen:
    time.sleep(0.01)
time.sleep(0.5)  # a forwarded duplicate would arrive in this time
print("sigints", len(seen), flush=True)
sys.exit(10 + len(seen))
"""


def test_ctrl_c_on_a_terminal_reaches_the_child_once(auto):
    """The terminal sends SIGINT to the whole foreground group: llmsm must not forward a second one."""
    import select
    import termios  # noqa: F401 - POSIX terminals only

    master, slave = os.openpty()
    # A fresh single-threaded process makes the pty its controlling terminal, then becomes llmsm run.
    trampoline = (
        "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [PY, "-c", trampoline, "-m", "llmsm.cli.main", "run", "-s", "tty", "--", PY, "-c", COUNT_SIGINT],
        stdin=slave, stdout=slave, stderr=slave, env=auto["env"], cwd=REPO,
    )
    os.close(slave)
    out = b""
    deadline = time.time() + 20

    def read_until(marker: bytes) -> None:
        nonlocal out
        while marker not in out and time.time() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                out += chunk
            elif proc.poll() is not None:
                return

    try:
        read_until(b"ready")
        os.write(master, b"\x03")  # Ctrl-C
        code = proc.wait(15)
        read_until(b"\nnever")  # the rest of the output, until the terminal closes (EIO)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "session tty via gateway" in text  # the dim info line, shown on terminals only
    assert "sigints 1" in text and code == 11, text


ANTHROPIC_CHILD = """
import anthropic
client = anthropic.Anthropic(api_key="sk-test", max_retries=0)  # the base URL comes from the environment
msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
print(msg.content[0].text)
"""


def test_reuses_running_gateway_and_records_the_session(gateway, tmp_path):
    """The `llmsm proxy` of the fixture is reused; an SDK child lands in the session with the run's details."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "feature-x", str(repo)], check=True, capture_output=True)
    env = isolated_env(tmp_path)
    label = "sdk-" + uuid.uuid4().hex[:8]
    before = state_of(gateway.db)
    assert before["pid"] == gateway.proc.pid

    p = llmsm_run("--db", str(gateway.db), "--session", label, "--", PY, "-c", ANTHROPIC_CHILD, "--x", "a b", env=env, cwd=repo)
    assert p.returncode == 0, p.stderr
    assert "Hello from the fake upstream." in p.stdout
    assert state_of(gateway.db)["pid"] == gateway.proc.pid  # no second gateway
    assert not gateway.db.with_name(gateway.db.name + ".gateway.log").exists()

    rows = gateway.wait_rows(1, f"session_id = '{label}'")
    assert len(rows) == 1 and rows[0]["session_source"] == "label_path" and rows[0]["api"] == "messages"
    sessions = gateway.query(f"SELECT label, requests, command, cwd, git_branch FROM sessions WHERE session_id = '{label}'")
    assert sessions == [{
        "label": label, "requests": 1, "command": f"{PY} -c '{ANTHROPIC_CHILD}' --x 'a b'",
        "cwd": str(repo), "git_branch": "feature-x",
    }]
    runs = gateway.query(f"SELECT exit_code, ended_at IS NOT NULL AS ended, pid FROM runs WHERE session_id = '{label}'")
    assert len(runs) == 1 and runs[0]["exit_code"] == 0 and runs[0]["ended"] and runs[0]["pid"] > 0
    # `sessions --json` carries every column of the view, the run's details included
    [record] = [s for s in json.loads(gateway.cli("sessions", "--json", "--limit", "1000").stdout) if s["session_id"] == label]
    view_columns = [c["column_name"] for c in gateway.query("SELECT column_name FROM (DESCRIBE sessions)")]
    assert list(record) == view_columns
    assert (record["command"], record["cwd"], record["git_branch"]) == (sessions[0]["command"], str(repo), "feature-x")
    assert (record["agents"], record["estimated"]) == (0, False)
    assert label in gateway.cli("sessions").stdout  # the table still shows what fits


def test_upstream_given_to_a_running_gateway_is_reported(gateway, tmp_path):
    env = isolated_env(tmp_path)
    p = llmsm_run("--db", str(gateway.db), "-u", f"anthropic={gateway.upstream_url}", "--", "true", env=env)
    assert p.returncode == 0 and p.stderr == ""  # the same route: nothing to say
    p = llmsm_run("--db", str(gateway.db), "-u", "anthropic=http://127.0.0.1:9", "--", "true", env=env)
    assert p.returncode == 0
    assert p.stderr.startswith("warning:") and "ignored" in p.stderr and str(gateway.proc.pid) in p.stderr


def test_busy_database_does_not_stop_the_command(tmp_path):
    """A database held by another process: one warning, and the command still runs with its exit code."""
    env = isolated_env(tmp_path)
    db = tmp_path / "busy.duckdb"
    # A stand-in gateway (this process) so that no real one is started against the locked file.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GatewayStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db.with_name(db.name + ".gateway.json").write_text(json.dumps(
        {"pid": os.getpid(), "host": "127.0.0.1", "port": server.server_address[1], "proxy_port": None, "db": str(db)}
    ))
    holder = subprocess.Popen(
        [PY, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        p = llmsm_run("--db", str(db), "--", PY, "-c", "print('ran'); raise SystemExit(5)", env=env)
        assert p.returncode == 5 and p.stdout == "ran\n"
        warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 1 and "not recorded" in warnings[0], p.stderr
        no_traceback(p)
    finally:
        holder.kill()
        holder.wait()
        server.shutdown()


class _GatewayStandIn(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"llmsm": "gateway", "routes": {}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_gateway_that_cannot_start_is_one_clear_error(tmp_path):
    env = isolated_env(tmp_path)
    db = tmp_path / "fresh.duckdb"
    p = llmsm_run("--db", str(db), "-u", "nowhere=http://127.0.0.1:9", "--", "true", env=env)
    assert p.returncode == 1
    assert p.stderr.startswith("error: the gateway could not start") and "nowhere" in p.stderr, p.stderr
    no_traceback(p)


@pytest.mark.skipif(not ca_env_available(), reason="llmsm.cli.certs.ca_env is not there yet")
def test_tls_sets_the_proxy_and_ca_variables(auto, gateway, tmp_path):
    state = auto["state"]
    p = llmsm_run("--tls", "--session", "tls run", "--", PY, "-c", PRINT_ENV, env=auto["env"])
    assert p.returncode == 0, p.stderr
    env = json.loads(p.stdout)
    assert env["HTTPS_PROXY"] == env["https_proxy"] == f"http://tls%20run@127.0.0.1:{state['proxy_port']}"
    assert "localhost" in env["NO_PROXY"] and "127.0.0.1" in env["NO_PROXY"]
    assert env["ANTHROPIC_BASE_URL"] is None and env["LLMSM_SESSION"] == "tls run"
    for key in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CODEX_CA_CERTIFICATE"):
        assert env[key] and Path(env[key]).is_file(), key
    # End to end: the SDK, with no base URL, goes through the proxy port with llmsm's CA trusted.
    p = llmsm_run("--tls", "--session", "tls-sdk", "--", PY, "-c", ANTHROPIC_CHILD, env=auto["env"])
    assert p.returncode == 0, p.stderr
    assert "Hello from the fake upstream." in p.stdout
    rows = wait_rows(auto["db"], "session_id = 'tls-sdk'")
    assert [(r["session_source"], r["api"]) for r in rows] == [("label_proxy_user", "messages")]
    # The fixture's gateway has no proxy port: --tls says so clearly.
    p = llmsm_run("--tls", "--db", str(gateway.db), "--", "true", env=isolated_env(tmp_path))
    assert p.returncode == 1 and p.stderr.startswith("error:") and "--proxy-port" in p.stderr
    no_traceback(p)
