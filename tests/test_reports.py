"""`llmsm report ...` and the `daily` view: totals against sums computed here, independently."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import duckdb
import pytest

from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.store import insert_events
from tests.conftest import REPO, TEST_KEYS

TZ = "America/New_York"
KINDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens")
MODELS = [("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-opus-4-1"), ("openai", "gpt-5"), ("gemini", "gemini-2.5-pro")]
CLIENTS = ["claude-code", "codex", "gemini-cli", "unknown"]


def llmsm(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmsm.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def ok_json(*args: str, env: dict | None = None):
    p = llmsm(*args, "--json", env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def make_events(seed: int = 7, n: int = 400) -> list[ExchangeEvent]:
    """Varied events over ~20 days, crossing midnights and DST (early November in New York)."""
    rnd = random.Random(seed)
    start = datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc)
    events = []
    for i in range(n):
        provider, model = rnd.choice(MODELS)
        api = "other" if rnd.random() < 0.08 else {"anthropic": "messages", "openai": "responses", "gemini": "generate_content"}[provider]
        outcome = rnd.choice(["ok"] * 8 + ["http_error", "client_aborted"])
        source = rnd.choice(["reported"] * 6 + ["estimated", "none"])
        tokens = {k: (None if rnd.random() < 0.1 else rnd.randint(0, 5000)) for k in KINDS}
        events.append(ExchangeEvent(
            started_at=start + timedelta(minutes=rnd.randint(0, 20 * 24 * 60), microseconds=rnd.randint(0, 999999)),
            session_id=f"sess-{rnd.randint(0, 12)}" if rnd.random() < 0.95 else None,
            label=rnd.choice([None, None, "feature-x"]),
            client=rnd.choice(CLIENTS), provider=provider, api=api, model=model, requested_model=model,
            outcome=outcome, usage_source=source, message_id=f"msg_{i}", request_id=f"req_{i}",
            cost_usd=None if rnd.random() < 0.2 else round(rnd.random(), 4), **tokens,
        ))
    # transcript rows: some duplicate wire messages (must not count), some only in transcripts (must count);
    # a duplicate is timed like its wire row, give or take two minutes (the same response)
    for i in range(60):
        dup = i % 2 == 0
        events.append(ExchangeEvent(
            started_at=(events[i * 3].started_at + timedelta(seconds=rnd.randint(-120, 120)) if dup
                        else start + timedelta(minutes=rnd.randint(0, 20 * 24 * 60))),
            session_id=f"sess-{rnd.randint(0, 12)}", client="claude-code", provider="anthropic", api="messages",
            model="claude-sonnet-4-5", usage_source="transcript",
            message_id=f"msg_{i * 3}" if dup else f"msg_t{i}", request_id=f"req_{i * 3}" if dup else f"req_t{i}",
            input_tokens=rnd.randint(0, 50), output_tokens=rnd.randint(0, 900), cache_read_tokens=rnd.randint(0, 9000),
            cache_write_tokens=rnd.randint(0, 900), cost_usd=round(rnd.random(), 4),
        ))
    return events


def counted(events: list[ExchangeEvent]) -> list[ExchangeEvent]:
    wire_ids = {e.message_id for e in events if e.usage_source != "transcript" and e.message_id}
    return [e for e in events if e.api != "other" and not (e.usage_source == "transcript" and e.message_id in wire_ids)]


def sums(events: list[ExchangeEvent]) -> dict:
    out = {
        "requests": len(events),
        "errors": sum(e.outcome != "ok" for e in events),
        "estimated_requests": sum(e.usage_source == "estimated" for e in events),
        "transcript_requests": sum(e.usage_source == "transcript" for e in events),
    }
    for k in KINDS:
        out[k] = sum(getattr(e, k) or 0 for e in events)
    out["total_tokens"] = sum(out[k] for k in KINDS if k != "reasoning_tokens")
    costs = [e.cost_usd for e in events if e.cost_usd is not None]
    out["cost_usd"] = sum(costs) if costs else None
    out["unpriced_requests"] = sum(
        e.cost_usd is None and sum(getattr(e, k) or 0 for k in KINDS if k != "reasoning_tokens") > 0 for e in events
    )
    return out


def assert_metrics(got: dict, want: dict) -> None:
    for k, v in want.items():
        if k == "cost_usd" and v is not None:
            assert got[k] == pytest.approx(v, abs=1e-6), k
        else:
            assert got[k] == v, k


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    db = tmp_path_factory.mktemp("reports") / "r.duckdb"
    events = make_events()
    assert insert_events(db, events) == len(events)
    return db, events


def _group(events, key):
    groups = defaultdict(list)
    for e in events:
        groups[key(e)].append(e)
    return groups


def test_daily_totals_in_a_named_zone(data):
    db, events = data
    zone = ZoneInfo(TZ)
    got = ok_json("report", "daily", "--db", str(db), "--tz", TZ)
    assert got["schema"] == "llmsm.report/1" and got["report"] == "daily" and got["timezone"] == TZ
    want = _group(counted(events), lambda e: e.started_at.astimezone(zone).date().isoformat())
    assert [r["date"] for r in got["rows"]] == sorted(want)
    for row in got["rows"]:
        assert_metrics(row, sums(want[row["date"]]))
        assert row["models"] == sorted({e.model for e in want[row["date"]]})
        assert row["breakdown"] is None
    assert_metrics(got["totals"], sums(counted(events)))


def test_weekly_monthly_models_sessions(data):
    db, events = data
    c = counted(events)
    zone = ZoneInfo("UTC")

    weekly = ok_json("report", "weekly", "--db", str(db), "--utc")
    def monday(e):
        d = e.started_at.astimezone(zone).date()
        return (d - timedelta(days=d.weekday())).isoformat()
    want = _group(c, monday)
    assert {r["week"]: r["requests"] for r in weekly["rows"]} == {k: len(v) for k, v in want.items()}

    monthly = ok_json("report", "monthly", "--db", str(db), "--utc")
    want = _group(c, lambda e: e.started_at.astimezone(zone).strftime("%Y-%m"))
    for row in monthly["rows"]:
        assert_metrics(row, sums(want[row["month"]]))

    models = ok_json("report", "models", "--db", str(db))
    want = _group(c, lambda e: (e.provider, e.model))
    assert len(models["rows"]) == len(want)
    for row in models["rows"]:
        assert_metrics(row, sums(want[(row["provider"], row["model"])]))
    costs = [r["cost_usd"] for r in models["rows"]]
    assert costs == sorted(costs, reverse=True)

    sessions = ok_json("report", "sessions", "--db", str(db), "--breakdown")
    want = _group(c, lambda e: e.session_id)
    assert {r["session_id"] for r in sessions["rows"]} == set(want)
    for row in sessions["rows"]:
        mine = want[row["session_id"]]
        assert_metrics(row, sums(mine))
        assert row["first_seen"] == min(e.started_at for e in mine).isoformat()
        # the breakdown adds up to its row
        for k in ("requests", *KINDS):
            assert sum(b[k] for b in row["breakdown"]) == row[k]
    assert_metrics(sessions["totals"], sums(c))


def test_since_until_client_and_breakdown(data):
    db, events = data
    zone = ZoneInfo(TZ)
    got = ok_json("report", "daily", "--db", str(db), "--tz", TZ, "--since", "2026-11-01", "--until", "2026-11-03",
                  "--client", "codex", "--breakdown")
    lo = datetime(2026, 11, 1, tzinfo=zone)
    hi = datetime(2026, 11, 4, tzinfo=zone)  # --until is a date: the whole day is included
    mine = [e for e in counted(events) if lo <= e.started_at < hi and e.client == "codex"]
    assert got["since"] == lo.astimezone(timezone.utc).isoformat()
    assert got["until"] == hi.astimezone(timezone.utc).isoformat()
    assert_metrics(got["totals"], sums(mine))
    assert {r["date"] for r in got["rows"]} <= {"2026-11-01", "2026-11-02", "2026-11-03"}
    for row in got["rows"]:
        by_model = _group([e for e in mine if e.started_at.astimezone(zone).date().isoformat() == row["date"]],
                          lambda e: (e.provider, e.model))
        assert {(b["provider"], b["model"]) for b in row["breakdown"]} == set(by_model)
        for b in row["breakdown"]:
            assert_metrics(b, sums(by_model[(b["provider"], b["model"])]))

    # an ISO time with an offset is an exact instant; a relative age is measured from now
    got = ok_json("report", "models", "--db", str(db), "--since", "2026-11-05T12:00:00+00:00")
    assert_metrics(got["totals"], sums([e for e in counted(events) if e.started_at >= datetime(2026, 11, 5, 12, tzinfo=timezone.utc)]))


def test_relative_ages_and_today(tmp_path):
    """The same time grammar for `report` and `cost` (`cost --since 90s` was refused once)."""
    db = tmp_path / "rel.duckdb"
    now = datetime.now(timezone.utc)
    ages = {"8d": timedelta(days=8), "6d": timedelta(days=6), "2h": timedelta(hours=2), "10m": timedelta(minutes=10),
            "20s": timedelta(seconds=20)}
    insert_events(db, [ExchangeEvent(started_at=now - age, api="messages", provider="anthropic", model=name,
                                     input_tokens=1, usage_source="reported") for name, age in ages.items()])
    for command, since, until, want in (
        ("report", "7d", None, {"6d", "2h", "10m", "20s"}), ("report", "1w", "1h", {"6d", "2h"}),
        ("report", "90s", None, {"20s"}), ("cost", "90s", None, {"20s"}), ("cost", "-3h", "-1s", {"2h", "10m", "20s"}),
    ):
        period = ("--since", since) + (("--until", until) if until else ())
        args = ("report", "models") if command == "report" else ("cost", "--by", "model")
        got = ok_json(*args, "--db", str(db), *period)
        assert {r["model"] for r in got["rows"]} == want, (command, period)
    got = ok_json("report", "daily", "--db", str(db), "--since", "today", "--utc")
    want = {name for name, age in ages.items() if (now - age).date() == now.date()}
    assert got["totals"]["requests"] == len(want)


def test_since_the_year_one_means_from_the_beginning(data):
    """`--since 0001-01-01` once reported from today (a placeholder date stood for "today")."""
    db, events = data
    everything = sums(counted(events))
    for zone in (("--tz", "Asia/Tokyo"), ()):  # ahead of UTC: year 1 at midnight there is before year 1 in UTC
        got = ok_json("report", "models", "--db", str(db), "--since", "0001-01-01", *zone)
        assert_metrics(got["totals"], everything)
    got = ok_json("report", "daily", "--db", str(db), "--since", "0001-01-01", "--until", "9999-12-31",
                  "--tz", "America/Los_Angeles")
    assert_metrics(got["totals"], everything)
    got = ok_json("cost", "--db", str(db), "--since", "0001-01-01", "--until", "9999-12-31")
    assert got["total"]["requests"] == everything["requests"]
    assert got["total"]["input_tokens"] == everything["input_tokens"]


def test_the_wire_wins_across_a_period_boundary(tmp_path):
    """A response seen by the wire just before midnight and imported from a transcript just after
    counts once, on the wire's day, in every report, the views and `llmsm cost`."""
    db = tmp_path / "edge.duckdb"
    midnight = datetime(2026, 11, 2, tzinfo=timezone.utc)
    common = dict(api="messages", provider="anthropic", model="claude-sonnet-4-5", session_id="s")
    insert_events(db, [
        ExchangeEvent(id="wire", started_at=midnight - timedelta(seconds=2), message_id="msg_edge", input_tokens=10,
                      usage_source="reported", **common),
        ExchangeEvent(id="twin", started_at=midnight + timedelta(seconds=3), message_id="msg_edge", input_tokens=9,
                      usage_source="transcript", **common),
        ExchangeEvent(id="only", started_at=midnight + timedelta(seconds=5), message_id="msg_only", input_tokens=4,
                      usage_source="transcript", **common),
    ])
    daily = ok_json("report", "daily", "--db", str(db), "--utc")
    assert [(r["date"], r["requests"], r["input_tokens"], r["transcript_requests"]) for r in daily["rows"]] == [
        ("2026-11-01", 1, 10, 0), ("2026-11-02", 1, 4, 1)]
    after = ok_json("report", "models", "--db", str(db), "--since", "2026-11-02", "--utc")["totals"]
    before = ok_json("report", "models", "--db", str(db), "--until", "2026-11-01", "--utc")["totals"]
    assert (after["requests"], after["input_tokens"], before["requests"], before["input_tokens"]) == (1, 4, 1, 10)
    cost = ok_json("cost", "--by", "day", "--db", str(db), "--since", "2026-11-02T00:00Z")
    assert (cost["total"]["requests"], cost["total"]["input_tokens"]) == (1, 4)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT day::VARCHAR, requests, input_tokens FROM daily ORDER BY day").fetchall() == [
            ("2026-11-01", 1, 10), ("2026-11-02", 1, 4)]
        assert con.execute("SELECT requests, input_tokens FROM sessions").fetchall() == [(2, 14)]
        assert con.execute("SELECT id FROM counted_events(since := TIMESTAMPTZ '2026-11-02 00:00:00+00')").fetchall() == [
            ("only",)]
        assert sorted(con.execute("SELECT id FROM counted_events()").fetchall()) == [("only",), ("wire",)]
    finally:
        con.close()


