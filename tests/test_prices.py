"""analytics/prices.py: costs equal genai-prices' own calc_price, overrides win, windows."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot

from llmsm.analytics import prices
from llmsm.analytics.events import ExchangeEvent
from llmsm.analytics.prices import PriceOverrides, context_window, cost_for_event, cost_usd, known_model

UTC = timezone.utc
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_user_overrides(tmp_path, monkeypatch):
    """Never read the developer's real ~/.config/llmsm/prices.toml."""
    monkeypatch.setenv("LLMSM_PRICES", str(tmp_path / "absent-prices.toml"))
    prices.set_default_overrides(None)
    yield
    prices.set_default_overrides(None)


def expected(model, provider_id, inp, out, cr, cw, cw1h, at=AT):
    """genai-prices' own answer; its input_tokens is the WHOLE prompt, cache reads and writes included."""
    usage = genai_prices.Usage(
        input_tokens=inp + cr + cw,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        cache_write_1h_tokens=cw1h,
    )
    return float(genai_prices.calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=at).total_price)


CASES = [
    # llmsm provider, model as sent, genai provider id, uncached, output, cache read, cache write, 1h part
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", 1_000, 700, 50_000, 8_000, 0),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", 1_000, 700, 50_000, 8_000, 3_000),
    ("anthropic", "claude-sonnet-4-5", "anthropic", 20_000, 4_000, 170_000, 30_000, 30_000),  # > 200k tier
    ("anthropic", "claude-opus-4-1-20250805", "anthropic", 12, 350, 90_000, 1_500, 0),
    ("anthropic", "claude-haiku-4-5-20251001", "anthropic", 3_000, 100, 0, 0, 0),
    ("openai", "gpt-5", "openai", 4_000, 2_000, 60_000, 0, 0),
    ("openai", "gpt-5.4", "openai", 10_000, 2_000, 280_000, 0, 0),  # > 272k tier
    ("openai", "gpt-4.1-2025-04-14", "openai", 4_000, 2_000, 6_000, 0, 0),
    ("gemini", "gemini-2.5-pro", "google", 150_000, 3_000, 80_000, 0, 0),  # > 200k tier
    ("gemini", "gemini-2.5-flash", "google", 1_500, 300, 0, 0, 0),
]


@pytest.mark.parametrize("provider,model,pid,inp,out,cr,cw,cw1h", CASES)
def test_cost_equals_calc_price(provider, model, pid, inp, out, cr, cw, cw1h):
    got = cost_usd(
        provider=provider, model=model, input_tokens=inp, output_tokens=out,
        cache_read_tokens=cr, cache_write_tokens=cw, cache_write_1h_tokens=cw1h, at=AT,
    )
    assert got == expected(model, pid, inp, out, cr, cw, cw1h)
    assert got > 0


def test_cost_by_hand_cache_semantics():
    # claude-sonnet-4-5: $3 input, $15 output, $0.30 cache read, $3.75 5m write, $6 1h write per MTok
    got = cost_usd(
        provider="anthropic", model="claude-sonnet-4-5", input_tokens=1_000, output_tokens=2_000,
        cache_read_tokens=10_000, cache_write_tokens=4_000, cache_write_1h_tokens=1_000, at=AT,
    )
    by_hand = (1_000 * 3 + 2_000 * 15 + 10_000 * 0.30 + 3_000 * 3.75 + 1_000 * 6) / 1e6
    assert got == pytest.approx(by_hand, rel=1e-12)


def test_price_history_follows_at():
    # claude-opus-4-6 had >200k tiers until 2026-03-13, a flat price after (genai-prices data).
    kw = dict(provider="anthropic", model="claude-opus-4-6", input_tokens=250_000, output_tokens=1_000,
              cache_read_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=0)
    before = datetime(2026, 3, 1, tzinfo=UTC)
    after = datetime(2026, 3, 20, tzinfo=UTC)
    c_before = cost_usd(**kw, at=before)
    c_after = cost_usd(**kw, at=after)
    assert c_before == expected("claude-opus-4-6", "anthropic", 250_000, 1_000, 0, 0, 0, at=before)
    assert c_after == expected("claude-opus-4-6", "anthropic", 250_000, 1_000, 0, 0, 0, at=after)
    assert c_before > c_after
    # naive datetimes are UTC
    assert cost_usd(**kw, at=before.replace(tzinfo=None)) == c_before


