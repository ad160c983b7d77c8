"""`llmsm watch`, `show`, `health`, `statusline`: real traffic through the gateway, crafted
databases for the cases traffic cannot reach quickly (a nearly full context, a cold cache)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anthropic
import pytest
from rich.cells import cell_len
from rich.console import Console

from llmsm.analytics import dashboard, statusline
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.statusline import QuickHealth, StatusLine
from llmsm.analytics.store import connect, insert_events, insert_run
from llmsm.cli.dashboard import parse_at, render_frame, render_session, sparkline
from llmsm.cli.format import format_statusline, short_reason
from tests.conftest import REPO, TEST_KEYS, Gateway, isolated_env

UTC = timezone.utc
SONNET = "claude-sonnet-4-5-20250929"
MODEL = "claude-sonnet-4-6"


ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _isolated_env(tmp_path_factory):
    ENV.clear()
    ENV.update(isolated_env(tmp_path_factory.mktemp("dash-env")))


def llmsm(*args: str, columns: int = 200, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(ENV, COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "llmsm.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr


def fits(text: str, width: int) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, f"{cell_len(line)} > {width}: {line!r}"


# --------------------------------------------------------------------------------------------
# Real traffic: a healthy session and one hammered with 529s
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(upstream, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("dash-gw"), upstream.url).start()
    tag = uuid.uuid4().hex[:6]
    ok_label, bad_label = f"calm-{tag}", f"storm-{tag}"

    def client(label: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic", max_retries=0,
                                   default_headers={"x-llmsm-session": label})

    calm, storm = client(ok_label), client(bad_label)
    history: list[dict] = []
    for i in range(3):  # a conversation: every request differs from the one before
        history = history + [{"role": "user", "content": f"step {i}"}]
        calm.messages.create(model=MODEL, max_tokens=8, messages=history)
        history.append({"role": "assistant", "content": "ok"})
    msg = [{"role": "user", "content": "hi"}]
    storm.messages.create(model=MODEL, max_tokens=8, messages=msg)
    for _ in range(4):  # the same request again and again, overloaded each time
        with pytest.raises(anthropic.APIStatusError):
            storm.messages.create(model=MODEL, max_tokens=8, messages=msg, extra_headers={"x-fake": "status=529"})
    gw.wait_rows(8, f"session_id IN ('{ok_label}', '{bad_label}')", timeout=30)
    yield gw, ok_label, bad_label
    gw.stop()


def test_watch_once_json_singles_out_the_529_session(traffic):
    gw, ok_label, bad_label = traffic
    p = llmsm("watch", "--once", "--json", "--db", str(gw.db))
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    by_id = {s["session_id"]: s for s in data["sessions"]}
    bad, ok = by_id[bad_label], by_id[ok_label]
    assert bad["status"] in ("critical", "degraded")
    assert bad["health"]["reasons"][0]["factor"] == "errors"
    assert "overloaded" in bad["health"]["reasons"][0]["message"]
    assert bad["errors"] == 4 and bad["requests"] == 5
    assert ok["status"] == "healthy" and ok["health"]["reasons"] == []
    assert ok["requests"] == 3 and ok["input_tokens"] == 63 and ok["output_tokens"] == 126
    assert data["sessions"][0]["session_id"] == bad_label  # the most urgent first
    assert data["totals"]["sessions"] == 2 and data["totals"]["active"] == 2


@pytest.mark.parametrize("columns", [80, 200])
def test_watch_once_text_fits_and_shows_why(traffic, columns):
    gw, ok_label, bad_label = traffic
    p = llmsm("watch", "--once", "--db", str(gw.db), columns=columns)
    assert p.returncode == 0, p.stderr
    no_traceback(p)
    fits(p.stdout, columns)
    lines = p.stdout.splitlines()
    rows = [ln for ln in lines if ln.startswith((ok_label, bad_label))]
    assert [r.split()[0] for r in rows] == [bad_label, ok_label]
    assert "critical" in rows[0] and "overloaded (529)" in rows[0]
    assert "healthy" in rows[1]
    assert any(ln.startswith("total") for ln in lines)


def test_show_real_session(traffic):
    gw, _, bad_label = traffic
    p = llmsm("show", bad_label, "--db", str(gw.db))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert bad_label in out and "timeline (last 5 of 5 requests)" in out
    assert out.count("529 http_error") >= 4  # the timeline and the errors list
    assert "errors (4 in total" in out and "overloaded" in out
    assert "health " in out and "wait a minute" in out  # the advice for 529s
    assert "context ▁" in out  # the sparkline of context fill per turn
    p = llmsm("show", bad_label, "--db", str(gw.db), "--json")
    d = json.loads(p.stdout)
    assert d["session"]["session_id"] == bad_label and d["error_count"] == 4
    assert len(d["timeline"]) == 5 and d["timeline"][-1]["status_code"] == 529
    assert d["session"]["models"] == [MODEL]


def test_health_exit_codes_real_traffic(traffic):
    gw, ok_label, bad_label = traffic
    p = llmsm("health", "--db", str(gw.db), "--json")
    rows = {r["session_id"]: r for r in json.loads(p.stdout)}
    assert rows[ok_label]["status"] == "healthy" and rows[ok_label]["label"] == ok_label
    expected = 2 if rows[bad_label]["status"] == "critical" else 0
    assert rows[bad_label]["status"] == "critical"  # 4 fresh 529s and the last one failed
    assert p.returncode == expected == 2
    p = llmsm("health", ok_label, "--db", str(gw.db))
    assert p.returncode == 0, p.stderr
    assert "healthy" in p.stdout and "nothing to act on" in p.stdout


# --------------------------------------------------------------------------------------------
# Crafted databases
# --------------------------------------------------------------------------------------------


def turn(sid: str, at: datetime, prompt: int, *, label: str | None = None, model: str = SONNET, **kw) -> ExchangeEvent:
    fields = dict(
        session_id=sid, label=label, client="claude-code", client_version="2.0.31", provider="anthropic",
        api="messages", model=model, requested_model=model, started_at=at, ended_at=at + timedelta(seconds=5),
        status_code=200, outcome="ok", input_tokens=8, cache_read_tokens=max(0, prompt - 1_508),
        cache_write_tokens=min(prompt, 1_500), output_tokens=300, usage_source="reported", ttft_ms=1_200.0,
        duration_ms=5_000.0, tool_errors=0, request_hash=uuid.uuid4().hex, cache_ttl="5m", cost_usd=0.05,
    )
    fields.update(kw)
    return ExchangeEvent(**fields)


CRAFTED_AT: list[datetime] = []


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Path:
    """Three sessions, relative to now: one at 95 % of its window, one healthy but about to go
    cold (last turn 1 minute ago, 60k of context), one small and healthy."""
    db = tmp_path_factory.mktemp("dash-crafted") / "crafted.duckdb"
    now = datetime.now(UTC)
    CRAFTED_AT[:] = [now]
    events = []
    for i, p in enumerate([150_000, 165_000, 180_000, 190_000]):
        events.append(turn("abc123-full", now - timedelta(seconds=90 - 20 * i), p, label="bigctx"))
    for i in range(5):
        events.append(turn("abc123-idle", now - timedelta(minutes=8 - 2 * i) - timedelta(seconds=60), 60_000 + 500 * i,
                           label="coffee"))
    for i in range(3):
        events.append(turn("zz-small-one", now - timedelta(seconds=120 - 30 * i), 5_000 + 100 * i, label="tiny"))
    insert_events(db, events)
    insert_run(db, session_id="abc123-full", command="claude", cwd="/work/proj", label="bigctx", git_branch="main",
               started_at=now - timedelta(minutes=5))
    return db


def _frame(db: Path, **kw) -> dashboard.Frame:
    return dashboard.read_frame(db, timeout=5, **kw)


@pytest.mark.parametrize("width", [80, 200])
def test_render_frame_widths(crafted, width):
    frame = _frame(crafted)
    console = Console(record=True, width=width, height=40, color_system=None, file=open("/dev/null", "w"))
    console.print(render_frame(frame, width=width))
    text = console.export_text()
    fits(text, width)
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("session"))
    first = lines[head + 1]
    assert first.startswith("bigctx") and "critical" in first
    assert ("context 95%" in first) if width == 80 else ("context 95% full" in first)
    if width == 200:  # the wide layout keeps every column
        for col in ("context", "burn", "req", "err", "model", "age", "client", "cost", "in/out"):
            assert col in lines[head]
        assert "claude-code 2.0.31" in text and "█" in first
    assert [ln.split()[0] for ln in lines[head + 1 : head + 4]][0] == "bigctx"
    assert any(ln.startswith("total") for ln in lines)


def test_render_frame_limits_rows_to_height(crafted):
    frame = _frame(crafted)
    console = Console(record=True, width=100, height=7, color_system=None, file=open("/dev/null", "w"))
    console.print(render_frame(frame, width=100, height=7))
    text = console.export_text()
    assert "bigctx" in text and "… 2 more sessions" in text


def test_frame_order_and_reasons(crafted):
    frame = _frame(crafted)
    names = [s.label for s in frame.sessions]
    assert names[0] == "bigctx"
    big = frame.sessions[0]
    assert big.status == "critical" and big.health.reasons[0].factor == "context_fill"
    assert big.context_fill == pytest.approx(0.95)
    assert big.command == "claude" and big.git_branch == "main"
    others = {s.label: s for s in frame.sessions[1:]}
    assert others["coffee"].status == "healthy" and others["tiny"].status == "healthy"
    assert short_reason(big.health) == "context 95%"


def test_all_sessions_refresh_rereads_only_recent_ones(crafted):
    """`watch --all` refreshes read only sessions seen lately and reuse the others' rows; the
    result is the same frame a full read gives."""
    at = CRAFTED_AT[0] + timedelta(minutes=11)  # coffee (last turn 1 min before) falls out of the 10 min window
    full = _frame(crafted, at=at, window_minutes=None)
    assert full.events is not None and full.full_at == at
    later = at + timedelta(seconds=1)
    inc = _frame(crafted, at=later, window_minutes=None, previous=full)
    again = _frame(crafted, at=later, window_minutes=None)
    assert inc.full_at == at and again.full_at == later  # incremental vs full
    assert [s.to_dict() for s in inc.sessions] == [s.to_dict() for s in again.sessions]
    much_later = at + timedelta(minutes=5)  # past FULL_REFRESH_S: a full read again
    assert _frame(crafted, at=much_later, window_minutes=None, previous=inc).full_at == much_later


def test_at_past_the_cache_lifetime(crafted):
    now = _frame(crafted)
    coffee = next(s for s in now.sessions if s.label == "coffee")
    assert "cache_cold" not in [r.factor for r in coffee.health.reasons]
    p = llmsm("health", "coffee", "--db", str(crafted), "--json", "--at", "+10m")
    assert p.returncode == 0, p.stderr
    [h] = json.loads(p.stdout)
    assert h["label"] == "coffee" and h["status"] == "degraded"
    assert h["reasons"][0]["factor"] == "cache_cold" and h["cache_cold"] is True
    p = llmsm("health", "coffee", "--db", str(crafted), "--json")
    [h] = json.loads(p.stdout)
    assert h["status"] == "healthy" and not h["cache_cold"]
    # watch --at: the same verdict, and the header says which moment it shows
    p = llmsm("watch", "--once", "--db", str(crafted), "--at", "+10m")
    assert p.returncode == 0, p.stderr
    row = next(ln for ln in p.stdout.splitlines() if ln.startswith("coffee"))
    assert "degraded" in row and "prompt cache expired" in row
    assert "(--at)" in p.stdout


def test_at_in_the_past_sees_only_earlier_requests(crafted):
    at = CRAFTED_AT[0] - timedelta(seconds=60)  # after the turns of -90 s and -70 s, before -50 s
    p = llmsm("show", "bigctx", "--db", str(crafted), "--json", "--at", at.isoformat())
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["session"]["requests"] == 2
    assert d["session"]["health"]["context_tokens"] == 165_000


def test_health_exit_codes(crafted):
    p = llmsm("health", "--db", str(crafted))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "bigctx" in p.stdout and "critical" in p.stdout
    p = llmsm("health", "tiny", "--db", str(crafted))
    assert p.returncode == 0, p.stdout + p.stderr
    p = llmsm("health", "nope", "--db", str(crafted))
    assert p.returncode == 1 and p.stderr.startswith("error:")
    no_traceback(p)


def test_show_prefix_and_ambiguous_prefix(crafted):
    p = llmsm("show", "abc123-f", "--db", str(crafted), columns=80)
    assert p.returncode == 0, p.stderr
    fits(p.stdout, 80)
    assert "bigctx" in p.stdout and "abc123-full" in p.stdout
    assert "claude · in /work/proj · branch main" in p.stdout
    assert "context 95% full" in p.stdout and "compact" in p.stdout
    p = llmsm("show", "abc123", "--db", str(crafted))
    assert p.returncode == 1
    no_traceback(p)
    assert "ambiguous" in p.stderr and "abc123-full" in p.stderr and "abc123-idle" in p.stderr
    p = llmsm("show", "no-such", "--db", str(crafted))
    assert p.returncode == 1 and "no session matches" in p.stderr


def test_render_session_sparkline(crafted):
    from llmsm.analytics.store import open_for_query

    con = open_for_query(crafted)
    try:
        detail = dashboard.load_session(con, "abc123-full")
    finally:
        con.close()
    fills = [c["fill"] for c in detail.context]
    assert fills == pytest.approx([0.75, 0.825, 0.9, 0.95])
    console = Console(record=True, width=100, color_system=None, file=open("/dev/null", "w"))
    console.print(render_session(detail, width=100))
    text = console.export_text()
    assert "context " + sparkline(fills) in text
    assert sparkline([0, 0.5, 1.0]) == "▁▅█"


def test_busy_database_keeps_the_last_frame(crafted):
    from llmsm.cli.dashboard import _Reader

    reader = _Reader(crafted, None, 60.0)
    reader.refresh()
    assert reader.frame is not None and reader.note is None
    shown = reader.frame
    writer = connect(crafted)  # a read-write connection: the file is busy for the reader
    try:
        reader.refresh()
    finally:
        writer.close()
    assert reader.frame is shown and reader.note.startswith("db busy")
    console = Console(record=True, width=80, color_system=None, file=open("/dev/null", "w"))
    console.print(render_frame(reader.frame, width=80, note=reader.note))
    assert "[db busy" in console.export_text()
    reader.refresh()
    assert reader.note is None and reader.frame is not shown


@pytest.mark.parametrize("key", [b"q", b"\x03"])
def test_watch_live_quits_on_q_and_ctrl_c(crafted, key):
    """The live dashboard (the Textual app) in a real pseudo-terminal: full screen, `q` or
    Ctrl-C quits with exit code 0 and the terminal settings restored."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    env = dict(ENV, TERM="xterm-256color")
    env.pop("NO_COLOR", None)

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "llmsm.cli.main", "watch", "--db", str(crafted), "--interval", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, preexec_fn=controlling_tty)
    out = b""

    def pump(until) -> None:
        nonlocal out
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not until():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    return

    try:
        pump(lambda: b"bigctx" in out)  # the app drew the session list
        time.sleep(0.5)  # a refresh or two
        assert termios.tcgetattr(slave)[3] != before[3]  # raw mode while running
        os.write(master, key)
        assert proc.wait(10) == 0
        pump(lambda: b"\x1b[?1049l" in out)
    finally:
        if proc.poll() is None:
            proc.kill()
        after = termios.tcgetattr(slave)
        os.close(slave)
        os.close(master)
    assert b"\x1b[?1049h" in out and b"\x1b[?1049l" in out  # the alternate screen, left again
    assert b"Traceback" not in out
    assert after == before


