"""Request bodies read once: a conversation's next request reuses what its previous one parsed.

A coding assistant sends the whole conversation with every turn (often near 1 MB), and each
request repeats the previous one but for its newest messages. Parsing all of it, checksumming
it and walking every message again would make llmsm's work per request grow with the history.
`RequestBodies` keeps, for the recent bodies (LRU, bounded in count and bytes), the body, where
each element of its message list ends (byte offsets), what parsing gave, and CRC-32 checkpoints.
A new body is compared byte for byte with them (a memcmp: cheap in C); only what follows the
longest common prefix that ends on a known element boundary is parsed, and the CRC continues
from the last checkpoint inside that prefix. Where an element ends is known without scanning:
each new element's compact JSON (orjson.dumps) is compared with the body's bytes at its start
(exact: a JSON object's text ends where it ends); the last element ends before the list's ']'.
Bodies written with spaces fall back to a scan of their brackets (slower, as exact).

Exact, or not at all: the reused part is the same bytes, hence the same values; the rest is
parsed in the same nesting as in the whole body; anything unusual (no message list at the top,
duplicate top-level keys, an element that is not an object/array/string, a body orjson refuses,
a compressed body) is parsed whole, as before. The `RequestInfo` (model, counts, digest items...)
and the CRC are those of the whole body parsed from scratch (tests/test_incremental_parse.py).

Nothing per request grows with the history but the memcmp: the message list of a kept body is
continued in place (its old tail cut, the new elements appended) once the exchange it was parsed
for has ended (`release`), so a request does not copy, and the collector does not walk, hundreds
of messages; while that exchange is in flight its list is copied, since its RequestInfo holds it.
The providers' per-item summary is kept as prefix maxima (`ranks`), so the whole list's is known
without reading every item.

Pure: no mitmproxy. Thread-safe: the gateway reuses on the event loop and parses big bodies whole
in a worker thread. Bodies are kept in memory only (as mitmproxy holds a flow's), never written.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from llmsm.addons.providers import ITEM_SUMMARIES, ITEMS_KEYS, parse_request
from llmsm.addons.providers.base import RequestInfo

log = logging.getLogger("llmsm.providers")

# CRC-32 checkpoints every CRC_STEP bytes: a new body's CRC continues from the last checkpoint
# before it differs from the body it extends.
CRC_STEP = 16 * 1024
# Bounds of what is kept: bodies (each of which holds its parsed values, a few times its size).
MAX_BODIES = 256
MAX_BODIES_PER_SCOPE = 16
MAX_KEPT_BYTES = 32 * 1024 * 1024
MAX_BODY = 16 * 1024 * 1024
# Smaller bodies are parsed whole (it is cheaper than keeping them).
MIN_BODY = 32 * 1024
# The common prefix is found by comparing chunks of this many bytes.
_CHUNK = 64 * 1024

# A JSON string (with its escapes), optionally followed by ':' (then it is a key), or a bracket.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[\]{}]')
_WS = b" \t\r\n"
# The key the rest of the message list is parsed under: `{"\u0000llmsm":[...rest of the body`.
_SENTINEL = "\u0000llmsm"
_SENTINEL_OPEN = b'{"\\u0000llmsm":['
_SENTINEL_MARK = b"u0000llmsm"

Scope = tuple[Any, ...]


class Parsed(NamedTuple):
    info: RequestInfo
    crc: int  # CRC-32 of the whole body
    # What was kept of the body (None: nothing): `RequestBodies.release` it once the exchange's
    # event is made, so the next request of the conversation may continue its message list.
    kept: Any = None


@dataclass(slots=True, eq=False)
class _Body:
    """A parsed body, as the next one of its conversation can reuse it. Never changed, but for
    `busy`; once released, the body that extends it takes over its `items` list."""

    raw: bytes
    scope: Scope
    key: str  # the message list's top-level key (messages, input, contents)
    # Known element boundaries: the first ks[j] elements of the list end at offs[j] (ks[0] = 0:
    # just after the list's '['). Not every boundary is known, but the last element's always is.
    # (Arrays of machine integers, not lists: the garbage collector has nothing to walk in them,
    # and a request's copy of them is a memcpy; hundreds each on a long conversation.)
    ks: array
    offs: array
    close: int  # offset of the list's ']'
    before: dict[str, Any]  # the top-level members before the list, as parsed
    after: dict[str, Any]  # and after it
    items: list[Any]
    # ranks[i]: the largest of the provider's per-item summaries (ITEM_SUMMARIES) over the first
    # i items (ranks[0] = 0); None for an API without one.
    ranks: array | None
    crcs: array  # crcs[j]: CRC-32 of raw[: j * CRC_STEP]
    busy: bool = True  # `items` is the RequestInfo's of an exchange in flight
    # The body up to its first known element boundary (None: an empty list): what a new body of
    # the scope is compared with first, one call that tells another conversation apart.
    first: memoryview | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if len(self.offs) > 1:
            self.first = memoryview(self.raw)[: self.offs[1]]


class RequestBodies:
    """The recent request bodies, by scope (provider, api, account): see the module's doc."""

    def __init__(self, *, max_bodies: int = MAX_BODIES, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.max_bodies, self.max_bytes = max_bodies, max_bytes
        self._lock = threading.Lock()
        self._lru: OrderedDict[int, _Body] = OrderedDict()  # id -> body, oldest first
        self._scopes: dict[Scope, list[_Body]] = {}  # newest first
        self._bytes = 0
        self.reused = self.parsed = 0  # counters, for benchmarks and tests

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._scopes.clear()
            self._bytes = 0

    # -- entry points ----------------------------------------------------------------------------
    def reuse(self, provider: str, api: str, scope: Scope, raw: bytes) -> Parsed | None:
        """The body parsed by reusing a kept body of the same scope whose first messages it
        repeats byte for byte; None when none fits (then call `parse`). Cheap: a memcmp of the
        body, and a parse of what follows the repeated messages."""
        if (provider, api) not in ITEMS_KEYS or len(raw) > MAX_BODY:
            return None
        try:
            return self._reuse(provider, api, scope, raw)
        except Exception:  # untrusted data, and llmsm's own code: the whole parse answers
            log.debug("a request body could not be read from the one it extends", exc_info=True)
            return None

    def _reuse(self, provider: str, api: str, scope: Scope, raw: bytes) -> Parsed | None:
        with self._lock:
            candidates = list(self._scopes.get(scope, ()))
        best, best_j = None, 0
        for body in candidates:
            j = _reusable(body, raw)
            if j > 0 and (best is None or body.offs[j] > best.offs[best_j]):
                best, best_j = body, j
        if best is None:  # nothing, or no more than the members before the list: parse it whole
            return None
        try:
            made = _extend(best, best_j, raw, scope, ITEM_SUMMARIES.get((provider, api)))
        except (orjson.JSONDecodeError, _NotExact):
            return None
        body, merged = made
        self._keep(body, replaces=best)  # first: `best` may have handed its list on
        info = parse_request(provider, api, merged, items_summary=_top(body.ranks))
        self.reused += 1
        return Parsed(info, _crc(body), body)

    def parse(self, provider: str, api: str, scope: Scope, raw: bytes) -> Parsed | None:
        """The whole body parsed (and kept for the next request when it can be reused); None when
        orjson refuses it (the caller's own parser decides what it is)."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        try:
            return self._parse(provider, api, scope, raw, value)
        except Exception:
            log.debug("a request body could not be kept", exc_info=True)
            return None

    def _parse(self, provider: str, api: str, scope: Scope, raw: bytes, value: Any) -> Parsed:
        body_dict = value if isinstance(value, dict) else {}
        key = ITEMS_KEYS.get((provider, api))
        summarize = ITEM_SUMMARIES.get((provider, api))
        items = body_dict.get(key) if key is not None else None
        ranks = None
        if summarize is not None and isinstance(items, list):
            ranks = _ranks(array("b", (0,)), items, summarize)
        info = parse_request(provider, api, body_dict, items_summary=_top(ranks))
        crcs = _checkpoints(raw, _offsets(0), 0)
        self.parsed += 1
        kept = None
        if key is not None and isinstance(items, list) and len(raw) <= MAX_BODY:
            layout = _layout(raw, body_dict, key)
            if layout is not None:
                ks, offs, close = layout
                keys = list(body_dict)
                at = keys.index(key)
                before = {k: body_dict[k] for k in keys[:at]}
                after = {k: body_dict[k] for k in keys[at + 1 :]}
                kept = _Body(raw, scope, key, ks, offs, close, before, after, items, ranks, crcs)
                self._keep(kept, replaces=None)
        return Parsed(info, _crc_of(raw, crcs), kept)

    @staticmethod
    def release(kept: Any) -> None:
        """The exchange that `kept` (a `Parsed.kept`) was parsed for has made its event: its
        message list may now be continued in place by the conversation's next request."""
        if isinstance(kept, _Body):
            kept.busy = False

    # -- the store --------------------------------------------------------------------------------
    def _keep(self, body: _Body, *, replaces: _Body | None) -> None:
        with self._lock:
            if replaces is not None:
                self._drop(replaces)
            self._lru[id(body)] = body
            self._bytes += len(body.raw)
            same = self._scopes.setdefault(body.scope, [])
            same.insert(0, body)
            if len(same) > MAX_BODIES_PER_SCOPE:
                self._drop(same[-1])
            while self._lru and (len(self._lru) > self.max_bodies or self._bytes > self.max_bytes):
                self._drop(next(iter(self._lru.values())))

    def _drop(self, body: _Body) -> None:
        if self._lru.pop(id(body), None) is None:
            return
        self._bytes -= len(body.raw)
        same = self._scopes.get(body.scope)
        if same is not None:
            same.remove(body)
            if not same:
                del self._scopes[body.scope]


class _NotExact(Exception):
    """The new body cannot be read from the kept one exactly: parse it whole."""


# -- what can be reused -------------------------------------------------------------------------
def _reusable(body: _Body, raw: bytes) -> int:
    """The largest j such that raw's first body.offs[j] bytes are body's (memcmp through
    bytes.startswith on a memoryview: no copy); 0 when not even its first element is."""
    # Another conversation of the scope differs by its first element: one compare.
    if body.first is None or not raw.startswith(body.first):
        return 0
    offs = body.offs
    view = memoryview(body.raw)
    hi = bisect_right(offs, len(raw)) - 1  # >= 1: raw holds the first element
    # A conversation's next request most often changes only its last message (a moved cache
    # marker): try the boundary before it, then the last one.
    if hi == 1:
        return 1
    if raw.startswith(view[offs[1] : offs[hi - 1]], offs[1]):
        return hi if raw.startswith(view[offs[hi - 1] : offs[hi]], offs[hi - 1]) else hi - 1
    lo, hi = 1, hi - 1  # raw[:offs[lo]] is body's, raw[:offs[hi]] is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if raw.startswith(view[offs[lo] : offs[mid]], offs[lo]):
            lo = mid
        else:
            hi = mid
    return lo


def _extend(old: _Body, j: int, raw: bytes, scope: Scope, summarize: Callable | None) -> tuple[_Body, dict]:
    """The new body from `old`'s first old.ks[j] elements and what follows them in `raw`:
    (its _Body, the whole body's dict as parsing it whole gives it)."""
    k, start = old.ks[j], old.offs[j]
    suffix = memoryview(old.raw)[old.close :]
    tail_end = len(raw) - len(suffix)
    if tail_end >= start and raw.endswith(suffix):
        # The usual case: after the list, the body is the same as before (system, tools, ...).
        after, close = old.after, tail_end
        new_items, pos = _new_elements(raw, start, tail_end, first=k == 0, rest=False)
    else:
        new_items, pos = _new_elements(raw, start, len(raw), first=k == 0, rest=True)
        after = new_items.pop()
        if after.keys() & old.before.keys() or old.key in after:
            raise _NotExact  # a duplicate top-level key: the whole parse decides which wins
        close = None
    ks, offs = old.ks[: j + 1], old.offs[: j + 1]
    # Where each new element ends, as far as their compact JSON is their bytes (exact: a value's
    # text ends where it ends); the last one's end is always known from the list's ']'.
    verified = _chain(raw, pos, new_items, ks, offs, k)
    if close is None or (verified is None and new_items):
        # (JSON that is not compact: the new elements' ends by their brackets)
        found = _close_after(raw, verified, k + len(new_items), ks, offs)
        if close is not None and found != close:
            raise _NotExact
        close = found
    if new_items and ks[-1] != k + len(new_items):
        ks.append(k + len(new_items))
        offs.append(_rstrip(raw, close))
    ranks = None
    if old.ranks is not None and summarize is not None:
        ranks = _ranks(old.ranks[: k + 1], new_items, summarize)
    crcs = _checkpoints(raw, old.crcs, start)
    # Last, as nothing after it can fail: the old body's list, when no exchange holds it any
    # more, becomes the new one's (it is dropped from the store right after), else a copy.
    if old.busy:
        items = old.items[:k] + new_items
    else:
        items = old.items
        del items[k:]
        items += new_items
    merged = dict(old.before)
    merged[old.key] = items
    merged.update(after)
    body = _Body(raw, scope, old.key, ks, offs, close, old.before, after, items, ranks, crcs)
    return body, merged


def _ranks(ranks: array, items: list[Any], summarize: Callable) -> array:
    """`ranks` (prefix maxima of the summaries) continued over `items`."""
    top = ranks[-1]
    for item in items:
        top = max(top, summarize(item))
        ranks.append(top)
    return ranks


def _top(ranks: array | None) -> int | None:
    """The largest summary over all the items (None: the API has none)."""
    return None if ranks is None else ranks[-1]


def _new_elements(raw: bytes, start: int, end: int, *, first: bool, rest: bool) -> tuple[list[Any], int]:
    """The elements that follow a list's first k elements (its '[' when `first`), which end at
    `start`: parsed as `{"\\u0000llmsm":[` + what follows (the nesting they have in the body).
    With `rest`, raw[start:end] runs to the body's end and the top-level members after the
    list come last in the returned list (a dict); else it stops at the list's ']'.
    Also returns where the first new element starts."""
    pos = _skip_ws(raw, start, end)
    if pos == end and not rest:
        return [], pos
    comma = False
    if not first and pos < end and raw[pos] == 0x2C:  # ','
        pos, comma = pos + 1, True
    elif not first and (pos == end or raw[pos] != 0x5D):  # neither ',' nor ']'
        raise _NotExact
    if rest:
        segment = raw[pos:]
        if _SENTINEL_MARK in segment:
            raise _NotExact
        value = orjson.loads(_SENTINEL_OPEN + segment)
        if not isinstance(value, dict):
            raise _NotExact
        items = value.pop(_SENTINEL)
        out = [*items, value]
    else:
        if not comma and not first:
            raise _NotExact
        items = orjson.loads(_SENTINEL_OPEN + raw[pos:end] + b"]}")[_SENTINEL]
        out = items
    if comma and not items:
        raise _NotExact  # "[..., ]": not JSON, whatever the rest
    return out, _skip_ws(raw, pos, end)


def _chain(raw: bytes, pos: int, items: list[Any], ks: array, offs: array, k: int) -> int | None:
    """Follow `items` (starting at `pos`) through raw while each is its compact JSON; append the
    boundaries found. The offset after the last one when all are, else None."""
    for i, item in enumerate(items):
        if i:
            pos = _skip_ws(raw, pos, len(raw))
            if pos >= len(raw) or raw[pos] != 0x2C:
                return None
            pos = _skip_ws(raw, pos + 1, len(raw))
        if not isinstance(item, dict | list | str):
            return None  # a number's text is not self-delimiting
        try:
            text = orjson.dumps(item)
        except orjson.JSONEncodeError:
            return None
        if not raw.startswith(text, pos):
            return None
        pos += len(text)
        ks.append(k + i + 1)
        offs.append(pos)
    return pos


def _close_after(raw: bytes, verified: int | None, n: int, ks: array, offs: array) -> int:
    """The offset of the list's ']' (the rest of the body changed): right after the last element
    when the chain reached it, else found by scanning from the last known boundary."""
    if verified is not None:
        pos = _skip_ws(raw, verified, len(raw))
        if pos < len(raw) and raw[pos] == 0x5D:
            return pos
        raise _NotExact
    ends, close = _scan_elements(raw, offs[-1], len(raw))
    if close is None or ks[-1] + len(ends) != n:
        raise _NotExact
    ks.extend(range(ks[-1] + 1, n + 1))
    offs.extend(ends)
    return close


def _skip_ws(raw: bytes, pos: int, end: int) -> int:
    while pos < end and raw[pos] in _WS:
        pos += 1
    return pos


def _rstrip(raw: bytes, pos: int) -> int:
    while pos > 0 and raw[pos - 1] in _WS:
        pos -= 1
    return pos


def _scan_elements(raw: bytes, start: int, end: int) -> tuple[list[int], int | None]:
    """(where each element ends, offset of the ']') of a list whose next element (or ',')
    follows `start`, by its brackets (strings skipped whole); None for the ']' when
    raw[start:end] ends first. Slower than `_chain` (the regular expression walks every byte):
    for bodies whose JSON is not compact."""
    ends: list[int] = []
    depth = 0
    for match in _TOKENS.finditer(raw, start, end):
        ch = raw[match.start()]
        if ch == 0x22:  # '"'
            if depth == 0:
                ends.append(match.end())
        elif ch in (0x7B, 0x5B):  # '{' '['
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                ends.append(match.end())
            elif depth < 0:
                return ends, match.start()
    return ends, None


def _layout(raw: bytes, body: dict[str, Any], key: str) -> tuple[array, array, int] | None:
    """(ks, offs, close) of the list `key` in a whole body (see _Body); None when the body is not
    laid out so that it can be reused exactly (duplicate top-level keys among them)."""
    keys = list(body)
    at = keys.index(key)
    try:
        head = b"{" + b"".join(orjson.dumps(k) + b":" + orjson.dumps(body[k]) + b"," for k in keys[:at])
        head += orjson.dumps(key) + b":["
        tail = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(body[k]) for k in keys[at + 1 :]) + b"}"
    except orjson.JSONEncodeError:
        return None
    if raw.startswith(head):  # compact JSON, as assistants send it: checked, not scanned
        ks, offs = _offsets(0), _offsets(len(head))
        items = body[key]
        end = _chain(raw, len(head), items, ks, offs, 0)
        if end is None and items:
            try:
                close = _close_after(raw, None, len(items), ks, offs)
            except _NotExact:
                return None
        else:
            close = _skip_ws(raw, end if end is not None else len(head), len(raw))
            if close >= len(raw) or raw[close] != 0x5D:
                return None
        if raw.startswith(tail, close + 1) and _skip_ws(raw, close + 1 + len(tail), len(raw)) == len(raw):
            if items and ks[-1] != len(items):
                ks.append(len(items))
                offs.append(_rstrip(raw, close))
            return ks, offs, close
    return _layout_by_scan(raw, key, len(keys), len(body[key]))


