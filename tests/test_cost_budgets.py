"""Cost per request and budgets, through the real gateway.

- Costs for known models equal genai-prices' own `calc_price` (computed here, independently, from
  the provider-native usage the upstream sent), cache writes (5 min and 1 h) and reads included,
  long-context tiers too; an unknown model gets NULL and `llmsm cost` lists it; an override
  file prices a private model.
- Budgets: the official SDKs get the provider-shaped 429 naming the budget and the command,
  while another session goes on; `llmsm budget set` applies within 3 s, `budget rm` lifts it;
  a running stream is never cut; ten parallel sessions racing one day budget overshoot by less
  than the requests in flight (the bound docs/cost.md states).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import genai_prices
import httpx
import openai
import pytest

from tests.conftest import TEST_KEYS, Gateway
from tests.upstream import ANTHROPIC_USAGE, TEXT

ANTHROPIC_TOTAL = sum(ANTHROPIC_USAGE.values())  # 1163: every token kind counts toward a budget


def _label(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _anthropic(gw: Gateway, session: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic",
                               default_headers={"x-llmsm-session": session}, max_retries=2)


def _openai(gw: Gateway, session: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=TEST_KEYS["openai"], base_url=f"{gw.url}/openai/v1",
                         default_headers={"x-llmsm-session": session}, max_retries=2)


def _ask(client: anthropic.Anthropic, **kw):
    return client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}], **kw)


def _ok_rows(gw: Gateway, session: str) -> int:
    """Requests of a session that spent tokens, once the writer has stored them all (settled)."""
    last, stable_since = -1, time.monotonic()
    while True:
        n = gw.query(f"SELECT count(*) AS n FROM requests WHERE session_id = '{session}' AND total_tokens > 0")[0]["n"]
        if n != last:
            last, stable_since = n, time.monotonic()
        elif time.monotonic() - stable_since > 0.8:  # the test gateway's writer flushes every 0.05 s
            return n
        time.sleep(0.1)


def _wait_budget_applied(fn, expect_error: type[Exception] | None, timeout: float = 3.0) -> tuple[float, object]:
    """Call fn until it raises expect_error (or, with None, until it stops raising); the time taken."""
    t0 = time.monotonic()
    while True:
        try:
            result = fn()
            if expect_error is None:
                return time.monotonic() - t0, result
        except Exception as exc:
            if expect_error is not None and isinstance(exc, expect_error):
                return time.monotonic() - t0, exc
            if expect_error is not None:
                raise
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"budget change not applied within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bgw(upstream, tmp_path_factory):
    """A gateway of our own: budgets change its state."""
    gw = Gateway(tmp_path_factory.mktemp("budgets"), upstream.url).start()
    yield gw
    gw.stop()


@pytest.fixture
def clean_budgets(bgw):
    yield bgw
    for b in json.loads(bgw.cli("budget", "list", "--json").stdout):
        bgw.cli("budget", "rm", b["id"])


# ==============================================================================================
# Cost through the gateway
# ==============================================================================================


class UsageUpstream:
    """Answers each provider's generation call with the usage given in the `x-test-usage`
    header (provider-native JSON), so the test knows exactly what the provider reported."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw or b"{}")
                usage = json.loads(self.headers["x-test-usage"])
                path = self.path.split("?", 1)[0]
                if path.endswith("/messages"):
                    out = {"id": "msg_u", "type": "message", "role": "assistant", "model": body["model"],
                           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": usage}
                elif path.endswith("/chat/completions"):
                    out = {"id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                           "usage": usage}
                elif path.endswith("/responses"):
                    out = {"id": "r", "object": "response", "created_at": 1, "status": "completed", "model": body["model"],
                           "output": [], "usage": usage}
                else:
                    model = path.rsplit("/models/", 1)[-1].split(":", 1)[0]
                    out = {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                           "usageMetadata": usage, "modelVersion": model}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# (route path, model, genai-prices provider id, provider-native usage, genai-prices usage:
#  input = the WHOLE prompt incl. cache read and write, output, cache read, cache write, 1h part)
COST_CASES = [
    ("anthropic/v1/messages", "claude-sonnet-4-5-20250929", "anthropic",
     {"input_tokens": 1_000, "cache_creation_input_tokens": 8_000, "cache_read_input_tokens": 50_000, "output_tokens": 700,
      "cache_creation": {"ephemeral_5m_input_tokens": 5_000, "ephemeral_1h_input_tokens": 3_000}},
     (59_000, 700, 50_000, 8_000, 3_000)),
    # prompt above 200k: the long-context tier prices every token of the request
    ("anthropic/v1/messages", "claude-sonnet-4-5", "anthropic",
     {"input_tokens": 20_000, "cache_creation_input_tokens": 30_000, "cache_read_input_tokens": 170_000, "output_tokens": 4_000,
      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 30_000}},
     (220_000, 4_000, 170_000, 30_000, 30_000)),
    ("anthropic/v1/messages", "claude-opus-4-1-20250805", "anthropic",
     {"input_tokens": 12, "cache_creation_input_tokens": 1_500, "cache_read_input_tokens": 90_000, "output_tokens": 350},
     (91_512, 350, 90_000, 1_500, 0)),
    ("openai/v1/chat/completions", "gpt-5", "openai",
     {"prompt_tokens": 64_000, "completion_tokens": 2_000, "total_tokens": 66_000,
      "prompt_tokens_details": {"cached_tokens": 60_000}, "completion_tokens_details": {"reasoning_tokens": 500}},
     (64_000, 2_000, 60_000, 0, 0)),
    ("openai/v1/responses", "gpt-5-mini", "openai",
     {"input_tokens": 9_000, "input_tokens_details": {"cached_tokens": 4_000}, "output_tokens": 800,
      "output_tokens_details": {"reasoning_tokens": 100}, "total_tokens": 9_800},
     (9_000, 800, 4_000, 0, 0)),
    # Gemini: output = candidates + thoughts; above 200k prompt tokens the higher tier
    ("gemini/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", "google",
     {"promptTokenCount": 250_000, "cachedContentTokenCount": 100_000, "candidatesTokenCount": 1_000,
      "thoughtsTokenCount": 500, "totalTokenCount": 251_500},
     (250_000, 1_500, 100_000, 0, 0)),
]
AUTH = {"anthropic": {"x-api-key": TEST_KEYS["anthropic"], "anthropic-version": "2023-06-01"},
        "openai": {"authorization": f"Bearer {TEST_KEYS['openai']}"},
        "gemini": {"x-goog-api-key": TEST_KEYS["gemini"]}}


def _calc(model: str, provider_id: str, usage: tuple, at: datetime) -> float:
    inp, out, cr, cw, cw1h = usage
    u = genai_prices.Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw,
                           cache_write_1h_tokens=cw1h)
    return float(genai_prices.calc_price(u, model, provider_id=provider_id, genai_request_timestamp=at).total_price)


