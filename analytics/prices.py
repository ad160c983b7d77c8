"""Prices and context windows, from `genai-prices` (offline, cache-aware, with price history).

Public API:

- `cost_usd(provider=, model=, input_tokens=, output_tokens=, cache_read_tokens=,
  cache_write_tokens=, cache_write_1h_tokens=, at=)` -> USD as float, or None for a model nobody
  knows (never 0 for "unknown").
- `cost_for_event(event)` -> the same for one `ExchangeEvent` (or a dict with its field names).
- `context_window(model, provider=None, long_context=False)` -> the prompt window in tokens, or None
  (cached in memory and in a file, so that callers need not import genai-prices);
  `resolve_context_window(...)` -> the same straight from genai-prices' data.
- `known_model(provider, model)` -> bool.
- `PriceOverrides`: per-model prices from a TOML file that win over genai-prices.

Token semantics: llmsm's `input_tokens` is the *uncached* input; genai-prices' `input_tokens`
is the *whole* prompt (uncached + cache read + cache write). This module converts; callers pass
llmsm's columns unchanged. `cache_write_1h_tokens` is the part of `cache_write_tokens` written with
a 1 h TTL (Anthropic); genai-prices prices it at the model's `cache_write_1h_mtok` where it has one.

Speed: `genai_prices.calc_price` takes ~60 us per call. The gateway prices every request, so
`cost_usd` resolves the model once (cached), resolves the price in force on a date once (cached),
and then does the same exact Decimal arithmetic as genai-prices (same leaf decomposition, same
tier rule), so the result is bit-for-bit the float of `calc_price(...).total_price`. Models whose
price has parts that this arithmetic does not cover (a per-request fee) go through `calc_price`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from genai_prices import types as gp_types

# genai-prices is imported on first use, not here: with its price data it costs ~350 ms (pydantic,
# httpx for its updater), and the screens that only need a context window read it from the
# cache file below without it (`llmsm watch` starts in under a second).

__all__ = [
    "PriceOverride",
    "PriceOverrides",
    "context_window",
    "resolve_context_window",
    "answer_cache_path",
    "cost_for_event",
    "cost_usd",
    "cache_miss_extra_usd",
    "default_overrides",
    "default_overrides_path",
    "known_model",
    "set_default_overrides",
    "clear_caches",
]


_UTC = timezone.utc
_MTOK = Decimal(1_000_000)

# llmsm provider names -> genai-prices provider ids.
PROVIDER_IDS: dict[str, str] = {"anthropic": "anthropic", "openai": "openai", "gemini": "google", "google": "google"}

# Prefixes some clients and routers put before a model name ("models/gemini-2.5-pro",
# "anthropic/claude-sonnet-4.5"); stripped before lookup.
_MODEL_PREFIXES = ("models/", "anthropic/", "openai/", "google/", "gemini/", "vertex_ai/")

# --- context windows -----------------------------------------------------------------------------
# genai-prices' `context_window` is used when it has one. FALLBACK_CONTEXT_WINDOWS covers what it
# lacks (checked against genai-prices 0.2.3: gemini-2.5-pro, gemini-3-pro-preview and
# gemini-3.1-pro-preview have no context_window; gpt-4.5-preview neither). Keys are model-name
# prefixes, longest match wins. Values are the vendors' published input windows.
FALLBACK_CONTEXT_WINDOWS: dict[str, int] = {
    "gemini-2.5-pro": 1_048_576,
    "gemini-2.5-flash": 1_048_576,
    "gemini-3-pro": 1_048_576,
    "gemini-3.1-pro": 1_048_576,
    "gpt-4.5": 128_000,
    # Generic family defaults for names genai-prices does not know at all (approximations:
    # every Gemini since 1.5 has >= 1M, every Claude since 3 has >= 200k).
    "gemini-": 1_048_576,
    "claude-": 200_000,
}
CLAUDE_LONG_CONTEXT_WINDOW = 1_000_000  # anthropic-beta: context-1m-..., or natively 1M models
# OpenAI's GPT-5 family lists a 400k window that includes 128k reserved for output: the prompt
# itself is capped at 272k (requests above that fail). context_window() reports the prompt cap,
# because that is what a session's prompt fills.
OPENAI_400K_PROMPT_CAP = 272_000


def _normalize_model(model: str) -> tuple[str, bool]:
    """Lower-case, strip routing prefixes and a Claude Code style "[1m]" suffix (-> long context)."""
    m = model.strip().lower()
    long_hint = False
    if m.endswith("[1m]"):
        m = m[:-4]
        long_hint = True
    for prefix in _MODEL_PREFIXES:
        if m.startswith(prefix):
            m = m[len(prefix) :]
            break
    return m, long_hint


# --- model lookup (cached) -----------------------------------------------------------------------

_lock = threading.Lock()
_snapshot_seen: Any = None
_LOOKUP_CACHE_MAX = 4096
_lookup_cache: dict[tuple[str | None, str], tuple[gp_types.Provider, gp_types.ModelInfo] | None] = {}
_get_snapshot: Any = None


def _snapshot() -> Any:
    """genai-prices' current data snapshot (imports genai-prices the first time)."""
    global _get_snapshot
    if _get_snapshot is None:
        from genai_prices.data_snapshot import get_snapshot

        _get_snapshot = get_snapshot
    return _get_snapshot()