def _layout_by_scan(raw: bytes, key: str, n_keys: int, n_items: int) -> tuple[array, array, int] | None:
    """`_layout` for JSON that is not compact: the brackets of the whole body are followed."""
    depth = seen_keys = 0
    current = None
    found = None
    for match in _TOKENS.finditer(raw):
        ch = raw[match.start()]
        if ch == 0x22:
            if depth == 1 and match.group(1) is not None:
                seen_keys += 1
                current = orjson.loads(raw[match.start() : match.start(1)])
        elif ch in (0x7B, 0x5B):
            depth += 1
            if depth == 2 and ch == 0x5B and current == key and found is None:
                found = match.end()
        else:
            depth -= 1
            if depth == 1 and ch == 0x5D and found is not None and not isinstance(found, tuple):
                found = (found, match.start())
    if not isinstance(found, tuple) or seen_keys != n_keys or depth != 0:
        return None
    open_, close = found
    ks, offs = _offsets(0), _offsets(open_)
    last = _rstrip(raw, close)
    ends, _ = _scan_elements(raw, open_, close + 1)
    if len(ends) != n_items or (ends and ends[-1] != last):
        return None  # an element whose end the brackets do not show (a number)
    return _offsets(*range(n_items + 1)), _offsets(open_, *ends), close


def _offsets(*values: int) -> array:
    return array("q", values)


# -- CRC-32 -------------------------------------------------------------------------------------
def _checkpoints(raw: bytes, known: array, valid: int) -> array:
    """Checkpoints of `raw`, reusing `known` (of a body whose first `valid` bytes are raw's)."""
    j = min(valid // CRC_STEP, len(known) - 1)
    crcs = known[: j + 1]
    view = memoryview(raw)
    crc = crcs[-1]
    pos = j * CRC_STEP
    while pos + CRC_STEP <= len(raw):
        crc = zlib.crc32(view[pos : pos + CRC_STEP], crc)
        pos += CRC_STEP
        crcs.append(crc)
    return crcs


def _crc_of(raw: bytes, crcs: array) -> int:
    done = (len(crcs) - 1) * CRC_STEP
    return zlib.crc32(memoryview(raw)[done:], crcs[-1])


def _crc(body: _Body) -> int:
    return _crc_of(body.raw, body.crcs)