def test_every_bundled_model_matches_calc_price():
    """The fast path reproduces calc_price for every model of the three providers llmsm serves."""
    warnings.simplefilter("ignore")
    snap = get_snapshot()
    usages = [(1_000, 500, 40_000, 3_000, 1_000), (240_000, 9_000, 30_000, 40_000, 40_000)]
    dates = [datetime(2025, 6, 1, tzinfo=UTC), AT]
    checked = 0
    for provider in snap.providers:
        if provider.id not in ("anthropic", "openai", "google"):
            continue
        for model in provider.models:
            for at in dates:
                for inp, out, cr, cw, cw1h in usages:
                    usage = genai_prices.Usage(
                        input_tokens=inp + cr + cw, output_tokens=out, cache_read_tokens=cr,
                        cache_write_tokens=cw, cache_write_1h_tokens=cw1h,
                    )
                    want = float(model.calc_price(usage, provider, genai_request_timestamp=at).total_price)
                    entry = (provider, model, None)
                    compiled = prices._prices_for(entry, at)
                    if compiled[5]:
                        got = float(prices._fast_cost(compiled, inp, out, cr, cw, cw1h))
                    else:
                        got = prices._slow_cost(entry, inp, out, cr, cw, cw1h, at)
                    assert got == want, (provider.id, model.id, at, inp)
                    checked += 1
    assert checked > 500


def test_unknown_model_is_none_never_zero():
    assert cost_usd(provider="anthropic", model="totally-unknown-model", input_tokens=10, output_tokens=10) is None
    assert cost_usd(provider="openai", model=None, input_tokens=10) is None
    assert cost_usd(provider="openai", model="", input_tokens=10) is None
    assert not known_model("anthropic", "totally-unknown-model")
    assert known_model("anthropic", "claude-sonnet-4-5-20250929")
    assert known_model("gemini", "models/gemini-2.5-pro")  # routing prefix stripped
    assert known_model(None, "gpt-5")
    # OpenAI-compatible endpoint serving another vendor's model: found by model name
    assert known_model("openai", "deepseek-chat")


def test_zero_usage_of_known_model_is_zero():
    assert cost_usd(provider="anthropic", model="claude-haiku-4-5", at=AT) == 0.0


OVERRIDES_TOML = """
[models."claude-sonnet-4-5"]
input_mtok = 1.0
output_mtok = 2.0
cache_read_mtok = 0.1
cache_write_mtok = 1.5

[models."my-local-*"]
input_mtok = 0.5
output_mtok = 0.25
"""


def test_override_file_wins(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDES_TOML)
    ov = PriceOverrides.load(path)
    assert len(ov) == 2
    kw = dict(provider="anthropic", model="claude-sonnet-4-5-20250929", input_tokens=1_000, output_tokens=1_000,
              cache_read_tokens=10_000, cache_write_tokens=2_000, cache_write_1h_tokens=0, at=AT)
    got = cost_usd(**kw, overrides=ov)
    assert got == pytest.approx((1_000 * 1.0 + 1_000 * 2.0 + 10_000 * 0.1 + 2_000 * 1.5) / 1e6, rel=1e-12)
    assert got != cost_usd(**kw, overrides=PriceOverrides())
    # a 1h write without a 1h override keeps genai-prices' 1h price ($6/MTok for this model)
    got_1h = cost_usd(**{**kw, "cache_write_1h_tokens": 2_000}, overrides=ov)
    assert got_1h == pytest.approx((1_000 * 1.0 + 1_000 * 2.0 + 10_000 * 0.1 + 2_000 * 6.0) / 1e6, rel=1e-12)
    # unknown to genai-prices, priced by a glob override; cache reads without a price bill as input
    local = cost_usd(provider="openai", model="my-local-llama", input_tokens=1_000_000, output_tokens=2_000_000,
                     cache_read_tokens=1_000_000, overrides=ov)
    assert local == pytest.approx(0.5 + 0.5 + 0.5, rel=1e-12)
    assert known_model("openai", "my-local-llama", overrides=ov)
    assert not known_model("openai", "my-local-llama")


def test_default_overrides_from_env(tmp_path, monkeypatch):
    path = tmp_path / "p.toml"
    path.write_text(OVERRIDES_TOML)
    monkeypatch.setenv("LLMSM_PRICES", str(path))
    prices.set_default_overrides(None)
    assert prices.default_overrides_path() == path
    assert cost_usd(provider="openai", model="my-local-x", input_tokens=2_000_000) == pytest.approx(1.0)


def test_default_overrides_path_is_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv("LLMSM_PRICES", raising=False)
    assert prices.default_overrides_path() == platformdirs.user_config_path("llmsm") / "prices.toml"