def _check_snapshot() -> None:
    """Drop our caches when genai-prices switched to another data snapshot (UpdatePrices)."""
    global _snapshot_seen
    snap = _snapshot()
    if snap is not _snapshot_seen:
        with _lock:
            _lookup_cache.clear()
            _compiled_cache.clear()
            _entry_cache.clear()
            if _snapshot_seen is not None:  # a switch, not the first look: answers may differ
                _answers.clear()
            _snapshot_seen = snap


def _lookup(provider: str | None, model_norm: str) -> tuple[gp_types.Provider, gp_types.ModelInfo] | None:
    """genai-prices (provider, model) for a normalized model name, or None. Cached, misses too.

    The llmsm provider is tried first; when the model is not there (an OpenAI-compatible endpoint
    serving another vendor's model), genai-prices' own model-name matching across providers is used.
    """
    key = (provider, model_norm)
    try:
        return _lookup_cache[key]
    except KeyError:
        pass
    snap = _snapshot()
    candidates: list[str | None] = []
    if provider:
        candidates.append(PROVIDER_IDS.get(provider.lower(), provider.lower()))
    candidates.append(None)
    found = None
    for pid in candidates:
        try:
            found = snap.find_provider_model(model_norm, None, pid, None)
            break
        except LookupError:
            continue
    with _lock:
        if len(_lookup_cache) >= _LOOKUP_CACHE_MAX:
            _lookup_cache.clear()
        _lookup_cache[key] = found
    return found


# Answers that need genai-prices' data (a window, a model's cache prices on a day) are kept in
# memory and in a cache file shared by every llmsm process, so that a screen or the status line
# gets them without importing genai-prices. The file is stamped with what the answers depend on
# (genai-prices' data file, this module, the user's prices file); another stamp empties it.
# Keys: "w|provider|model|long" -> window; "c|provider|model|UTC date" -> cache-miss prices.
_answers: dict[str, Any] = {}
_answers_loaded = False
_answers_stamp = ""
_ANSWERS_MAX = 4096


def answer_cache_path() -> Path:
    import platformdirs

    return platformdirs.user_cache_path("llmsm") / "prices-cache.json"


def _cached(key: str, compute: Any) -> Any:
    """The answer for `key`: memory, else the file, else `compute()` -> (value, may be kept)."""
    try:
        return _answers[key]
    except KeyError:
        pass
    with _lock:
        if not _answers_loaded:
            _load_answers()
        if key in _answers:
            return _answers[key]
    value, keep = compute()
    if keep:
        with _lock:
            if len(_answers) >= _ANSWERS_MAX:
                _answers.clear()
            _answers[key] = value
            _save_answers()
    return value


