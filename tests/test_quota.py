"""Quota windows: each provider's rate-limit header shape, parsed by analytics/quota.py and by the
`quota` view (which must agree), and `llmsm quota --json` over real traffic through the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import anthropic
import openai
import pytest

from llmsm.analytics import store
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.quota import describe, parse_duration, parse_headers, quota_summary, utilization_pct, window_label
from tests.conftest import REPO, TEST_KEYS

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def _by_window(windows) -> dict:
    return {w.window: w for w in windows}


# -- value parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("6m0s", 360), ("1s", 1), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("30", 30), ("2d", 172800), ("0.5s", 0.5),
    ("", None), ("soon", None), ("6m0", None),
])
def test_parse_duration(text, seconds):
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text,pct", [("0.42", 42), ("1.0", 100), ("1.02", 102), ("0", 0), ("72", 72), ("72%", 72),
                                      ("0.5%", 0.5), ("n/a", None)])
def test_utilization_fraction_or_percent(text, pct):
    got = utilization_pct(text)
    assert got == (pytest.approx(pct) if pct is not None else None)


def test_window_labels_come_from_minutes():
    assert [window_label(m, "x") for m in (300, 10080, 60, 1440, 90, None, 0)] == ["5h", "7d", "1h", "1d", "90m", "x", "x"]


# -- each provider's shape ------------------------------------------------------------------------


def test_anthropic_subscription_unified_windows():
    h = {
        "anthropic-ratelimit-unified-status": "allowed_warning",
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-reset": "1774472400",
        "Anthropic-Ratelimit-Unified-5h-Utilization": "0.72",  # header names in any case
        "anthropic-ratelimit-unified-7d-utilization": "0.59",
        "anthropic-ratelimit-unified-7d-reset": "1774580400",
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d_opus-utilization": "1.02",  # over the limit
        "anthropic-ratelimit-unified-overage-status": "rejected",  # not a window
        "anthropic-ratelimit-unified-fallback-percentage": "0.5",
        "retry-after": "12",
    }
    w = _by_window(parse_headers(h, T0))
    assert set(w) == {"5h", "7d", "7d_opus"}
    five = w["5h"]
    assert five.source == "anthropic-unified" and five.used_pct == pytest.approx(72)
    # no own reset/status: the overall ones, because the representative claim names 5h
    assert five.resets_at == datetime.fromtimestamp(1774472400, timezone.utc) and five.status == "allowed_warning"
    assert w["7d"].used_pct == pytest.approx(59) and w["7d"].status == "allowed"
    assert w["7d"].resets_at == datetime.fromtimestamp(1774580400, timezone.utc)
    assert w["7d_opus"].used_pct == pytest.approx(102) and w["7d_opus"].resets_at is None  # the claim is 5h


def test_anthropic_unified_percent_values_and_no_claim():
    h = {"anthropic-ratelimit-unified-5h-utilization": "42", "anthropic-ratelimit-unified-reset": "1764000000000"}
    [w] = parse_headers(h, T0)
    assert w.used_pct == 42  # a third-party proxy reporting percent
    assert w.resets_at == datetime.fromtimestamp(1764000000, timezone.utc)  # milliseconds read as such


def test_anthropic_api_rate_limits():
    h = {
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-11-25T12:00:30Z",
        "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "300000",
        "anthropic-ratelimit-tokens-reset": "2026-11-25T12:01:00Z",
        "anthropic-ratelimit-input-tokens-limit": "bogus", "anthropic-ratelimit-input-tokens-remaining": "10",
    }
    w = _by_window(parse_headers(h, T0))
    assert (w["requests"].limit, w["requests"].remaining, w["requests"].used_pct) == (50, 49, pytest.approx(2))
    assert w["tokens"].used_pct == pytest.approx(25) and w["tokens"].resets_at == T0 + timedelta(minutes=1)
    assert w["input-tokens"].limit is None and w["input-tokens"].used_pct is None  # junk is left out, not guessed


def test_openai_rate_limits_reset_durations():
    h = {
        "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499", "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "27000", "x-ratelimit-reset-tokens": "6m0s",
    }
    w = _by_window(parse_headers(h, T0))
    assert w["requests"].source == "openai" and w["requests"].used_pct == pytest.approx(0.2)
    assert w["requests"].resets_at == T0 + timedelta(milliseconds=120)
    assert (w["tokens"].limit, w["tokens"].remaining) == (30000, 27000) and w["tokens"].used_pct == pytest.approx(10)
    assert w["tokens"].resets_at == T0 + timedelta(minutes=6)


def test_codex_windows_are_named_by_minutes_not_slot():
    h = {
        # primary is the WEEKLY window here: the name follows the minutes
        "x-codex-primary-used-percent": "12", "x-codex-primary-window-minutes": "10080",
        "x-codex-primary-reset-at": "1764600000",
        "x-codex-secondary-used-percent": "40.5", "x-codex-secondary-window-minutes": "300",
        "x-codex-secondary-reset-after-seconds": "3600",
        "x-codex-bengalfox-primary-used-percent": "97", "x-codex-bengalfox-primary-window-minutes": "300",
        "x-codex-credits-balance": "$5.00",
    }
    w = _by_window(parse_headers(h, T0))
    assert set(w) == {"7d", "5h", "bengalfox 5h"}
    assert w["7d"].used_pct == 12 and w["7d"].window_minutes == 10080
    assert w["7d"].resets_at == datetime.fromtimestamp(1764600000, timezone.utc)
    assert w["5h"].used_pct == 40.5 and w["5h"].resets_at == T0 + timedelta(hours=1)
    assert w["bengalfox 5h"].used_pct == 97
    # without window-minutes the slot name is all there is
    [only] = parse_headers({"x-codex-primary-used-percent": "5", "x-codex-primary-reset-at": "2026-11-25T13:00:00Z"}, T0)
    assert only.window == "primary" and only.resets_at == T0 + timedelta(hours=1)


def test_nothing_to_parse():
    assert parse_headers(None) == [] and parse_headers({"retry-after": "60"}) == []


def test_describe_text():
    now = datetime.now(timezone.utc)
    resets = now + timedelta(minutes=30)
    text = describe({"window": "5h", "used_pct": 72.4, "resets_at": resets}, now)
    assert text == f"5h window 72% used, resets {resets.astimezone().strftime('%H:%M')}"
    text = describe({"window": "tokens", "used_pct": 10, "limit": 30000, "remaining": 27000}, now)
    assert text == "tokens window 10% used, 27,000 of 30,000 left"


# -- the view agrees with the parser ---------------------------------------------------------------

SHAPES = {
    "acct-unified": {
        "anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-representative-claim": "seven_day",
        "anthropic-ratelimit-unified-reset": "1774580400", "anthropic-ratelimit-unified-5h-utilization": "0.2",
        "anthropic-ratelimit-unified-5h-reset": "1774472400", "anthropic-ratelimit-unified-7d-utilization": "59%",
        "anthropic-ratelimit-unified-7d_opus-utilization": "1.02",
    },
    "acct-api": {
        "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "399000",
        "anthropic-ratelimit-tokens-reset": "2026-11-25T12:01:00Z", "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "2026-11-25T12:00:07Z",
    },
    "acct-openai": {
        "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499", "x-ratelimit-reset-requests": "1h2m3.5s",
        "x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "27000", "x-ratelimit-reset-tokens": "20ms",
    },
    "acct-codex": {
        "x-codex-primary-used-percent": "61", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": "1764003600",
        "x-codex-secondary-used-percent": "9", "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-after-seconds": "86400", "x-codex-bengalfox-secondary-used-percent": "3",
    },
}


def _norm(d: dict) -> tuple:
    pct = round(d["used_pct"], 6) if d["used_pct"] is not None else None
    return (d["window"], d["source"], pct, d["limit"], d["remaining"], d["resets_at"], d["status"])


def test_quota_view_agrees_with_parser(tmp_path):
    db = tmp_path / "q.duckdb"
    events = []
    for account, headers in SHAPES.items():
        provider = "anthropic" if "anthropic" in next(iter(headers)) else "openai"
        # an older response with other numbers, then the latest: the view keeps the latest
        old = {k: ("0.99" if "utilization" in k else v) for k, v in headers.items()}
        events.append(ExchangeEvent(account=account, provider=provider, api="messages", started_at=T0 - timedelta(hours=1), ratelimit=old))
        events.append(ExchangeEvent(account=account, provider=provider, api="messages", started_at=T0, ratelimit=headers))
        # a newer answer carrying only retry-after (e.g. llmsm's own budget 429) changes nothing
        events.append(ExchangeEvent(account=account, provider=provider, api="messages", started_at=T0 + timedelta(minutes=1),
                                    ratelimit={"retry-after": "60"}))
    store.insert_events(db, events)
    con = store.open_for_query(db)
    try:
        rows = quota_summary(con, now=T0)
    finally:
        con.close()
    got: dict[str, set] = {}
    for r in rows:
        assert r["observed_at"] == T0
        got.setdefault(r["account"], set()).add(_norm(r))
    expected = {
        account: {_norm(dict(w.to_dict(), used_pct=w.used_pct)) for w in parse_headers(headers, T0)}
        for account, headers in SHAPES.items()
    }
    assert got == expected
    unified = {r["window"]: r for r in rows if r["account"] == "acct-unified"}
    # the claim names 7d: the overall reset/status go to 7d, not to 5h (which has its own reset)
    assert unified["7d"]["resets_at"] == datetime.fromtimestamp(1774580400, timezone.utc) and unified["7d"]["status"] == "allowed"
    assert unified["5h"]["status"] is None and unified["7d_opus"]["resets_at"] is None
    assert unified["7d"]["used_pct"] == 59 and unified["7d_opus"]["used_pct"] == 102
    codex = {r["window"]: r for r in rows if r["account"] == "acct-codex"}
    assert set(codex) == {"5h", "7d", "bengalfox-secondary"}  # no minutes: the slot is all there is
    assert codex["7d"]["resets_at"] == T0 + timedelta(days=1)


# -- real traffic through the gateway ---------------------------------------------------------------


def test_quota_over_gateway_traffic(gateway):
    label = "quota-" + uuid.uuid4().hex[:8]
    a = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gateway.url}/anthropic",
                            default_headers={"x-llmsm-session": label}, max_retries=0)
    a.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    o = openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gateway.url}/openai/v1",
                      default_headers={"x-llmsm-session": label}, max_retries=0)
    o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    o.responses.create(model="gpt-5", input="hi")  # Codex's API: the fake upstream adds x-codex-* headers
    rows = gateway.wait_rows(3, f"session_id = '{label}'")
    accounts = {r["provider"]: r["account"] for r in rows}
    assert accounts["anthropic"] and TEST_KEYS["anthropic"] not in json.dumps(accounts)  # a fingerprint, never the key
    assert all(r["ratelimit"] for r in rows)

    p = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "quota", "--json", "--db", str(gateway.db)],
                       capture_output=True, text=True, env=gateway.env, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    ours = {(r["account"], r["window"]): r for r in data if r["account"] in accounts.values()}
    five = ours[(accounts["anthropic"], "5h")]
    assert five["source"] == "anthropic-unified" and five["used_pct"] == 42
    assert datetime.fromisoformat(five["resets_at"]) == datetime.fromtimestamp(1764000000, timezone.utc)  # unified-reset
    assert five["text"].startswith("5h window 42% used")
    tokens = ours[(accounts["anthropic"], "tokens")]
    assert (tokens["limit"], tokens["remaining"]) == (400000, 399000) and tokens["used_pct"] == 0.25
    requests = ours[(accounts["openai"], "requests")]
    assert requests["source"] == "openai" and (requests["limit"], requests["remaining"]) == (500, 499)
    codex = ours[(accounts["openai"], "5h")]
    assert codex["source"] == "codex" and codex["used_pct"] == 12 and codex["window_minutes"] == 300

    table = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "quota", "--db", str(gateway.db)],
                           capture_output=True, text=True, env=gateway.env, cwd=REPO, timeout=60)
    assert table.returncode == 0 and "5h" in table.stdout and "42%" in table.stdout