def test_daily_view_matches_independent_sums(data):
    db, events = data
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute("SELECT * FROM daily")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()
    want = _group(counted(events), lambda e: (e.started_at.astimezone(timezone.utc).date(), e.provider, e.model, e.client))
    assert len(rows) == len(want)
    for r in rows:
        assert isinstance(r["day"], date)
        assert_metrics(r, sums(want[(r["day"], r["provider"], r["model"], r["client"])]))


def test_table_fits_80_columns(data):
    db, _ = data
    env = {**__import__("os").environ, "COLUMNS": "80", "NO_COLOR": "1"}
    for kind in ("daily", "sessions", "models"):  # weekly and monthly share the daily layout
        p = llmsm("report", kind, "--db", str(db), "--breakdown", env=env)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines and "total" in p.stdout
        assert max(len(line) for line in lines) <= 80, (kind, p.stdout)


@pytest.mark.parametrize("args, message", [
    (("report", "daily", "--since", "last tuesday"), "--since 'last tuesday': not a time"),
    (("report", "daily", "--until", "2026-02-30"), "not a valid date"),
    (("report", "weekly", "--tz", "Mars/Olympus"), "unknown time zone"),
    (("report", "monthly", "--utc", "--tz", "UTC"), "either --utc or --tz"),
    (("report", "sessions", "--since", "2026-11-05", "--until", "2026-11-01"), "is not before"),
])
def test_bad_inputs_are_one_clear_line(data, args, message):
    db, _ = data
    p = llmsm(*args, "--db", str(db))
    assert p.returncode != 0
    assert "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], p.stderr


