"""The `llmsm` command as a user runs it: clear errors, no tracebacks. The commands run in this
process (`run_cli`); the entry point, `llmsm proxy`'s start-up errors and one error exit run as
real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import anthropic
import pytest

from tests.conftest import REPO, TEST_KEYS, isolated_env, run_cli


def llmsm_process(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmsm.cli.main", *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO,
    )


def _no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


@pytest.fixture(scope="module")
def recorded(gateway):
    """Three exchanges of a session of this module's own: the tests only read them."""
    label = "cli-" + uuid.uuid4().hex[:8]
    client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                                 default_headers={"x-llmsm-session": label})
    for _ in range(3):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    gateway.wait_rows(3, f"session_id = '{label}'")
    return gateway, label


def test_sql_json_while_gateway_runs(recorded):
    gateway, label = recorded
    p = run_cli("sql", "--db", str(gateway.db), "--format", "json",
                f"SELECT session_id, count(*) AS n, sum(input_tokens) AS input, sum(output_tokens) AS output FROM requests WHERE session_id = '{label}' GROUP BY session_id")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"session_id": label, "n": 3, "input": 63, "output": 126}]


def test_sql_from_stdin_and_csv(recorded):
    gateway, label = recorded
    p = run_cli("sql", "--db", str(gateway.db), "--format", "csv", input=f"SELECT count(*) AS n FROM requests WHERE session_id = '{label}'")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["n", "3"]


@pytest.mark.parametrize("statement", [
    "DELETE FROM events",
    "CREATE TABLE x (a INT)",
    "COPY (SELECT 1) TO '/tmp/llmsm-escape.csv'",
    "ATTACH '/tmp/llmsm-other.duckdb' AS o",
    "SELECT * FROM read_csv('/etc/passwd')",
])
def test_sql_cannot_write_or_touch_files(recorded, statement):
    gateway, _ = recorded
    p = run_cli("sql", "--db", str(gateway.db), statement)
    assert p.returncode != 0
    assert p.stderr.startswith("error:")
    _no_traceback(p)


def test_sql_bad_query_is_one_clear_line(recorded):
    gateway, _ = recorded
    p = run_cli("sql", "--db", str(gateway.db), "SELEC nonsense")
    assert p.returncode != 0 and p.stderr.startswith("error:")
    _no_traceback(p)


def test_sessions_json(recorded):
    gateway, label = recorded
    p = run_cli("sessions", "--db", str(gateway.db), "--json", "--limit", "1000")
    assert p.returncode == 0, p.stderr
    [s] = [s for s in json.loads(p.stdout) if s["session_id"] == label]
    assert s["requests"] == 3 and s["errors"] == 0
    assert s["input_tokens"] == 63 and s["output_tokens"] == 126
    assert s["client"] == "anthropic-sdk-python" and s["status"] == "active"
    assert s["models"] == ["claude-sonnet-4-6"]


def test_sessions_table_renders(recorded):
    gateway, label = recorded
    p = run_cli("sessions", "--db", str(gateway.db))
    assert p.returncode == 0, p.stderr
    assert label in p.stdout and "anthropic-sdk-python" in p.stdout


def test_sql_on_missing_database(tmp_path):
    p = llmsm_process("sql", "--db", str(tmp_path / "none.duckdb"), "SELECT 1")
    assert p.returncode != 0 and p.stderr.startswith("error:")
    _no_traceback(p)


def test_sql_on_corrupt_database(tmp_path):
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    p = run_cli("sql", "--db", str(bad), "SELECT 1")
    assert p.returncode != 0 and p.stderr.startswith("error:")
    _no_traceback(p)


def test_proxy_rejects_malformed_upstream(tmp_path):
    p = llmsm_process("proxy", "--db", str(tmp_path / "x.duckdb"), "--upstream", "anthropic", env=isolated_env(tmp_path))
    assert p.returncode != 0 and "NAME=URL" in p.stderr
    p = llmsm_process("proxy", "--db", str(tmp_path / "x.duckdb"), "--upstream", "mistral=http://x", env=isolated_env(tmp_path))
    assert p.returncode != 0 and "unknown route" in p.stderr
    _no_traceback(p)


def test_proxy_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = llmsm_process("proxy", "--port", str(port), "--db", str(tmp_path / "x.duckdb"), env=isolated_env(tmp_path))
    assert p.returncode != 0 and "already in use" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    _no_traceback(p)


def test_proxy_unwritable_db(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    p = llmsm_process("proxy", "--port", "0", "--db", str(blocker / "x.duckdb"), env=isolated_env(tmp_path))
    assert p.returncode != 0 and p.stderr.startswith("error:")
    assert len(p.stderr.strip().splitlines()) == 1
    _no_traceback(p)


def test_help_and_version():
    p = llmsm_process("--help")
    assert p.returncode == 0 and "proxy" in p.stdout and "sql" in p.stdout
    p = llmsm_process("--version")
    assert p.returncode == 0 and p.stdout.startswith("llmsm ")


def test_the_command_table_names_what_each_module_registers():
    """`llmsm NAME` loads only the module cli/main.py's table names for NAME: the table must say
    exactly what each module registers, and name every module that registers commands."""
    import importlib

    import typer

    from llmsm.cli.main import COMMAND_MODULES

    for module, names in COMMAND_MODULES.items():
        app = typer.Typer()
        importlib.import_module(f"llmsm.cli.{module}").register(app)
        got = [c.name for c in app.registered_commands] + [g.name or g.typer_instance.info.name for g in app.registered_groups]
        assert sorted(got) == sorted(names), module
    registering = {f.stem for f in (REPO / "cli").glob("*.py") if "\ndef register(app" in f.read_text()}
    assert registering == set(COMMAND_MODULES)


def test_a_command_loads_only_its_module():
    code = ("import sys; from llmsm.cli.main import main\n"
            "try:\n    main(['sessions', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('llmsm.cli.')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    loaded = eval(p.stdout.strip().splitlines()[-1])
    assert "llmsm.cli.sessions" in loaded and "llmsm.cli.dashboard" not in loaded and "llmsm.cli.team" not in loaded, loaded


def test_every_help_text_is_shown_whole():
    """rich reads "[...]" in a help text as markup and drops it silently ("... file ." was left
    of a "[default: ...]"). Every option and argument help of every command is checked."""
    import typer.main

    from llmsm.cli.main import app

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, path + [name])

    seen = 0
    for path, command in walk(typer.main.get_command(app), []):
        for param in command.params:
            text = getattr(param, "help", None) or ""
            assert "[" not in text, f"llmsm {' '.join(path)} {param.name}: {text!r}"
            seen += 1
    assert seen > 50


def test_stop_stops_the_gateway_of_a_database(fresh_gateway):
    gw = fresh_gateway.start()
    p = run_cli("stop", "--db", str(gw.db), env=gw.env)
    assert p.returncode == 0 and "stopped" in p.stderr
    assert gw.proc.wait(10) == 0
    p = run_cli("stop", "--db", str(gw.db), env=gw.env)
    assert p.returncode == 0 and "no gateway" in p.stderr
