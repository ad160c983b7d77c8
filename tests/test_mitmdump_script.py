"""llmsm's addons in a user's own mitmproxy: `mitmdump -s addons/gateway.py` records into the
database and applies its budgets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anthropic
import pytest

from tests.conftest import REPO, TEST_KEYS, Gateway, isolated_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mitmdump_with_the_addon_script(upstream, tmp_path):
    mitmdump = Path(sys.executable).with_name("mitmdump")
    if not mitmdump.exists():
        mitmdump = Path(shutil.which("mitmdump") or "")
    if not mitmdump.is_file():
        pytest.skip("mitmdump is not installed beside this Python")
    db = tmp_path / "mine.duckdb"
    port = _free_port()
    log = open(tmp_path / "mitmdump.log", "wb")
    proc = subprocess.Popen(
        [str(mitmdump), "-q", "-s", str(REPO / "addons" / "gateway.py"),
         "--mode", f"reverse:{upstream.url}@{port}", "--listen-host", "127.0.0.1",
         "--set", f"llmsm_db={db}", "--set", f"llmsm_upstream=anthropic={upstream.url}",
         "--set", f"confdir={tmp_path / 'ca'}"],
        stdout=log, stderr=log, env=isolated_env(tmp_path),
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        label = "mitm-" + uuid.uuid4().hex[:6]
        client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"http://127.0.0.1:{port}/anthropic",
                                     max_retries=0, default_headers={"x-llmsm-session": label})
        client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        reader = Gateway(tmp_path, upstream.url, db=db)  # only its query and CLI helpers are used
        [row] = reader.wait_rows(1, f"session_id = '{label}'")
        assert row["input_tokens"] == 21 and row["output_tokens"] == 42
        # The whole set is loaded: the budget guard reads the budgets of the database recorded into.
        reader.cli("budget", "set", "--label", label, "--tokens", "10")
        deadline = time.time() + 10  # the guard reloads within about a second
        with pytest.raises(anthropic.RateLimitError):
            while time.time() < deadline:
                client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