def test_missing_database(tmp_path):
    p = llmsm("report", "daily", "--db", str(tmp_path / "none.duckdb"))
    assert p.returncode != 0 and p.stderr.startswith("error: no database at") and "Traceback" not in p.stderr


def test_report_over_real_gateway_traffic(gateway):
    import anthropic
    import openai

    from tests.upstream import EXPECTED

    label = "rep-" + uuid.uuid4().hex[:8]
    a = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic", max_retries=0,
                            default_headers={"x-llmsm-session": label})
    for _ in range(2):
        a.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with a.messages.stream(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "yo"}]) as s:
        s.get_final_message()
    o = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1", max_retries=0,
                      default_headers={"x-llmsm-session": label})
    o.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    rows = gateway.wait_rows(4, f"session_id = '{label}'")

    got = ok_json("report", "sessions", "--db", str(gateway.db), "--since", "1h", "--breakdown")
    [row] = [r for r in got["rows"] if r["session_id"] == label]
    ai, ao, acr, acw, _ = EXPECTED["anthropic"]
    oi, oo, ocr, ocw, ore = EXPECTED["openai_chat"]
    assert row["requests"] == 4 and row["errors"] == 0
    assert row["input_tokens"] == 3 * ai + oi
    assert row["output_tokens"] == 3 * ao + oo
    assert row["cache_read_tokens"] == 3 * acr + ocr
    assert row["cache_write_tokens"] == 3 * acw + ocw
    assert row["reasoning_tokens"] == ore
    assert {b["provider"] for b in row["breakdown"]} == {"anthropic", "openai"}
    # the same numbers as the rows themselves
    assert row["input_tokens"] == sum(r["input_tokens"] or 0 for r in rows)

    # the daily report over the same hour contains at least this session's usage
    daily = ok_json("report", "daily", "--db", str(gateway.db), "--since", "1h", "--utc")
    assert daily["totals"]["input_tokens"] >= row["input_tokens"]
    assert sum(r["requests"] for r in daily["rows"]) == daily["totals"]["requests"]