def test_statusline(crafted, tmp_path):
    p = llmsm("statusline", "--db", str(crafted))
    assert p.returncode == 0 and p.stderr == ""
    line = p.stdout.strip()
    assert line.startswith("llmsm 3 active · worst: bigctx critical (context 95%) · today ")
    assert "\x1b[" not in line  # not a terminal: no colour
    for module in ("llmsm.cli.statusline", "llmsm.analytics.dashboard"):  # the fast entry point, and its old name
        fast = subprocess.run([sys.executable, "-m", module, "--db", str(crafted)],
                              capture_output=True, text=True, env=ENV, cwd=REPO)
        assert fast.returncode == 0 and fast.stdout.strip() == line, (module, fast.stdout, fast.stderr)
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    if CRAFTED_AT[0] - timedelta(minutes=10) > midnight:  # all 12 turns today (local time)
        assert line.endswith(" $0.60")  # 12 turns at $0.05


def test_statusline_colour_only_when_asked():
    worst = QuickHealth(status="degraded", score=76, factor="context_fill", severity="warn", context_fill=0.87)
    s = StatusLine(active=2, recent=3, tokens_today=1_234_567, cost_today=4.314, worst_name="refactor", worst=worst)
    plain = format_statusline(s)
    assert plain == "llmsm 2 active · worst: refactor degraded (context 87%) · today 1.2M tok $4.31"
    coloured = format_statusline(s, color=True)
    assert "\x1b[33mdegraded\x1b[0m" in coloured
    assert format_statusline(StatusLine(active=1, recent=1)) == "llmsm 1 active · all healthy · today 0 tok"
    errors = worst._replace(status="critical", factor="errors", severity="critical", error_kind="billing", errors=1)
    assert format_statusline(s._replace(worst=errors)).startswith("llmsm 2 active · worst: refactor critical (1 error: billing / credits) ·")


