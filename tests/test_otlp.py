"""OTLP export: a real gateway with --otlp-endpoint, a real collector (rotel,
tests/conftest_team.py) printing what it received: one span per exchange with the GenAI
attributes; a collector that is down loses nothing."""

from __future__ import annotations

import re
import time

import anthropic

from tests.conftest import TEST_KEYS, Gateway
from tests.conftest_team import OtlpReceiver, otlp_receiver, postgres, team_db  # noqa: F401


def _ask(gw: Gateway, session: str, n: int = 1) -> None:
    c = anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic",
                            default_headers={"x-llmsm-session": session}, max_retries=0)
    for _ in range(n):
        c.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}])


def _wait(rx: OtlpReceiver, pattern: str, count: int, timeout: float = 20.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = rx.text()
        if len(re.findall(pattern, text)) >= count:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{count} x {pattern!r} not received:\n{rx.text()[-3000:]}")


def test_spans_reach_a_real_collector_with_genai_attributes(upstream, tmp_path, otlp_receiver):
    gw = Gateway(tmp_path, upstream.url, extra_args=("--otlp-endpoint", otlp_receiver.endpoint, "--developer", "erin")).start()
    try:
        _ask(gw, "otlp-s1", 2)
        rows = gw.wait_rows(2)
        text = _wait(otlp_receiver, r"llmsm\.event\.id", 2)
        for name in ("gen_ai.conversation.id", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
                     "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
                     "gen_ai.response.id", "gen_ai.response.finish_reasons", "llmsm.cost_usd", "llmsm.usage_source",
                     "llmsm.client", "llmsm.usage.uncached_input_tokens"):
            assert name in text, name
        assert "otlp-s1" in text and rows[0]["id"] in text
        prompt = rows[0]["input_tokens"] + (rows[0]["cache_read_tokens"] or 0) + (rows[0]["cache_write_tokens"] or 0)
        assert re.search(rf"gen_ai\.usage\.input_tokens: Int\({prompt}\)", text), text[-2000:]
    finally:
        gw.stop()


def test_a_collector_that_is_down_loses_nothing(upstream, tmp_path):
    rx = OtlpReceiver()  # not started yet: the gateway exports into nothing at first
    gw = Gateway(tmp_path, upstream.url, extra_args=("--otlp-endpoint", rx.endpoint)).start()
    try:
        _ask(gw, "otlp-down", 3)
        rows = gw.wait_rows(3)
        time.sleep(1.5)
        rx.start()
        text = _wait(rx, r"llmsm\.event\.id", 3, timeout=25)
        for r in rows:
            assert r["id"] in text
    finally:
        gw.stop()
        rx.stop()