@pytest.fixture(scope="module")
def priced(tmp_path_factory):
    """A gateway in front of UsageUpstream, with a prices.toml override for a private model."""
    tmp = tmp_path_factory.mktemp("cost")
    up = UsageUpstream()
    gw = Gateway(tmp, up.url)
    prices = Path(gw.env["XDG_CONFIG_HOME"]) / "llmsm" / "prices.toml"
    gw.env["LLMSM_PRICES"] = str(prices)
    prices.parent.mkdir(parents=True, exist_ok=True)
    prices.write_text('[models."acme-local-*"]\ninput_mtok = 1.0\noutput_mtok = 2.0\ncache_read_mtok = 0.1\n')
    gw.start()
    session = _label("cost")
    with httpx.Client(timeout=10) as http:
        def send(path: str, model: str, usage: dict) -> None:
            provider = path.split("/", 1)[0]
            r = http.post(f"{gw.url}/{path}", json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                          headers={**AUTH[provider], "x-test-usage": json.dumps(usage), "x-llmsm-session": session})
            assert r.status_code == 200, r.text

        for path, model, _pid, usage, _ in COST_CASES:
            send(path, model, usage)
        send("openai/v1/chat/completions", "acme-coder-9",  # nobody knows this model
             {"prompt_tokens": 5_000, "completion_tokens": 100, "total_tokens": 5_100})
        send("openai/v1/chat/completions", "acme-local-7b",  # priced by the override file
             {"prompt_tokens": 3_000, "completion_tokens": 1_000, "total_tokens": 4_000,
              "prompt_tokens_details": {"cached_tokens": 1_000}})
    rows = gw.wait_rows(len(COST_CASES) + 2, f"session_id = '{session}'")
    yield gw, {r["model"]: r for r in rows}
    gw.stop()
    up.stop()


