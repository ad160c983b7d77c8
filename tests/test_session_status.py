"""One session's status line (`llmsm statusline` fed Claude Code's status-line JSON), read from
the snapshot the real gateway keeps; each session's share of the quota windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.quota_share import ShareTracker, quota_shares
from llmsm.analytics.status_files import default_db_path, file_name, read_snapshot, snapshot_dir
from llmsm.analytics.store import insert_events, open_db
from tests.conftest import REPO, TEST_KEYS, run_cli

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
CC_UA = "claude-cli/2.1.14 (external, cli)"


def _unified(util: float, reset: datetime) -> dict[str, str]:
    return {"anthropic-ratelimit-unified-5h-utilization": f"{util:.2f}",
            "anthropic-ratelimit-unified-reset": str(int(reset.timestamp())), "anthropic-ratelimit-unified-status": "allowed"}


def _turn(sid: str, start_s: float, end_s: float, headers: dict, ttft_ms: float = 500.0, account: str = "key:aaaa") -> ExchangeEvent:
    t0 = NOW - timedelta(minutes=30)
    return ExchangeEvent(
        session_id=sid, label=sid.upper(), client="claude-code", provider="anthropic", api="messages",
        model="claude-sonnet-4-5", started_at=t0 + timedelta(seconds=start_s), ended_at=t0 + timedelta(seconds=end_s),
        ttft_ms=ttft_ms, status_code=200, outcome="ok", input_tokens=10, output_tokens=20, usage_source="reported",
        account=account, ratelimit=headers,
    )


RESET = NOW + timedelta(hours=3)
OLD_RESET = NOW - timedelta(hours=2)
EVENTS = [
    _turn("a", -4 * 3600, -4 * 3600 + 5, _unified(0.90, OLD_RESET)),  # the previous window
    _turn("a", 0, 5, _unified(0.10, RESET)),  # after the reset: the whole 10 is a's
    _turn("a", 10, 15, _unified(0.20, RESET)),  # +10 a
    _turn("b", 20, 25, _unified(0.35, RESET)),  # +15 b
    _turn("a", 30, 40, _unified(0.40, RESET)),  # +5 a, overlapping b's next request: an estimate
    _turn("b", 35, 45, _unified(0.50, RESET), ttft_ms=1000.0),  # +10 b, overlapping: an estimate
    # Codex windows of another account: the first response is the baseline (nothing seen before)
    _turn("c", 0, 5, {"x-codex-primary-used-percent": "12", "x-codex-primary-window-minutes": "300",
                      "x-codex-primary-reset-at": str(int(RESET.timestamp()))}, account="acct:x"),
    _turn("c", 10, 15, {"x-codex-primary-used-percent": "20", "x-codex-primary-window-minutes": "300",
                        "x-codex-primary-reset-at": str(int(RESET.timestamp()))}, account="acct:x"),
]


@pytest.fixture(scope="module")
def share_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("share") / "share.duckdb"
    insert_events(db, EVENTS)
    return db


def _by_session(window: dict) -> dict:
    return {s["session_id"]: (s["share_pct"], s["estimated"], s["estimated_pct"], s["requests"]) for s in window["sessions"]}


def test_quota_share_two_sessions_overlap_is_an_estimate(share_db):
    with open_db(share_db) as con:
        windows = quota_shares(con, NOW)
    [five, codex] = sorted(windows, key=lambda w: w["source"])
    assert (five["account"], five["source"], five["window"], five["used_pct"]) == ("key:aaaa", "anthropic-unified", "5h", 50.0)
    assert five["baseline_pct"] == 0.0 and five["attributed_pct"] == 50.0 and not five["stale"]
    assert _by_session(five) == {"a": (25.0, True, 5.0, 3), "b": (25.0, True, 10.0, 2)}
    assert {s["session_id"]: s["label"] for s in five["sessions"]} == {"a": "A", "b": "B"}
    assert (codex["window"], codex["used_pct"], codex["baseline_pct"]) == ("5h", 20.0, 12.0)
    assert _by_session(codex) == {"c": (8.0, False, 0.0, 2)}


def test_share_tracker_takes_responses_in_any_order():
    """The gateway sees responses as they end, not as their headers came: the same shares."""
    def shares(events):
        t = ShareTracker()
        for e in events:
            t.add(e.session_id, e.ratelimit, e.started_at + timedelta(milliseconds=e.ttft_ms), e.started_at, e.ended_at)
        return [(w["window"], _by_session(w), w["baseline_pct"]) for w in t.shares(NOW)]

    anthropic = [e for e in EVENTS if e.account == "key:aaaa"]
    assert shares(anthropic) == shares([anthropic[0], anthropic[2], anthropic[1], anthropic[5], anthropic[4], anthropic[3]])


def test_quota_by_session_json_and_table(share_db):
    p = run_cli("quota", "--by", "session", "--json", "--db", str(share_db))
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    five = next(w for w in rows if w["source"] == "anthropic-unified")
    assert _by_session(five)["b"] == (25.0, True, 10.0, 2)
    p = run_cli("quota", "--by", "session", "--db", str(share_db))
    assert p.returncode == 0, p.stderr
    assert "5h 50% used" in p.stdout and "25.0~" in p.stdout and "8.0" in p.stdout and "(before llmsm)" in p.stdout
    assert "an estimate" in p.stdout
    p = run_cli("quota", "--by", "model", "--db", str(share_db))
    assert p.returncode != 0 and "Traceback" not in p.stderr


# --------------------------------------------------------------------------------------------
# The status line of one session, through the real gateway
# --------------------------------------------------------------------------------------------


def _claude_code_input(sid: str, cwd: str = "/home/u/shop") -> str:
    """What Claude Code writes on the status-line command's standard input."""
    return json.dumps({
        "hook_event_name": "Status", "session_id": sid, "transcript_path": f"/home/u/.claude/projects/x/{sid}.jsonl",
        "cwd": cwd, "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": cwd, "project_dir": cwd}, "version": "2.1.14", "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 0.01, "total_duration_ms": 1000},
    })