def test_statusline_missing_and_empty_db(tmp_path):
    p = llmsm("statusline", "--db", str(tmp_path / "absent.duckdb"))
    assert p.returncode == 0 and p.stdout.strip() == "llmsm: no data yet" and p.stderr == ""
    empty = tmp_path / "empty.duckdb"
    connect(empty).close()
    p = llmsm("statusline", "--db", str(empty))
    assert p.returncode == 0 and p.stdout.strip() == "llmsm idle · today 0 tok"
    holder = connect(empty)  # a writer holds the file: a neutral line, quickly
    try:
        p = llmsm("statusline", "--db", str(empty))
    finally:
        holder.close()
    assert p.returncode == 0 and p.stdout.strip() == "llmsm: db busy" and p.stderr == ""
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    p = llmsm("statusline", "--db", str(junk))
    assert p.returncode == 0 and p.stdout.strip().startswith("llmsm: ") and p.stderr == ""


def test_watch_once_missing_and_empty(tmp_path):
    p = llmsm("watch", "--once", "--db", str(tmp_path / "absent.duckdb"), columns=80)
    assert p.returncode == 0, p.stderr
    assert "no database yet" in p.stdout and "llmsm proxy" in p.stdout
    empty = tmp_path / "empty.duckdb"
    connect(empty).close()
    p = llmsm("watch", "--once", "--db", str(empty))
    assert p.returncode == 0 and "no active sessions in the last 60 min" in p.stdout
    p = llmsm("health", "--db", str(empty), "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == []
    p = llmsm("watch", "--once", "--db", str(empty), "--at", "tomorrow")
    assert p.returncode == 1 and "--at 'tomorrow'" in p.stderr


def test_parse_at():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_at(None, now) is None
    assert parse_at("now", now) == now
    assert parse_at("+10m", now) == now + timedelta(minutes=10)
    assert parse_at("-1h", now) == now - timedelta(hours=1)
    assert parse_at("-90s", now) == now - timedelta(seconds=90)
    assert parse_at("+2d", now) == now + timedelta(days=2)
    assert parse_at("2026-11-25T13:00:00+01:00", now) == now
    assert parse_at("2026-11-25T12:00:00Z", now) == now
    assert parse_at("2026-11-25T12:00", now).tzinfo is not None  # naive: local time
    with pytest.raises(ValueError):
        parse_at("10m", now)


# --------------------------------------------------------------------------------------------
# Budgets and quota windows
# --------------------------------------------------------------------------------------------

ACCT_A, ACCT_B = "key:aaaaaaaaaaaa", "key:bbbbbbbbbbbb"
BUDGET_AT: list[datetime] = []


def _unified(now: datetime, five: str, five_reset: datetime, seven: str = "0.40") -> dict[str, str]:
    return {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-reset": str(int(five_reset.timestamp())),
        "anthropic-ratelimit-unified-5h-utilization": five,
        "anthropic-ratelimit-unified-7d-utilization": seven,
        "anthropic-ratelimit-unified-7d-reset": str(int((now + timedelta(days=3)).timestamp())),
    }


def _budget_events(now: datetime) -> list[ExchangeEvent]:
    """Turns of 3,000 tokens each (prompt 2,700 + 300 out) unless said otherwise."""
    five_reset = now + timedelta(hours=2)
    events = []
    for i in range(3):  # label 'refactor': 9,000 tokens
        events.append(turn("bud-warn", now - timedelta(seconds=150 - 30 * i), 2_700, label="refactor", account=ACCT_A,
                           ratelimit=_unified(now, "0.72", five_reset) if i == 2 else None))
    for i in range(3):  # session 'bud-over': 9,000 tokens
        events.append(turn("bud-over", now - timedelta(seconds=140 - 30 * i), 2_700, label="runaway", account=ACCT_B))
    # one big turn: 190,300 tokens, context 95% full
    events.append(turn("bud-ctx", now - timedelta(seconds=60), 190_000, account=ACCT_A))
    events.append(turn("bud-calm", now - timedelta(seconds=50), 2_700, label="calm", account=ACCT_B))
    # account B: a 5h window that has reset since (stale: left out), and an API token limit
    events.append(turn("bud-calm", now - timedelta(seconds=40), 2_700, label="calm", account=ACCT_B, ratelimit={
        **_unified(now, "0.95", now - timedelta(minutes=10), seven="0.10"),
        "anthropic-ratelimit-unified-7d-reset": str(int((now - timedelta(minutes=10)).timestamp())),
    }))
    events.append(turn("bud-calm", now - timedelta(seconds=30), 2_700, label="calm", account=ACCT_B, ratelimit={
        "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "300000",
        "anthropic-ratelimit-tokens-reset": (now + timedelta(seconds=50)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }))
    return events


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory) -> Path:
    """A label budget at 90 % (warn), a session budget at 180 % (exceeded), a session budget at
    90 % on a session whose context is 95 % full, an ok day budget, a budget of another client;
    quota headers of two accounts."""
    from llmsm.analytics.budgets import set_budget

    db = tmp_path_factory.mktemp("dash-budgets") / "budgets.duckdb"
    now = datetime.now(UTC)
    BUDGET_AT[:] = [now]
    insert_events(db, _budget_events(now))
    con = connect(db)
    try:
        set_budget(con, "label", "refactor", max_tokens=10_000)
        set_budget(con, "session", "bud-over", max_tokens=5_000)
        set_budget(con, "session", "bud-ctx", max_tokens=211_000)
        set_budget(con, "day", None, max_usd=100.0)
        set_budget(con, "client", "someone-else", max_tokens=1)
    finally:
        con.close()
    return db


def _row(text: str, name: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(name))


def test_budgets_feed_health_and_mark_rows(budgeted):
    frame = _frame(budgeted)
    by = {s.session_id: s for s in frame.sessions}
    warn, over, ctx, calm = by["bud-warn"], by["bud-over"], by["bud-ctx"], by["bud-calm"]
    # the label budget at 90 %: warn, the health model's top reason, with a pace
    assert warn.budget["scope"] == "label" and warn.budget["state"] == "warn" and warn.budget["pct"] == pytest.approx(90)
    assert [b["scope"] for b in warn.budgets] == ["label", "day"]
    assert warn.health.reasons[0].factor == "budget" and warn.status == "degraded"
    assert "label 'refactor' budget 90% used" in warn.health.reasons[0].message
    assert warn.health.budget_fraction == pytest.approx(0.9)
    assert warn.budget["rate"] == pytest.approx(900 / 10_000) and warn.health.budget_minutes_left == pytest.approx(0.1 / 0.09)
    assert short_reason(warn.health).startswith("budget 90%")
    # exceeded: critical, the budget first
    assert over.budget["state"] == "exceeded" and over.budget["pct"] == pytest.approx(180)
    assert over.status == "critical" and over.health.reasons[0].factor == "budget"
    assert over.health.reasons[0].severity == "critical"
    # a budget at warn below a worse reason: still in the reasons, context first
    assert ctx.budget["state"] == "warn" and ctx.health.reasons[0].factor == "context_fill"
    assert "budget" in [r.factor for r in ctx.health.reasons]
    # only the day budget applies (ok): nothing to say
    assert [b["scope"] for b in calm.budgets] == ["day"] and calm.status == "healthy" and calm.health.reasons == []
    assert "someone-else" not in {b["target"] for s in frame.sessions for b in s.budgets}
    assert len(frame.budgets) == 5 and frame.budgets[0]["target"] == "bud-over"  # the tightest first
    assert frame.totals()["budget_warn"] == 2 and frame.totals()["budget_exceeded"] == 1


@pytest.mark.parametrize("width", [80, 200])
def test_budget_marker_and_quota_footer_render(budgeted, width):
    frame = _frame(budgeted)
    console = Console(record=True, width=width, height=40, color_system=None, file=open("/dev/null", "w"))
    console.print(render_frame(frame, width=width))
    text = console.export_text()
    fits(text, width)
    assert "budget 90%" in _row(text, "refactor") and "degraded" in _row(text, "refactor")
    assert "budget 180%" in _row(text, "runaway") and "critical" in _row(text, "runaway")
    marker = "budget 90% · context 95%" if width == 200 else "$90% context 95%"
    assert marker in _row(text, "bud-ctx")
    assert "budget" not in _row(text, "calm") and "%" not in _row(text, "calm").split("$0.15")[-1]  # an ok budget: no mark
    quota = [ln for ln in text.splitlines() if ln.startswith("quota")]
    from llmsm.analytics.quota import clock as quota_clock

    reset = datetime.fromtimestamp(int((BUDGET_AT[0] + timedelta(hours=2)).timestamp()), UTC)
    clock = quota_clock(reset, datetime.now(UTC))
    assert len(quota) == 2  # one per account, the most used window that has not reset
    account = (lambda a: a if width == 200 else a[:8] + "…")
    assert quota[0].endswith(f"5h window 72% used, resets {clock}") and account(ACCT_A) in quota[0]
    assert "tokens window 25% used, 300,000 of 400,000 left, resets" in quota[1] and account(ACCT_B) in quota[1]
    assert not any("95%" in q for q in quota)  # account B's 5h window has reset since


def test_watch_json_and_statusline_show_budgets_and_quota(budgeted):
    p = llmsm("watch", "--once", "--json", "--db", str(budgeted))
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert [(q["account"], q["window"], q["used_pct"]) for q in data["quota"]] == [(ACCT_A, "5h", 72), (ACCT_B, "tokens", 25)]
    over = next(s for s in data["sessions"] if s["session_id"] == "bud-over")
    assert over["budgets"][0]["state"] == "exceeded" and over["budgets"][0]["used_tokens"] == 9_000
    assert over["health"]["reasons"][0]["factor"] == "budget"
    assert {b["id"] for b in data["budgets"]} >= {b["id"] for s in data["sessions"] for b in s["budgets"]}
    p = llmsm("watch", "--once", "--db", str(budgeted), columns=80)
    assert p.returncode == 0, p.stderr
    fits(p.stdout, 80)
    assert "5h window 72% used, resets" in p.stdout and "$90% context 95%" in p.stdout
    p = llmsm("statusline", "--db", str(budgeted))
    assert p.returncode == 0 and p.stderr == ""
    line = p.stdout.strip()
    assert line.startswith("llmsm 4 active · worst: bud-ctx critical (context 95%) · today ")
    assert line.endswith(" · 5h 72% · budget 180%")


def test_show_lists_the_budgets_that_apply(budgeted):
    p = llmsm("show", "bud-ctx", "--db", str(budgeted), columns=100)
    assert p.returncode == 0, p.stderr
    fits(p.stdout, 100)
    lines = p.stdout.splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith("budgets (2)")))
    assert "session bud-ctx" in lines[i + 1] and "190,300 of 211,000 tokens" in lines[i + 1]
    assert "90%" in lines[i + 1] and "warn" in lines[i + 1]
    assert lines[i + 2].startswith("day") and " ok" in lines[i + 2]
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    if BUDGET_AT[0] - timedelta(minutes=3) > midnight:  # every turn today (local time): 10 turns at $0.05
        assert "$0.50 of $100.00" in lines[i + 2]
    p = llmsm("show", "bud-ctx", "--db", str(budgeted), "--json")
    d = json.loads(p.stdout)
    assert [b["scope"] for b in d["session"]["budgets"]] == ["session", "day"]