@pytest.mark.parametrize("path,model,pid,native,usage", COST_CASES, ids=[c[1] for c in COST_CASES])
def test_cost_equals_genai_prices(priced, path, model, pid, native, usage):
    gw, rows = priced
    row = rows[model]
    inp, out, cr, cw, cw1h = usage
    # the stored tokens are llmsm's (input = the uncached part) ...
    assert (row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"], row["output_tokens"],
            row["cache_read_tokens"], row["cache_write_tokens"]) == (inp, out, cr, cw)
    assert (row["cache_write_1h_tokens"] or 0) == cw1h
    # ... and the cost is genai-prices' own answer for the price in force at the request's time
    expected = _calc(model, pid, usage, row["started_at"])
    assert expected > 0
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cache_writes_and_tiers_change_the_price(priced):
    _, rows = priced
    sonnet = rows["claude-sonnet-4-5-20250929"]
    at = sonnet["started_at"]
    # 1h writes cost more than 5 min writes, which cost more than reads: the split matters
    all_5m = _calc("claude-sonnet-4-5-20250929", "anthropic", (59_000, 700, 50_000, 8_000, 0), at)
    assert sonnet["cost_usd"] > all_5m
    long = rows["claude-sonnet-4-5"]
    short_rate = _calc("claude-sonnet-4-5", "anthropic", (20_000 + 30_000, 4_000, 0, 30_000, 30_000), at)
    assert long["cost_usd"] > short_rate  # > 200k prompt: the higher tier


def test_unknown_model_is_null_and_listed(priced):
    gw, rows = priced
    assert rows["acme-coder-9"]["cost_usd"] is None
    assert rows["acme-coder-9"]["total_tokens"] == 5_100
    # override: 2000 uncached at $1, 1000 cached at $0.1, 1000 output at $2 per MTok
    assert rows["acme-local-7b"]["cost_usd"] == pytest.approx((2_000 * 1.0 + 1_000 * 0.1 + 1_000 * 2.0) / 1e6)

    data = json.loads(gw.cli("cost", "--by", "model", "--json").stdout)
    by_model = {r["model"]: r for r in data["rows"]}
    assert by_model["acme-coder-9"]["cost_usd"] is None  # never a silent zero
    assert by_model["acme-coder-9"]["unpriced_requests"] == 1
    assert [(u["model"], u["requests"], u["total_tokens"]) for u in data["unpriced_models"]] == [("acme-coder-9", 1, 5_100)]
    priced_sum = sum(r["cost_usd"] for r in rows.values() if r["cost_usd"] is not None)
    assert data["total"]["cost_usd"] == pytest.approx(priced_sum)
    assert data["total"]["unpriced_requests"] == 1

    table = gw.cli("cost")
    assert "acme-coder-9" in table.stdout and "n/a" in table.stdout
    assert "warning" in table.stdout and "no price" in table.stdout