def test_chart_under_the_table_only_on_a_terminal(data):
    """`report daily|weekly|monthly` on a terminal draws cost and tokens per period under its
    table; never in --json or a pipe; with NO_COLOR the same bars, no colour."""
    import os

    db, _ = data
    base = {**os.environ, "COLUMNS": "100"}
    base.pop("NO_COLOR", None)
    for kind in ("daily", "weekly", "monthly"):
        p = llmsm("report", kind, "--db", str(db), "--tz", TZ, env={**base, "TTY_COMPATIBLE": "1", "FORCE_COLOR": "1"})
        assert p.returncode == 0, p.stderr
        chart = p.stdout.split("times in", 1)[1]
        assert "cost" in chart and "tokens" in chart and "█" in chart and "\x1b[" in chart, p.stdout
        assert max(len(__import__("re").sub(r"\x1b\[[0-9;]*m", "", line)) for line in chart.splitlines()) <= 100
        plain = llmsm("report", kind, "--db", str(db), "--tz", TZ, env={**base, "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
        assert "█" in plain.stdout and not __import__("re").search(r"\x1b\[[0-9;]*3[0-9]m", plain.stdout), plain.stdout
        piped = llmsm("report", kind, "--db", str(db), "--tz", TZ, env=base)
        assert "█" not in piped.stdout and "max $" not in piped.stdout
        as_json = llmsm("report", kind, "--db", str(db), "--tz", TZ, "--json", env={**base, "TTY_COMPATIBLE": "1"})
        assert "█" not in as_json.stdout and json.loads(as_json.stdout)["rows"]


def test_bar_columns_scale_to_the_largest():
    from llmsm.cli.format import bar_columns

    assert bar_columns([0, 1, 2, 4], height=2) == ["   █", " ▄██"]
    assert bar_columns([0, 0], height=1) == ["  "]
    assert bar_columns([1000, 1], height=1) == ["█▁"]  # a value above zero always shows