def test_broken_override_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."x"]\ninput_mtok = -1\n')
    with pytest.raises(ValueError):
        PriceOverrides.load(bad)
    with pytest.raises(ValueError):
        PriceOverrides.from_toml('[models."x"]\ninput_mtk = 1\n')  # typo -> error, not silence
    # as the default file it is logged and ignored: genai-prices still prices
    monkeypatch.setenv("LLMSM_PRICES", str(bad))
    prices.set_default_overrides(None)
    assert cost_usd(provider="anthropic", model="claude-haiku-4-5", input_tokens=1_000_000, at=AT) == pytest.approx(1.0)


def test_cost_for_event():
    ev = ExchangeEvent(
        provider="anthropic", api="messages", model="claude-sonnet-4-5-20250929", started_at=AT,
        input_tokens=100, output_tokens=900, cache_read_tokens=40_000, cache_write_tokens=1_000,
        cache_write_1h_tokens=1_000, usage_source="reported",
    )
    want = expected("claude-sonnet-4-5-20250929", "anthropic", 100, 900, 40_000, 1_000, 1_000)
    assert cost_for_event(ev) == want
    assert cost_for_event(ev.model_dump()) == want
    assert cost_for_event(ExchangeEvent(provider="anthropic", model="claude-sonnet-4-5", started_at=AT)) is None
    unknown = ev.model_copy(update={"model": "nope-1", "requested_model": None})
    assert cost_for_event(unknown) is None
    # requested_model is the fallback when the response named no model
    assert cost_for_event(ev.model_copy(update={"model": None, "requested_model": "claude-sonnet-4-5"})) == want


def test_cost_for_event_prices_compaction_passes_separately():
    # two passes: a 180k-token summarization pass and a 23k-token answer; the sum crosses the
    # 200k tier of claude-sonnet-4-5, each pass does not.
    raw = {
        "input_tokens": 23_000, "output_tokens": 1_000,
        "iterations": [
            {"type": "compaction", "input_tokens": 180_000, "output_tokens": 3_500},
            {"type": "message", "input_tokens": 23_000, "output_tokens": 1_000},
        ],
    }
    ev = ExchangeEvent(provider="anthropic", api="messages", model="claude-sonnet-4-5", started_at=AT,
                       input_tokens=203_000, output_tokens=4_500, cache_read_tokens=0, cache_write_tokens=0,
                       usage_raw=raw, usage_source="reported")
    want = expected("claude-sonnet-4-5", "anthropic", 180_000, 3_500, 0, 0, 0) + expected(
        "claude-sonnet-4-5", "anthropic", 23_000, 1_000, 0, 0, 0)
    assert cost_for_event(ev) == pytest.approx(want, rel=1e-12)
    # sums that do not match the columns: the columns are priced as they are
    ev2 = ev.model_copy(update={"input_tokens": 5})
    assert cost_for_event(ev2) == expected("claude-sonnet-4-5", "anthropic", 5, 4_500, 0, 0, 0)


def test_context_windows():
    assert context_window("claude-sonnet-4-5-20250929", "anthropic") == 200_000
    assert context_window("claude-sonnet-4-5-20250929", "anthropic", long_context=True) == 1_000_000
    assert context_window("claude-sonnet-4-5[1m]", "anthropic") == 1_000_000
    assert context_window("claude-opus-4-6", "anthropic") == 1_000_000  # natively 1M
    assert context_window("claude-some-future-model", "anthropic") == 200_000  # fallback family default
    assert context_window("gemini-2.5-pro", "gemini") == 1_048_576  # genai-prices lacks it
    assert context_window("models/gemini-2.5-pro", "gemini") == 1_048_576
    assert context_window("gemini-2.5-flash", "gemini") == 1_048_576
    assert context_window("gemini-2.5-pro", "gemini", long_context=True) == 1_048_576  # flag is Claude-only
    assert context_window("gpt-5-codex", "openai") == 272_000  # 400k incl. 128k reserved output
    assert context_window("gpt-4.1", "openai") == 1_000_000
    assert context_window("o3", "openai") == 200_000
    assert context_window("unknown-model-xyz") is None
    assert context_window(None) is None


def test_fallback_table_covers_what_genai_prices_lacks():
    """The Gemini models the fallback table was written for get genai-prices' window where it
    has one, else the table's."""
    snap = get_snapshot()
    google = next(p for p in snap.providers if p.id == "google")
    listed = {m.id: m.context_window for m in google.models if m.id in ("gemini-2.5-pro", "gemini-3-pro-preview", "gemini-3.1-pro-preview")}
    assert listed, "none of these models is in genai-prices any more"
    for model_id, window in listed.items():
        assert context_window(model_id, "gemini") == (window or 1_048_576), model_id


def test_decimal_overrides_accept_ints_and_strings():
    ov = PriceOverrides.from_mapping({"models": {"m": {"input_mtok": 1, "output_mtok": "2.5"}}})
    found = ov.find("m")
    assert found is not None and found.output_mtok == Decimal("2.5")