def test_cost_table_keeps_every_figure_on_an_80_column_screen(priced):
    """Names give way on a narrow screen (cut with an ellipsis), never the tokens or the cost."""
    from llmsm.cli.format import human_tokens
    from llmsm.cli.cost import usd

    gw, _ = priced
    data = json.loads(gw.cli("cost", "--by", "model", "--json").stdout)
    p = gw.cli("cost", "--by", "model", env={"COLUMNS": "80"})
    lines = p.stdout.splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if line.startswith("total")) + 1]
    assert p.returncode == 0 and max(len(line) for line in table) <= 80
    for r in data["rows"]:
        cost = "n/a" if r["cost_usd"] is None else usd(r["cost_usd"]) + ("+" if r["unpriced_requests"] else "")
        assert any(line.split()[-2:] == [human_tokens(r["total_tokens"]), cost] for line in table), (r, p.stdout)


@pytest.mark.parametrize("by", ["session", "model", "client", "day"])
def test_cost_groupings_add_up(priced, by):
    gw, rows = priced
    data = json.loads(gw.cli("cost", "--by", by, "--since", "1d", "--json").stdout)
    assert data["by"] == by and data["rows"]
    assert sum(r["requests"] for r in data["rows"]) == data["total"]["requests"] == len(rows)
    assert sum(r["total_tokens"] for r in data["rows"]) == data["total"]["total_tokens"]
    assert sum(r["cost_usd"] or 0 for r in data["rows"]) == pytest.approx(data["total"]["cost_usd"])
    if by == "day":
        assert data["rows"][0]["day"] == datetime.now().astimezone().date().isoformat()
    empty = json.loads(gw.cli("cost", "--by", by, "--until", "2000-01-01", "--json").stdout)
    assert empty["rows"] == [] and empty["total"]["requests"] == 0


# ==============================================================================================
# Budgets through the gateway
# ==============================================================================================


def test_sdks_get_the_provider_shaped_429_and_others_go_on(clean_budgets):
    gw = clean_budgets
    a_sess, b_sess, o_sess = _label("anth"), _label("other"), _label("oai")
    a, b = _anthropic(gw, a_sess), _anthropic(gw, b_sess)
    _ask(a)
    _ask(b)
    gw.wait_rows(2, f"session_id IN ('{a_sess}', '{b_sess}')")

    # Anthropic: a token budget already used up -> the next request of that session is refused
    out = gw.cli("budget", "set", "--session", a_sess, "--tokens", "1000").stdout
    assert "exceeded" in out
    took, err = _wait_budget_applied(lambda: _ask(a), anthropic.RateLimitError)
    assert took < 3.0
    assert err.status_code == 429
    body = err.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    msg = body["error"]["message"]
    assert f"session {a_sess}" in msg and re.search(r"has used [0-9,]+ of its 1,000 tokens", msg)
    assert f"llmsm budget set --session {a_sess} --tokens 2000" in msg
    assert err.response.headers["x-llmsm-budget"] == "exceeded"
    assert err.response.headers["x-should-retry"] == "false"
    assert int(err.response.headers["retry-after"]) >= 30
    # the SDK did not retry (max_retries=2): one refused request reached the gateway per call
    t0 = time.monotonic()
    with pytest.raises(anthropic.RateLimitError):
        _ask(a)
    assert time.monotonic() - t0 < 1.0
    # streaming requests are refused the same way, before any stream starts
    with pytest.raises(anthropic.RateLimitError):
        with a.messages.stream(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
    # another session goes on
    assert _ask(b).content[0].text == TEXT

    # OpenAI: a USD budget on a label
    o = _openai(gw, o_sess)
    o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    gw.wait_rows(1, f"session_id = '{o_sess}'")
    gw.cli("budget", "set", "--label", o_sess, "--usd", "0.0001", "--warn-at", "50%")
    took, err = _wait_budget_applied(
        lambda: o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]), openai.RateLimitError)
    assert took < 3.0
    e = err.body if "error" not in (err.body or {}) else err.body["error"]
    assert e["type"] == "insufficient_quota" and e["code"] == "llmsm_budget_exceeded"
    assert f"label '{o_sess}'" in e["message"] and f"llmsm budget set --label {o_sess} --usd 0.0002" in e["message"]
    # Responses API (Codex's) too
    with pytest.raises(openai.RateLimitError):
        o.responses.create(model="gpt-5", input="hi")
    # Codex CLI itself gets a 402, which it shows at once (it retries a 429 for minutes first)
    r = httpx.post(f"{gw.url}/openai/v1/responses", json={"model": "gpt-5", "input": "hi", "stream": True},
                   headers={**AUTH["openai"], "x-llmsm-session": o_sess, "originator": "codex_exec",
                            "user-agent": "codex_exec/0.169.0 (Linux 6.8; x86_64) xterm"})
    assert r.status_code == 402 and r.json()["error"]["code"] == "llmsm_budget_exceeded"
    assert f"label '{o_sess}'" in r.json()["error"]["message"]
    # Gemini's shape, straight over HTTP
    r = httpx.post(f"{gw.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                   headers={"x-goog-api-key": TEST_KEYS["gemini"], "x-llmsm-session": o_sess},
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 429
    assert r.json()["error"]["status"] == "RESOURCE_EXHAUSTED" and r.json()["error"]["code"] == 429
    assert f"label '{o_sess}'" in r.json()["error"]["message"]
    # count_tokens spends nothing: never refused
    assert a.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]).input_tokens == 1234

    # the refusals are recorded (status 429, no usage) and the dashboard sees the states
    refused = gw.wait_rows(3, f"session_id = '{a_sess}' AND status_code = 429")
    assert all(row["total_tokens"] == 0 and row["outcome"] == "http_error" for row in refused)
    assert all(row["error_message"].startswith("llmsm budget exceeded:") for row in refused)
    # ...and the session's health says what stopped it, and how to go on
    [health] = json.loads(gw.cli("health", a_sess, "--json", check=False).stdout)
    assert health["status"] == "critical" and "llmsm budget" in json.dumps(health["reasons"])
    states = {r["target"]: r for r in json.loads(gw.cli("budget", "list", "--json").stdout)}
    assert states[a_sess]["state"] == "exceeded"
    assert states[a_sess]["used_tokens"] == _ok_rows(gw, a_sess) * ANTHROPIC_TOTAL
    assert states[o_sess]["state"] == "exceeded" and states[o_sess]["pct"] > 100