def test_statusline_quota_and_budget_format():
    s = StatusLine(active=1, recent=1, quota_window="5h", quota_pct=72.4, budget_pct=92.0, budget_state="warn")
    assert format_statusline(s) == "llmsm 1 active · all healthy · today 0 tok · 5h 72% · budget 92%"
    coloured = format_statusline(s._replace(quota_pct=95.0, budget_state="exceeded"), color=True)
    assert "\x1b[1;31m5h 95%\x1b[0m" in coloured and "\x1b[1;31mbudget 92%\x1b[0m" in coloured
    assert "budget" not in format_statusline(s._replace(budget_state="ok"))


@pytest.mark.parametrize("old", ["no-views", "broken-view"])
def test_older_database_without_the_views(tmp_path, old):
    """A database of an older llmsm: no `quota` / `budget_status` views (and no budgets table),
    or a budget_status view that fails: the status line and the dashboard still answer, with
    the quota read from the events."""
    import duckdb

    db = tmp_path / f"{old}.duckdb"
    now = datetime.now(UTC)
    insert_events(db, [turn("old-one", now - timedelta(seconds=30), 5_000, label="legacy", account=ACCT_A,
                            ratelimit=_unified(now, "0.72", now + timedelta(hours=2)))])
    raw = duckdb.connect(str(db))
    try:
        raw.execute("DROP VIEW quota")
        if old == "no-views":
            raw.execute("DROP VIEW budget_status")
            raw.execute("DROP TABLE budgets")
        else:
            raw.execute("INSERT INTO budgets (id, scope, target, max_tokens) VALUES ('b-old', 'day', NULL, 10)")
            raw.execute("CREATE OR REPLACE VIEW budget_status AS SELECT error('written by another llmsm') AS id")
    finally:
        raw.close()
    s = statusline.statusline(db)
    assert s.note is None and s.active == 1 and (s.quota_window, s.quota_pct) == ("5h", 72) and s.budget_pct is None
    p = llmsm("statusline", "--db", str(db))
    assert p.returncode == 0 and p.stderr == ""
    no_traceback(p)
    assert p.stdout.strip().startswith("llmsm 1 active") and p.stdout.strip().endswith(" · 5h 72%")
    frame = _frame(db)
    assert [q["text"].split(",")[0] for q in frame.quota_top()] == ["5h window 72% used"]
    assert frame.sessions[0].budgets == [] and frame.budgets == []


def test_a_health_field_missing_from_the_query_fails_loudly():
    """The frame's events query is built from health_rules.HEALTH_FIELDS and checked by name:
    a field it lost would otherwise read as None and quietly change a verdict."""
    from llmsm.analytics.health_rules import HEALTH_FIELDS

    assert set(dashboard._HEALTH_SQL_EXPR) <= set(HEALTH_FIELDS)  # no expression for a field the model does not read
    dashboard._check_health_columns([(f,) for f in HEALTH_FIELDS])
    with pytest.raises(RuntimeError, match="the health model reads"):
        dashboard._check_health_columns([(f,) for f in HEALTH_FIELDS if f != "error_message"])