# --- the answer cache: windows and cache-miss prices without genai-prices ----------------------

def test_cache_miss_extra_usd_is_the_write_price_minus_the_read_price():
    prices.set_default_overrides(PriceOverrides())
    at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    # claude-sonnet-4-5: write 3.75, 1 h write 6, read 0.30 $/MTok; over 200k the long-context tier
    assert prices.cache_miss_extra_usd("anthropic", "claude-sonnet-4-5", 100_000, at=at) == pytest.approx(0.345)
    assert prices.cache_miss_extra_usd("anthropic", "claude-sonnet-4-5", 100_000, one_hour=True, at=at) == pytest.approx(0.57)
    assert prices.cache_miss_extra_usd("anthropic", "claude-sonnet-4-5", 300_000, at=at) == pytest.approx(0.3 * (7.5 - 0.6))
    assert prices.cache_miss_extra_usd("anthropic", "no-such-model-xyz", 100_000, at=at) is None
    prices.set_default_overrides(None)


_PROBE = r"""
import json, sys
from datetime import datetime, timezone
from llmsm.analytics import prices
at = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
out = {
    "window": prices.context_window("claude-sonnet-4-5-20250929", "anthropic"),
    "window_1m": prices.context_window("claude-sonnet-4-5-20250929", "anthropic", True),
    "unknown": prices.context_window("unknown-model-xyz"),
    "extra": prices.cache_miss_extra_usd("anthropic", "claude-sonnet-4-5", 100_000, at=at),
    "long": prices.cache_miss_extra_usd("anthropic", "claude-sonnet-4-5", 300_000, at=at),
    "deepseek": prices.cache_miss_extra_usd("deepseek", "deepseek-chat", 100_000, at=at),
    "genai_prices_imported": "genai_prices" in sys.modules,
}
print(json.dumps(out))
"""


def _probe(cache, prices_file) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(cache), LLMSM_PRICES=str(prices_file))
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_fresh_process_answers_from_the_cache_file_without_genai_prices(tmp_path):
    import json

    cache, absent = tmp_path / "cache", tmp_path / "absent.toml"
    first = _probe(cache, absent)
    assert first.pop("genai_prices_imported") is True
    assert first["window"] == 200_000 and first["window_1m"] == 1_000_000 and first["unknown"] is None
    assert first["extra"] == pytest.approx(0.345) and first["long"] == pytest.approx(0.3 * 6.9)
    assert first["deepseek"] is not None
    second = _probe(cache, absent)
    # deepseek has off-peak (time-of-day) prices: not kept for a day, so it alone needs genai-prices
    keys = json.loads((cache / "llmsm" / "prices-cache.json").read_text())["answers"]
    assert not any("deepseek" in k for k in keys)
    assert "c|anthropic|claude-sonnet-4-5|2026-03-01" in keys
    assert second.pop("genai_prices_imported") is True  # for deepseek
    assert second == first

    # without deepseek, nothing imports genai-prices
    probe_no_ds = _PROBE.replace('"deepseek": prices.cache_miss_extra_usd("deepseek", "deepseek-chat", 100_000, at=at),', "")
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(cache), LLMSM_PRICES=str(absent))
    out = json.loads(subprocess.run([sys.executable, "-c", probe_no_ds], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["genai_prices_imported"] is False
    assert out["extra"] == first["extra"] and out["window"] == first["window"]


def test_the_cache_file_is_dropped_when_what_it_depends_on_changes(tmp_path):
    import json

    cache, absent = tmp_path / "cache", tmp_path / "absent.toml"
    truth = _probe(cache, absent)
    path = cache / "llmsm" / "prices-cache.json"
    data = json.loads(path.read_text())
    # another stamp (genai-prices updated, llmsm upgraded): the bogus answers are not used
    forged = {k: (1 if k.startswith("w|") else ["9", "9", "99", "99"]) for k in data["answers"]}
    path.write_text(json.dumps({"stamp": "other", "answers": forged}))
    assert _probe(cache, absent) == truth
    # a damaged file: answered from genai-prices, and written again
    path.write_text("{not json")
    assert _probe(cache, absent) == truth
    assert json.loads(path.read_text())["answers"]
    # the user's prices file is part of the stamp: an override takes effect at once
    prices_file = tmp_path / "prices.toml"
    prices_file.write_text('[models."claude-sonnet-4-5"]\ncache_write_mtok = 10.3\ncache_read_mtok = 0.3\n')
    overridden = _probe(cache, prices_file)
    assert overridden["extra"] == pytest.approx(1.0)
    assert overridden["window"] == truth["window"]