def test_budget_set_applies_within_3s_and_rm_lifts_it(clean_budgets):
    gw = clean_budgets
    sess = _label("live")
    a = _anthropic(gw, sess)
    for _ in range(2):
        _ask(a)
    gw.wait_rows(2, f"session_id = '{sess}'")
    # 2326 tokens used: a 2000-token budget on the label is over, set while the gateway runs
    gw.cli("budget", "set", "--label", sess, "--tokens", "2000")
    took, _ = _wait_budget_applied(lambda: _ask(a), anthropic.RateLimitError)
    assert took < 3.0
    used = _ok_rows(gw, sess) * ANTHROPIC_TOTAL  # 2326, or more if one passed before the reload
    [b] = [b for b in json.loads(gw.cli("budget", "list", "--json").stdout) if b["target"] == sess]
    assert b["state"] == "exceeded" and b["used_tokens"] == used and b["pct"] == pytest.approx(100 * used / 2000)

    # raising it (what the message says) lets the session go on: room for one more request
    limit = used + 2 * ANTHROPIC_TOTAL - 100
    gw.cli("budget", "set", "--label", sess, "--tokens", str(limit), "--warn-at", "60%")
    took, _ = _wait_budget_applied(lambda: _ask(a), None)
    assert took < 3.0
    # past 60%: marked 'warn' for the dashboard (budget_status), and the gateway says so too
    deadline = time.monotonic() + 3
    while True:
        [b] = [b for b in json.loads(gw.cli("budget", "list", "--json").stdout) if b["target"] == sess]
        if b["used_tokens"] == used + ANTHROPIC_TOTAL or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b["state"] == "warn" and b["used_tokens"] == used + ANTHROPIC_TOTAL
    raw = httpx.post(f"{gw.url}/anthropic/v1/messages", headers={**AUTH["anthropic"], "x-llmsm-session": sess},
                     json={"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 200 and raw.headers["x-llmsm-budget"].startswith("warn")
    # now over again: refused at once (in-memory counters), and `budget rm` lifts it within 3 s
    with pytest.raises(anthropic.RateLimitError):
        _ask(a)
    gw.cli("budget", "rm", b["id"])
    took, _ = _wait_budget_applied(lambda: _ask(a), None)
    assert took < 3.0


def test_the_guard_skips_reading_its_own_writes_and_reads_anybody_else_s(tmp_path):
    """The reload thread reads the database only when somebody else changed it (or every
    `own_writes_reread` s): the gateway's own commits, every second while it is busy, hold
    events the book has counted already. Seen here through an event stored by this process
    without the book being told of it, which only a real read can count."""
    import subprocess
    import sys

    from llmsm.addons.budget_guard import BudgetGuard
    from llmsm.addons.recorder import Recorder
    from llmsm.addons.writer import EventWriter
    from llmsm.analytics import store
    from llmsm.analytics.events import ExchangeEvent

    db = tmp_path / "guard.duckdb"
    label = _label("own")

    def stored(tokens: int) -> None:  # as the gateway's writer stores (the process's one DuckDB instance)
        store.insert_events(db, [ExchangeEvent(api="messages", provider="anthropic", label=label,
                                               input_tokens=tokens, output_tokens=0, usage_source="reported")])

    def used() -> tuple[int, int]:
        [v] = guard.book.snapshot()
        return v.used_tokens, v.budget.max_tokens

    stored(100)
    other = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "budget", "set", "--label", label,
                            "--tokens", "1000", "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    recorder = Recorder()
    recorder.writer = EventWriter(db)  # (not started: only its database is asked for)
    guard = BudgetGuard(recorder)
    assert guard.reload() and used() == (100, 1000)
    reads = guard.book.installs
    stored(20)
    assert guard.reload() and used() == (100, 1000) and guard.book.installs == reads  # ours: not read
    guard.own_writes_reread = 0.0  # ... but now and then read all the same
    assert guard.reload() and used() == (120, 1000) and guard.book.installs == reads + 1
    guard.own_writes_reread = 5.0
    stored(3)
    # another process's write is read at once, and with it what we stored since
    other = subprocess.run([sys.executable, "-m", "llmsm.cli.main", "budget", "set", "--label", label,
                            "--tokens", "2000", "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert guard.reload() and used() == (123, 2000) and guard.book.installs == reads + 2


def test_a_running_stream_is_never_cut(clean_budgets):
    gw = clean_budgets
    sess = _label("stream")
    a = _anthropic(gw, sess)
    gw.cli("budget", "set", "--label", sess, "--tokens", "1000")
    time.sleep(1.2)  # the budget is loaded (nothing used yet: requests pass)
    done: dict = {}

    def slow_stream():
        with a.messages.stream(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-fake": "slow=0.15"}) as s:
            done["text"] = "".join(s.text_stream)

    t = threading.Thread(target=slow_stream)
    t.start()
    time.sleep(0.3)
    _ask(a)  # finishes first and uses the budget up while the stream still runs
    took, _ = _wait_budget_applied(lambda: _ask(a), anthropic.RateLimitError, timeout=1.0)
    assert t.is_alive(), "the stream should still be running when the budget is used up"
    t.join(10)
    assert done["text"] == TEXT  # complete: not cut


def test_ten_sessions_racing_one_day_budget(upstream, tmp_path):
    """Overshoot bound: a request is admitted while used < limit, and its usage is known only
    when it ends. So at most the requests in flight when the limit is crossed (here <= 10, one
    per thread, including the one that crossed it) add beyond the limit:
        limit <= used < limit + 10 * (tokens of one request)."""
    gw = Gateway(tmp_path, upstream.url).start()
    try:
        per_request = ANTHROPIC_TOTAL
        limit = 20 * per_request + 500
        gw.cli("budget", "set", "--day", "--tokens", str(limit))
        time.sleep(1.2)
        results: dict[str, list[int]] = {}
        barrier = threading.Barrier(10)

        def session(i: int) -> None:
            sess = f"race-{i}"
            client = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic",
                                         default_headers={"x-llmsm-session": sess, "x-fake": "slow=0.01"}, max_retries=0)
            codes = results.setdefault(sess, [])
            barrier.wait()
            for _ in range(40):
                try:
                    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=8,
                                                messages=[{"role": "user", "content": "hi"}]) as s:
                        s.get_final_message()
                    codes.append(200)
                except anthropic.RateLimitError:
                    codes.append(429)
                    return

        threads = [threading.Thread(target=session, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ok = sum(c.count(200) for c in results.values())
        assert all(c and c[-1] == 429 for c in results.values()), results  # every session was stopped
        gw.wait_rows(ok, "status_code = 200")
        used = gw.query("SELECT sum(total_tokens) AS t FROM requests WHERE status_code = 200")[0]["t"]
        assert used == ok * per_request
        assert limit <= used < limit + 10 * per_request, (used, limit)
        [status] = json.loads(gw.cli("budget", "list", "--json").stdout)
        assert status["used_tokens"] == used and status["state"] == "exceeded"

        # `budget rm` lifts it: a new session goes on within 3 s
        gw.cli("budget", "rm", status["id"])
        after = _anthropic(gw, "race-after")
        took, _ = _wait_budget_applied(lambda: _ask(after), None)
        assert took < 3.0
    finally:
        gw.stop()


def test_budget_rm_by_the_scope_it_was_set_with(clean_budgets):
    gw = clean_budgets
    label = json.loads(gw.cli("budget", "set", "--label", "refactor", "--usd", "5", "--json").stdout)
    day = json.loads(gw.cli("budget", "set", "--day", "--tokens", "1M", "--json").stdout)
    sid = "rm-scope-" + uuid.uuid4().hex
    session = json.loads(gw.cli("budget", "set", "--session", sid, "--tokens", "10k", "--json").stdout)
    p = gw.cli("budget", "rm", "--label", "nope", check=False)
    assert p.returncode == 1 and p.stderr.strip() == "error: no budget for --label nope (see `llmsm budget list`)"
    p = gw.cli("budget", "rm", label["id"], "--label", "refactor", check=False)
    assert p.returncode == 1 and "not both" in p.stderr
    p = gw.cli("budget", "rm", check=False)
    assert p.returncode == 1 and "--label NAME" in p.stderr
    p = gw.cli("budget", "rm", "--label", "refactor", "--day", check=False)
    assert p.returncode == 1 and "exactly one" in p.stderr
    assert label["id"] in gw.cli("budget", "rm", "--label", "refactor").stdout
    assert session["id"] in gw.cli("budget", "rm", "--session", sid[:14]).stdout  # a unique prefix
    assert [b["id"] for b in json.loads(gw.cli("budget", "list", "--json").stdout)] == [day["id"]]
    assert day["id"] in gw.cli("budget", "rm", "--day").stdout
    assert json.loads(gw.cli("budget", "list", "--json").stdout) == []


def test_budget_cli_errors(bgw):
    gw = bgw
    p = gw.cli("budget", "set", "--label", "x", "--day", "--usd", "1", check=False)
    assert p.returncode != 0 and "exactly one" in p.stderr
    p = gw.cli("budget", "set", "--label", "x", check=False)
    assert p.returncode != 0 and "--tokens" in p.stderr
    p = gw.cli("budget", "set", "--label", "x", "--usd", "-3", check=False)
    assert p.returncode != 0 and "--usd" in p.stderr
    p = gw.cli("budget", "rm", "nope", check=False)
    assert p.returncode != 0 and "no budget" in p.stderr