def _answers_file_stamp() -> str:
    """What a cached answer depends on, by size and mtime of each file."""
    import importlib.util

    spec = importlib.util.find_spec("genai_prices")
    files = [Path(d) / "data.py" for d in spec.submodule_search_locations or ()] if spec else []
    files += [Path(__file__), default_overrides_path()]
    parts = []
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _load_answers() -> None:
    global _answers_loaded, _answers_stamp
    _answers_loaded = True
    _answers_stamp = _answers_file_stamp()
    try:
        data = json.loads(answer_cache_path().read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("stamp") == _answers_stamp and isinstance(data.get("answers"), dict):
        for k, v in data["answers"].items():
            if v is None or (k.startswith("w|") and type(v) is int) or (k.startswith("c|") and type(v) is list):
                _answers.setdefault(k, v)


def _save_answers() -> None:
    """Write the known answers back (atomically; a failure costs the next process a lookup)."""
    try:
        path = answer_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"stamp": _answers_stamp, "answers": _answers}, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def context_window(model: str | None, provider: str | None = None, long_context: bool = False) -> int | None:
    """The prompt window of `model` in tokens, or None when unknown.

    `resolve_context_window`'s answer, kept in memory and in the cache file
    (`platformdirs.user_cache_path("llmsm")/prices-cache.json`), so it costs no genai-prices import.
    """
    if not model:
        return None
    return _cached(f"w|{provider or ''}|{model}|{int(bool(long_context))}",
                   lambda: (resolve_context_window(model, provider, long_context), True))


def resolve_context_window(model: str | None, provider: str | None = None, long_context: bool = False) -> int | None:
    """The prompt window of `model` in tokens from genai-prices' data, or None when unknown.

    Order: genai-prices' `context_window`; else FALLBACK_CONTEXT_WINDOWS (longest prefix). Claude
    models report 1,000,000 when `long_context` (the request's anthropic-beta carried
    `context-1m-...`, or the model name ends in "[1m]") or when the model is natively 1M.
    OpenAI GPT-5 models listed at 400k report their 272k prompt cap (see OPENAI_400K_PROMPT_CAP).
    """
    if not model:
        return None
    norm, long_hint = _normalize_model(model)
    found = _lookup(provider, norm)
    window: int | None = None
    canonical = norm
    if found is not None:
        canonical = found[1].id.lower()
        window = found[1].context_window
    if window is None:
        window = _fallback_window(norm) or _fallback_window(canonical)
    is_claude = "claude" in norm or "claude" in canonical
    if is_claude and (long_context or long_hint):
        window = max(window or 0, CLAUDE_LONG_CONTEXT_WINDOW)
    if window == 400_000 and canonical.startswith("gpt-5"):
        window = OPENAI_400K_PROMPT_CAP
    return window


def _fallback_window(name: str) -> int | None:
    best = None
    for prefix, size in FALLBACK_CONTEXT_WINDOWS.items():
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, size)
    return best[1] if best else None


# --- overrides -----------------------------------------------------------------------------------

_OVERRIDE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """USD per million tokens. A missing field keeps genai-prices' price for that part (when it
    knows the model); for a model genai-prices lacks, input_mtok and output_mtok are required and a
    missing cache price means those tokens are billed at input_mtok."""

    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    cache_write_1h_mtok: Decimal | None = None