def _statusline(env: dict, stdin: str | None, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "llmsm.cli.entry", "statusline", *args], input=stdin, capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout.rstrip("\n")


def test_statusline_for_a_claude_code_session_reads_the_gateways_snapshot(gateway):
    sid = str(uuid.uuid4())
    reset = int((datetime.now(UTC) + timedelta(hours=2)).timestamp())
    key = f"sk-ant-api03-status-{uuid.uuid4().hex}"  # an account of its own: no other test's responses in its window
    headers = {"user-agent": CC_UA, "x-app": "cli", "x-claude-code-session-id": sid, "x-api-key": key,
               "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "fix the tests"}]}]}
    for util in ("0.30", "0.36"):
        r = httpx.post(f"{gateway.url}/anthropic/v1/messages?beta=true", json=body,
                       headers=dict(headers, **{"x-fake": f"util={util},reset={reset}"}), timeout=15)
        assert r.status_code == 200
    rows = gateway.wait_rows(2, f"session_id = '{sid}'")
    cost = sum(r["cost_usd"] for r in rows)
    path = os.path.join(snapshot_dir(gateway.db), file_name(sid))
    deadline = time.time() + 15
    snap = None
    while time.time() < deadline:
        snap = read_snapshot(snapshot_dir(gateway.db), sid)
        if snap is not None and snap["requests"] == 2:
            break
        time.sleep(0.1)
    assert snap is not None and snap["requests"] == 2, path
    assert abs(snap["cost_usd"] - cost) < 1e-6 and snap["tokens"] == sum(r["total_tokens"] for r in rows)
    assert snap["health"]["status"] == "healthy" and snap["context_window"] == 200_000
    raw = open(path).read()
    assert key not in raw and key[-12:] not in raw and "fix the tests" not in raw  # no keys, no content

    env = {k: v for k, v in gateway.env.items() if k != "NO_COLOR"} | {"LLMSM_DB": str(gateway.db)}
    line = _statusline(env, _claude_code_input(sid))
    from llmsm.cli.format import human_usd

    assert line.startswith(f"llmsm {sid[:12]} · ctx 1% · \x1b[32mhealthy\x1b[0m · {human_usd(cost)}"), line
    # the first response of the account is the baseline (30, nobody's); the second moved it to 36: this session's
    assert "5h 36% (this 6%)" in line
    # NO_COLOR: the same words without colour; an unknown session: the global line
    assert _statusline(dict(env, NO_COLOR="1"), _claude_code_input(sid)).startswith(f"llmsm {sid[:12]} · ctx 1% · healthy · ")
    other = _statusline(env, _claude_code_input(str(uuid.uuid4())))
    assert other.startswith("llmsm ") and "active" in other and sid[:12] not in other
    import re

    assert _statusline(env, None) == re.sub(r"\x1b\[[0-9;]*m", "", other)  # no input: the global line, as before


def test_fast_default_db_path_is_the_stores(monkeypatch, tmp_path):
    from llmsm.analytics import store

    monkeypatch.delenv("LLMSM_DB", raising=False)
    for xdg in (None, str(tmp_path / "data"), ""):
        if xdg is None:
            monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_DATA_HOME", xdg)
        assert default_db_path() == str(store.default_db_path())
    monkeypatch.setenv("LLMSM_DB", "~/x.duckdb")
    assert default_db_path() == str(store.default_db_path())


def test_session_file_names_are_plain_or_hashed():
    sid = str(uuid.uuid4())
    assert file_name(sid) == f"{sid}.json"
    for odd in ("../../etc/passwd", ".hidden", "a/b", "x" * 200, "sp ace"):
        name = file_name(odd)
        assert name.startswith("h-") and "/" not in name and name.endswith(".json")


def _wait_snapshot(db, sid: str, requests: int) -> dict:
    deadline = time.time() + 15
    snap = None
    while time.time() < deadline:
        snap = read_snapshot(snapshot_dir(db), sid)
        if snap is not None and snap["requests"] == requests:
            return snap
        time.sleep(0.1)
    raise AssertionError(f"no snapshot with {requests} requests: {snap}")


def test_a_session_continued_after_a_gateway_restart_counts_its_whole_cost(upstream, tmp_path):
    """The snapshot of a session the gateway meets again after a restart starts from what the
    database has: nothing lost, nothing twice."""
    sid = str(uuid.uuid4())
    headers = {"user-agent": CC_UA, "x-claude-code-session-id": sid, "x-api-key": TEST_KEYS["anthropic"],
               "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    from tests.conftest import Gateway

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    gw = Gateway(tmp_path / "one", upstream.url, db=tmp_path / "llmsm.duckdb").start()
    try:
        assert httpx.post(f"{gw.url}/anthropic/v1/messages", json=body, headers=headers, timeout=15).status_code == 200
        _wait_snapshot(gw.db, sid, 1)
    finally:
        gw.stop()
    gw = Gateway(tmp_path / "two", upstream.url, db=tmp_path / "llmsm.duckdb").start()
    try:
        for _ in range(2):
            assert httpx.post(f"{gw.url}/anthropic/v1/messages", json=body, headers=headers, timeout=15).status_code == 200
        rows = gw.wait_rows(3, f"session_id = '{sid}'")
        snap = _wait_snapshot(gw.db, sid, 3)
    finally:
        gw.stop()
    assert abs(snap["cost_usd"] - sum(r["cost_usd"] for r in rows)) < 1e-6
    assert snap["tokens"] == sum(r["total_tokens"] for r in rows)


def test_session_input_from_a_pipe_that_stays_open():
    """Claude Code's JSON on a pipe the writer keeps open: read as soon as it is whole; a pipe
    nobody writes to gives up after the timeout; garbage or no session id: the global line."""
    from llmsm.cli.statusline import read_session_input

    def piped(data: bytes, close: bool):
        r, w = os.pipe()
        os.write(w, data)
        if close:
            os.close(w)
        f = os.fdopen(r, "rb")
        try:
            t0 = time.monotonic()
            return read_session_input(f, timeout=0.3), time.monotonic() - t0
        finally:
            f.close()
            if not close:
                os.close(w)

    got, took = piped(_claude_code_input("abc").encode(), close=False)
    assert got["session_id"] == "abc" and took < 0.25
    assert piped(b"", close=False)[0] is None
    assert piped(b"", close=True)[0] is None
    assert piped(b"not json", close=True)[0] is None
    assert piped(b'{"model": {}}', close=True)[0] is None


def test_no_status_files_keeps_none(upstream, tmp_path):
    from tests.conftest import Gateway

    gw = Gateway(tmp_path, upstream.url, extra_args=("--no-status-files",)).start()
    try:
        sid = str(uuid.uuid4())
        headers = {"user-agent": CC_UA, "x-app": "cli", "x-claude-code-session-id": sid,
                   "x-api-key": TEST_KEYS["anthropic"], "anthropic-version": "2023-06-01"}
        body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{gw.url}/anthropic/v1/messages", json=body, headers=headers, timeout=15).status_code == 200
        gw.wait_rows(1, f"session_id = '{sid}'")
        time.sleep(0.3)  # the snapshot thread would have written by now (it writes right after each event)
        assert not os.path.exists(snapshot_dir(gw.db))
    finally:
        gw.stop()


def test_burn_rate_is_the_last_ten_minutes_whatever_order_the_responses_end_in():
    # The snapshot keeps running sums of its burn window (a busy session has thousands of
    # requests in it): they must equal adding up the requests that ended in the window.
    from llmsm.analytics.session_status import SessionState, snapshot

    state = SessionState("burn")
    t0 = NOW - timedelta(minutes=40)
    ends = [37, 3, 15, 15, 29, 8, 33, 21, 2, 26, 11, 38, 19, 30, 6, 24, 35, 13, 1, 28]  # minutes after t0
    events = []
    for i, minute in enumerate(ends):
        end = t0 + timedelta(minutes=minute, seconds=i)
        e = ExchangeEvent(session_id="burn", provider="anthropic", api="messages", model="claude-sonnet-4-5",
                          started_at=end - timedelta(seconds=5), ended_at=end, status_code=200, outcome="ok",
                          input_tokens=100 + i, output_tokens=7 * i, usage_source="reported", cost_usd=0.001 * (i + 1))
        events.append(e)
    seen = []
    for k, e in enumerate(events):
        state.add(e)
        seen.append(e)
        now = t0 + timedelta(minutes=max(ends[: k + 1]) + 1)
        for at in (now, now - timedelta(seconds=30)):  # and a moment a little earlier
            frm = at - timedelta(minutes=10)
            window = [x for x in seen if x.ended_at > frm]
            out = snapshot(state, at)
            assert out["burn_tokens_per_min"] == round(sum(x.input_tokens + x.output_tokens for x in window) / 10, 1)
            assert out["burn_usd_per_min"] == round(sum(x.cost_usd for x in window) / 10, 6)
    assert snapshot(state, t0 + timedelta(hours=2))["burn_usd_per_min"] == 0.0


def test_a_snapshot_round_trips_whatever_it_holds(tmp_path):
    # Written with orjson (the gateway writes a few dozen a second), read with json by the status
    # line: non-ASCII labels, and an integer orjson cannot write, come back as they went in.
    from llmsm.analytics.status_files import SNAPSHOT_VERSION, write_snapshot

    directory = str(tmp_path / "missing" / "status")  # made on the first write
    for data in ({"v": SNAPSHOT_VERSION, "session_id": "s-1", "label": "refactor café ✓", "tokens": 12},
                 {"v": SNAPSHOT_VERSION, "session_id": "s-1", "label": None, "tokens": 2**70}):
        write_snapshot(directory, data)
        assert read_snapshot(directory, "s-1") == data
    assert os.listdir(directory) == ["s-1.json"]