class PriceOverrides:
    """User prices per model, loaded from TOML; an override wins over genai-prices.

    File format (default `platformdirs.user_config_path("llmsm") / "prices.toml"`, or `$LLMSM_PRICES`)::

        [models."claude-sonnet-4-5"]      # matches dated names too ("claude-sonnet-4-5-20250929")
        input_mtok = 3.0
        output_mtok = 15.0
        cache_read_mtok = 0.3
        cache_write_mtok = 3.75

        [models."my-local-*"]             # glob patterns work
        input_mtok = 0
        output_mtok = 0

    A key matches the model name as sent (lower-cased, routing prefix stripped) or genai-prices'
    canonical model id; exact keys win over glob patterns, patterns are tried in file order.
    Top-level tables are accepted in place of `[models."..."]`.
    """

    def __init__(self, models: Mapping[str, PriceOverride] | None = None, *, source: Path | None = None) -> None:
        self.source = source
        self._exact: dict[str, PriceOverride] = {}
        self._patterns: list[tuple[str, PriceOverride]] = []
        for key, ov in (models or {}).items():
            k = key.strip().lower()
            if any(c in k for c in "*?["):
                self._patterns.append((k, ov))
            else:
                self._exact[k] = ov

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def __repr__(self) -> str:
        return f"PriceOverrides({len(self)} models, source={self.source})"

    def find(self, *names: str | None) -> PriceOverride | None:
        for name in names:
            if name and (ov := self._exact.get(name)) is not None:
                return ov
        for pattern, ov in self._patterns:
            for name in names:
                if name and fnmatch.fnmatchcase(name, pattern):
                    return ov
        return None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: Path | None = None) -> PriceOverrides:
        table = data.get("models", data)
        if not isinstance(table, Mapping):
            raise ValueError("prices: [models] must be a table")
        models: dict[str, PriceOverride] = {}
        for name, entry in table.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"prices: models.{name!r} must be a table")
            unknown = set(entry) - set(_OVERRIDE_KEYS)
            if unknown:
                raise ValueError(f"prices: models.{name!r}: unknown keys {sorted(unknown)}; allowed: {_OVERRIDE_KEYS}")
            values: dict[str, Decimal] = {}
            for key, raw in entry.items():
                if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                    raise ValueError(f"prices: models.{name!r}.{key} must be a number")
                try:
                    value = Decimal(str(raw))
                except InvalidOperation as exc:
                    raise ValueError(f"prices: models.{name!r}.{key} must be a number") from exc
                if not value.is_finite() or value < 0:
                    raise ValueError(f"prices: models.{name!r}.{key} must be a finite number >= 0")
                values[key] = value
            models[str(name)] = PriceOverride(**values)
        return cls(models, source=source)

    @classmethod
    def from_toml(cls, text: str, *, source: Path | None = None) -> PriceOverrides:
        import tomllib

        return cls.from_mapping(tomllib.loads(text), source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceOverrides:
        """Parse a prices file; raises OSError / ValueError (tomllib.TOMLDecodeError) on problems."""
        p = Path(path)
        return cls.from_toml(p.read_text(encoding="utf-8"), source=p)


def default_overrides_path() -> Path:
    env = os.environ.get("LLMSM_PRICES")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_config_path("llmsm") / "prices.toml"


_default_overrides: PriceOverrides | None = None


def default_overrides() -> PriceOverrides:
    """The user's overrides, read once (missing file -> none; a broken file is logged and ignored).
    Call `set_default_overrides(None)` to read the file again."""
    global _default_overrides
    ov = _default_overrides
    if ov is None:
        path = default_overrides_path()
        try:
            ov = PriceOverrides.load(path)
        except FileNotFoundError:
            ov = PriceOverrides(source=None)
        except (OSError, ValueError) as exc:
            import logging

            logging.getLogger(__name__).warning("ignoring price overrides in %s: %s", path, exc)
            ov = PriceOverrides(source=None)
        _default_overrides = ov
        _entry_cache.clear()
    return ov


_overrides_by_hand = False  # set_default_overrides(x): cache-miss prices are not taken from the file


def set_default_overrides(overrides: PriceOverrides | None) -> None:
    """Replace the default overrides (None: re-read the file on next use)."""
    global _default_overrides, _overrides_by_hand, _answers_loaded
    _default_overrides = overrides
    _overrides_by_hand = overrides is not None
    _entry_cache.clear()
    with _lock:  # read the cache file again, stamped with the prices file in force now
        _answers.clear()
        _answers_loaded = False


# --- compiled prices -----------------------------------------------------------------------------
# A compiled price is a tuple (input, output, cache_read, cache_write, cache_write_1h, fast) where
# each price is None (not priced), a Decimal, or ("tiers", base, ((start, price), ...descending)).
# fast=False: the model price has a part this arithmetic does not handle -> genai_prices.calc_price.

_Price = Decimal | tuple | None
_compiled_cache: dict[tuple[int, int], tuple[Any, Any, tuple | None]] = {}
_entry_cache: dict[tuple[int, str | None, str], Any] = {}
_UNKNOWN = object()


def _compile_one(value: Any) -> _Price:
    if value is None:
        return None
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        tiers = tuple(sorted(((t.start, t.price) for t in value.tiers), reverse=True))
        return ("tiers", value.base, tiers)
    return value


def _compile(model_price: gp_types.ModelPrice) -> tuple:
    d = model_price.__dict__
    fast = not any(v is not None and "request" in k for k, v in d.items())
    return (
        _compile_one(d.get("input_mtok")),
        _compile_one(d.get("output_mtok")),
        _compile_one(d.get("cache_read_mtok")),
        _compile_one(d.get("cache_write_mtok")),
        _compile_one(d.get("cache_write_1h_mtok")),
        fast,
    )


def _merge(base: tuple | None, ov: PriceOverride) -> tuple | None:
    b = base or (None, None, None, None, None, True)
    merged = (
        ov.input_mtok if ov.input_mtok is not None else b[0],
        ov.output_mtok if ov.output_mtok is not None else b[1],
        ov.cache_read_mtok if ov.cache_read_mtok is not None else b[2],
        ov.cache_write_mtok if ov.cache_write_mtok is not None else b[3],
        ov.cache_write_1h_mtok if ov.cache_write_1h_mtok is not None else b[4],
        True,  # an override is priced by our arithmetic (per-request fees are dropped)
    )
    if merged[0] is None or merged[1] is None:
        return None
    return merged


def _entry(provider: str | None, model: str, overrides: PriceOverrides) -> Any:
    """(provider, model_info | None, override | None) for a raw model name, or _UNKNOWN. Cached."""
    key = (id(overrides), provider, model)
    hit = _entry_cache.get(key)
    if hit is not None and hit[1] is overrides:
        return hit[0]
    norm, _ = _normalize_model(model)
    found = _lookup(provider, norm)
    ov = overrides.find(norm, found[1].id.lower() if found else None) if len(overrides) else None
    if found is None and (ov is None or ov.input_mtok is None or ov.output_mtok is None):
        entry: Any = _UNKNOWN
    else:
        entry = (found[0] if found else None, found[1] if found else None, ov)
    with _lock:
        if len(_entry_cache) >= _LOOKUP_CACHE_MAX:
            _entry_cache.clear()
        _entry_cache[key] = (entry, overrides)  # keep `overrides` alive so its id stays unique
    return entry


def _prices_for(entry: tuple, at: datetime) -> tuple | None:
    _provider, model_info, ov = entry
    if model_info is None:
        return _merge(None, ov)
    model_price = model_info.get_prices(at)
    key = (id(model_price), id(ov))
    hit = _compiled_cache.get(key)
    if hit is not None:
        return hit[2]
    compiled = _compile(model_price)
    if ov is not None:
        compiled = _merge(compiled, ov)
    with _lock:
        # keep model_price and the override alive: their ids are the key
        _compiled_cache[key] = (model_price, ov, compiled)
    return compiled


def _tier(price: Any, prompt: int) -> Decimal:
    if type(price) is tuple:
        for start, tier_price in price[2]:
            if prompt > start:
                return tier_price
        return price[1]
    return price


def _fast_cost(p: tuple, inp: int, out: int, cr: int, cw: int, cw1h: int) -> Decimal:
    """Exactly genai-prices' arithmetic for the five token units (see module docstring).

    Leaves: a unit without a price is billed as its parent (1h write -> cache write -> input;
    cache read -> input). Tiers are chosen by the whole prompt, "> start" applies the tier price
    to every token of that unit.
    """
    p_in, p_out, p_cr, p_cw, p_cw1h, _ = p
    prompt = inp + cr + cw
    tiered = type(p_in) is tuple or type(p_out) is tuple or type(p_cr) is tuple or type(p_cw) is tuple or type(p_cw1h) is tuple
    input_leaf = prompt
    total = Decimal(0)
    if p_cw1h is not None and cw1h:
        total += (_tier(p_cw1h, prompt) if tiered else p_cw1h) * cw1h
        input_leaf -= cw1h
        cw_rest = cw - cw1h
    else:
        cw_rest = cw
    if p_cw is not None and cw_rest:
        total += (_tier(p_cw, prompt) if tiered else p_cw) * cw_rest
        input_leaf -= cw_rest
    if p_cr is not None and cr:
        total += (_tier(p_cr, prompt) if tiered else p_cr) * cr
        input_leaf -= cr
    if p_in is not None and input_leaf:
        total += (_tier(p_in, prompt) if tiered else p_in) * input_leaf
    if p_out is not None and out:
        total += (_tier(p_out, prompt) if tiered else p_out) * out
    return total / _MTOK


def _n(value: Any) -> int:
    if not value or value < 0:
        return 0
    return int(value)


def cost_usd(
    *,
    provider: str | None,
    model: str | None,
    input_tokens: int | None = 0,
    output_tokens: int | None = 0,
    cache_read_tokens: int | None = 0,
    cache_write_tokens: int | None = 0,
    cache_write_1h_tokens: int | None = 0,
    at: datetime | None = None,
    overrides: PriceOverrides | None = None,
) -> float | None:
    """USD cost of one exchange, or None when the model is unknown (to genai-prices and overrides).

    Token arguments use llmsm's semantics (`input_tokens` uncached; `cache_write_1h_tokens` is the
    1 h part of `cache_write_tokens`). `at` picks the price in force then (default: now; naive =
    UTC). Long-context tiers follow the whole prompt. Standard tier only: batch, flex and priority
    service tiers are not distinguished.
    """
    if not model:
        return None
    _check_snapshot()
    ov_set = default_overrides() if overrides is None else overrides
    entry = _entry(provider, model, ov_set)
    if entry is _UNKNOWN:
        return None
    if at is None:
        at = datetime.now(_UTC)
    prices = _prices_for(entry, at)
    if prices is None:
        return None
    inp, out, cr, cw = _n(input_tokens), _n(output_tokens), _n(cache_read_tokens), _n(cache_write_tokens)
    cw1h = min(_n(cache_write_1h_tokens), cw)
    if not prices[5]:
        return _slow_cost(entry, inp, out, cr, cw, cw1h, at)
    return float(_fast_cost(prices, inp, out, cr, cw, cw1h))


def _slow_cost(entry: tuple, inp: int, out: int, cr: int, cw: int, cw1h: int, at: datetime) -> float | None:
    provider, model_info, _ = entry
    from genai_prices import Usage

    usage = Usage(
        input_tokens=inp + cr + cw,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        cache_write_1h_tokens=cw1h,
    )
    try:
        return float(model_info.calc_price(usage, provider, genai_request_timestamp=at).total_price)
    except (ValueError, LookupError):  # pragma: no cover - defensive: bad data in a snapshot
        return None


def _cache_prices_now(provider: str | None, model: str, at: datetime,
                      overrides: PriceOverrides | None) -> tuple[_Price, _Price, _Price, _Price]:
    """(input, cache read, cache write, 1 h cache write) compiled prices in force at `at`."""
    _check_snapshot()
    entry = _entry(provider, model, default_overrides() if overrides is None else overrides)
    p = None if entry is _UNKNOWN else _prices_for(entry, at)
    if p is None:
        return (None,) * 4
    return p[0], p[2], p[3], p[4]


def _cache_prices(provider: str | None, model: str, at: datetime, overrides: PriceOverrides | None) -> tuple[Any, bool]:
    """`_cache_prices_now` as JSON for the answer cache, and whether it holds for all of `at`'s
    UTC day (genai-prices' start dates are UTC days; a time-of-day price, off-peak, does not)."""
    prices = _cache_prices_now(provider, model, at, overrides)
    if all(p is None for p in prices):
        return None, True
    entry = _entry(provider, model, default_overrides() if overrides is None else overrides)
    from genai_prices.types import TimeOfDateConstraint

    conditional = entry[1].prices if entry is not _UNKNOWN and entry[1] is not None else None
    daily = not isinstance(conditional, list) or not any(
        isinstance(c.constraint, TimeOfDateConstraint) for c in conditional)
    return [_price_to_json(p) for p in prices], daily


def _price_to_json(p: _Price) -> Any:
    if type(p) is tuple:
        return ["tiers", str(p[1]), [[start, str(price)] for start, price in p[2]]]
    return None if p is None else str(p)


def _price_from_json(v: Any) -> _Price:
    if isinstance(v, list):
        return ("tiers", Decimal(v[1]), tuple((int(start), Decimal(price)) for start, price in v[2]))
    return None if v is None else Decimal(v)


def cache_miss_extra_usd(
    provider: str | None,
    model: str | None,
    prompt_tokens: int,
    *,
    one_hour: bool = False,
    at: datetime | None = None,
    overrides: PriceOverrides | None = None,
) -> float | None:
    """What a cold prompt cache adds to the next turn: `prompt_tokens` billed as a cache write
    (1 h write if `one_hour`) instead of a cache read, in USD (an estimate in float arithmetic,
    for display). None for an unknown model."""
    if not model:
        return None
    at = at or datetime.now(_UTC)
    if overrides is None and not _overrides_by_hand:
        day = (at.astimezone(_UTC) if at.tzinfo else at).date().isoformat()
        card = _cached(f"c|{provider or ''}|{model}|{day}", lambda: _cache_prices(provider, model, at, None))
        try:
            p_in, p_cr, p_cw, p_cw1h = (_price_from_json(v) for v in card) if card else (None,) * 4
        except (TypeError, ValueError, LookupError, ArithmeticError):  # a damaged cache file: ask genai-prices
            p_in, p_cr, p_cw, p_cw1h = _cache_prices_now(provider, model, at, None)
    else:
        p_in, p_cr, p_cw, p_cw1h = _cache_prices_now(provider, model, at, overrides)
    n = _n(prompt_tokens)
    write = (p_cw1h if one_hour and p_cw1h is not None else None) or p_cw or p_in
    read = p_cr if p_cr is not None else p_in
    if write is None or read is None:
        return None
    return (float(_tier(write, n)) - float(_tier(read, n))) * n / 1_000_000


def known_model(provider: str | None, model: str | None, overrides: PriceOverrides | None = None) -> bool:
    """True when `cost_usd` can price this model (genai-prices knows it, or an override covers it)."""
    if not model:
        return False
    _check_snapshot()
    entry = _entry(provider, model, default_overrides() if overrides is None else overrides)
    return entry is not _UNKNOWN


# --- events --------------------------------------------------------------------------------------

_ITER_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def cost_for_event(event: Any, overrides: PriceOverrides | None = None) -> float | None:
    """Cost of one `ExchangeEvent` (or a mapping with its field names); None when it has no usage
    or an unknown model. Uses `model` (the response's) else `requested_model`, priced at `started_at`.

    Anthropic compaction: when `usage_raw.iterations` holds per-pass usage whose sums equal the
    event's columns, each pass is priced on its own (a long-context tier depends on each pass's
    prompt, not on the sum).
    """
    from .events import ExchangeEvent

    if type(event) is ExchangeEvent:
        get = event.__dict__.get
    elif isinstance(event, Mapping):
        get = event.get
    else:

        def get(name: str) -> Any:
            return getattr(event, name, None)

    fields_ = [get("input_tokens"), get("output_tokens"), get("cache_read_tokens"), get("cache_write_tokens")]
    if fields_ == [None, None, None, None]:
        return None
    model = get("model") or get("requested_model")
    provider = get("provider")
    at = get("started_at")
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    inp, out, cr, cw = (_n(v) for v in fields_)
    cw1h = _n(get("cache_write_1h_tokens"))
    raw = get("usage_raw")
    iterations = raw.get("iterations") if isinstance(raw, Mapping) else None
    if isinstance(iterations, list) and len(iterations) > 1:
        split = _split_iterations(iterations, inp, out, cr, cw)
        if split is not None:
            total = 0.0
            for i_inp, i_out, i_cr, i_cw, i_cw1h in split:
                c = cost_usd(
                    provider=provider, model=model, input_tokens=i_inp, output_tokens=i_out,
                    cache_read_tokens=i_cr, cache_write_tokens=i_cw, cache_write_1h_tokens=i_cw1h,
                    at=at, overrides=overrides,
                )
                if c is None:
                    return None
                total += c
            return total
    return cost_usd(
        provider=provider, model=model, input_tokens=inp, output_tokens=out, cache_read_tokens=cr,
        cache_write_tokens=cw, cache_write_1h_tokens=cw1h, at=at, overrides=overrides,
    )


def _split_iterations(iterations: list, inp: int, out: int, cr: int, cw: int) -> list[tuple[int, ...]] | None:
    parts = []
    sums = [0, 0, 0, 0]
    for it in iterations:
        if not isinstance(it, Mapping):
            return None
        vals = [_n(it.get(k)) for k in _ITER_FIELDS]
        cc = it.get("cache_creation")
        one_h = _n(cc.get("ephemeral_1h_input_tokens")) if isinstance(cc, Mapping) else 0
        parts.append((vals[0], vals[1], vals[2], vals[3], min(one_h, vals[3])))
        for i in range(4):
            sums[i] += vals[i]
    if sums != [inp, out, cr, cw]:
        return None
    return parts


def clear_caches() -> None:
    """Forget every cached lookup (tests; after changing genai-prices data by hand)."""
    global _snapshot_seen
    with _lock:
        _lookup_cache.clear()
        _compiled_cache.clear()
        _entry_cache.clear()
        _snapshot_seen = None
        _answers.clear()

