"""What one session's status line says, kept by the gateway (addons/status_snapshot.py) and
written as a small JSON snapshot (analytics/status_files.py) that `llmsm statusline` reads.

`SessionState` follows one session from its events (and, once, from the database: what it did
before this gateway started); `snapshot()` turns it into the file's content as of a moment:

- health: the status line's quick check (analytics/statusline.py `quick_check`, the rules of
  analytics/health_rules.py that `llmsm health` decides by) over the session's recent turns
  (the last 10 of the last hour), with its context fill (whole prompt of the last main turn /
  the model's context window), and its file conflicts when the gateway read them (the
  snapshot thread queries them, as the global line does, when two sessions or more are active);
- requests, tokens and cost as `counted_events()` counts them (API calls, not `other`), with
  the number of requests whose cost is unknown (`unpriced`: never a silent zero);
- the burn rate as the dashboard measures it (analytics/dashboard.py `BURN_MINUTES`: the
  cost and tokens of the last 10 minutes / 10);
- the tightest budget that applies (the budget guard's book), and the account's quota windows
  with this session's share of each (analytics/quota_share.py).

No content, no keys: numbers, model names, the session's label and client, and the provider's
error type and message of a recent failure (as the `events` table has them).
"""

from __future__ import annotations

import bisect
from collections import deque
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from types import SimpleNamespace
from typing import Any

from .apis import TURN_APIS
from .dashboard import BURN_MINUTES
from .health_rules import DEFAULT_THRESHOLDS, fill_verdict, has_usage, main_thread, prompt_tokens
from .live import DEFAULT_WINDOW_MINUTES
from .quota_share import session_shares
from .status_files import SNAPSHOT_VERSION
from .statusline import _TURN_FIELDS, RecentTurn, _context_windows, _window_key, quick_check

__all__ = ["SEED_SQL", "SEED_TURNS_SQL", "SessionState", "seed", "snapshot"]

UTC = timezone.utc
_TURN_ONLY = _TURN_FIELDS  # what a turn keeps (RecentTurn minus the session's activity)
_STARTED = _TURN_ONLY.index("started_at")
# (the snapshot thread adds every event the gateway finishes: one C call, not a loop per field)
_turn_of = attrgetter(*_TURN_ONLY)
_started_of = itemgetter(_STARTED)
_end_of = itemgetter(0)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _tokens(e: Any) -> int:
    return (e.input_tokens or 0) + (e.output_tokens or 0) + (e.cache_read_tokens or 0) + (e.cache_write_tokens or 0)


class SessionState:
    """One session as the gateway saw it (plus, after `seed`, what the database had before)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.label: str | None = None
        self.client: str | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.account: str | None = None
        self.turns: list[tuple] = []  # the recent turns (tuples of _TURN_ONLY), by started_at
        self.requests = 0
        self.tokens = 0
        self.cost = 0.0
        self.unpriced = 0  # requests with usage but no known price
        self.last_seen: datetime | None = None  # the latest end of any of its exchanges
        self.last_start: datetime | None = None
        self.last_end: datetime | None = None  # the end of the exchange that started last
        # (end, cost, tokens) of recent requests, by end, and their sums: a snapshot of a busy
        # session (thousands in the window) reads the sums instead of adding them up again
        self.burn: deque[tuple[datetime, float, int]] = deque()
        self.burn_cost = 0.0
        self.burn_tokens = 0
        self.seeded = False
        self.unseeded_ids: set[str] = set()  # events counted before the database was read

    def add(self, e: Any) -> None:
        """One finished exchange (an ExchangeEvent, or a row read by name)."""
        started = _utc(e.started_at)
        end = _utc(e.ended_at) or started
        if not self.seeded:
            self.unseeded_ids.add(e.id)
        if e.label:
            self.label = e.label
        if e.client and (self.client is None or e.api != "other"):
            self.client = e.client
        if self.last_seen is None or end > self.last_seen:
            self.last_seen = end
        if self.last_start is None or started >= self.last_start:
            self.last_start, self.last_end = started, end
        if e.api == "other" or getattr(e, "usage_source", None) == "transcript":
            return
        self.requests += 1
        tokens = _tokens(e)
        self.tokens += tokens
        if e.cost_usd is not None:
            self.cost += e.cost_usd
        elif tokens:
            self.unpriced += 1
        spent = (end, e.cost_usd or 0.0, tokens)
        if not self.burn or end >= self.burn[-1][0]:
            self.burn.append(spent)
        else:  # finished before one seen earlier
            self.burn.insert(bisect.bisect_right(self.burn, end, key=_end_of), spent)
        self.burn_cost += spent[1]
        self.burn_tokens += tokens
        if e.provider:
            self.provider = e.provider
        if e.account:
            self.account = e.account
        if e.api in TURN_APIS:
            self.model = e.model or e.requested_model or self.model
            try:
                turn = _turn_of(e)
            except AttributeError:  # a row read by name that lacks a field
                turn = tuple(getattr(e, f, None) for f in _TURN_ONLY)
            turn = (*turn[:_STARTED], started, *turn[_STARTED + 1 :])
            self.turns.insert(bisect.bisect_right(self.turns, started, key=_started_of), turn)
            del self.turns[: -DEFAULT_THRESHOLDS.recent_requests]

    def add_totals(self, requests: int, tokens: int, cost: float | None, unpriced: int) -> None:
        """What the database had of the session before (the first query of `SEED_SQL`)."""
        self.requests += int(requests or 0)
        self.tokens += int(tokens or 0)
        self.cost += float(cost or 0.0)
        self.unpriced += int(unpriced or 0)

    @property
    def name(self) -> str:
        return self.label or self.session_id[:12]


# What `seed` reads of the sessions the gateway meets for the first time, leaving out the
# events it has already counted ($ids): their totals as counted_events() counts them, and the
# events of the last hour (recent turns, latest activity, the burn window). One pass of the
# snapshot thread reads all its new sessions with these two queries.
SEED_SQL = """
SELECT session_id, count(*) AS requests, coalesce(sum(total_tokens), 0) AS tokens, sum(cost_usd) AS cost,
       count(*) FILTER (WHERE cost_usd IS NULL AND total_tokens > 0) AS unpriced
FROM counted_events() WHERE session_id IN (SELECT unnest($sids)) AND NOT list_contains($ids, id)
GROUP BY session_id
"""
SEED_TURNS_SQL = f"""
SELECT id, api, usage_source, cost_usd, output_tokens, ended_at, account, {", ".join(f for f in _TURN_ONLY)}
FROM events
WHERE session_id IN (SELECT unnest($sids)) AND NOT list_contains($ids, id) AND started_at >= $since
ORDER BY started_at
"""


def seed(states: list[SessionState], con: Any, now: datetime) -> None:
    """Read what the database has of these sessions (a connection that no writer can change
    meanwhile): totals of all time, the events of the last hour as if seen now."""
    if not states:
        return
    by_id = {s.session_id: s for s in states}
    params = {"sids": sorted(by_id), "ids": sorted(i for s in states for i in s.unseeded_ids)}
    totals = {r[0]: r[1:] for r in con.execute(SEED_SQL, params).fetchall()}
    cur = con.execute(SEED_TURNS_SQL, params | {"since": now - timedelta(minutes=DEFAULT_WINDOW_MINUTES)})
    names = [d[0] for d in cur.description]
    recent = [SimpleNamespace(**dict(zip(names, r))) for r in cur.fetchall()]
    kept = {sid: (s.requests, s.tokens, s.cost, s.unpriced) for sid, s in by_id.items()}
    for s in states:
        s.seeded = True  # from now on nothing is counted twice
    for e in recent:
        by_id[e.session_id].add(e)
    # the totals of all time come from the first query (which includes the recent rows)
    for sid, s in by_id.items():
        s.requests, s.tokens, s.cost, s.unpriced = kept[sid]
        if sid in totals:
            s.add_totals(*totals[sid])
        s.unseeded_ids.clear()


def snapshot(state: SessionState, now: datetime, *, budget: Any = None, quota: list[dict] | None = None,
             conflicts: list[dict] | None = None, windows_seen: dict | None = None) -> dict:
    """The snapshot's content as of `now`: see the module's docstring. `budget` is the budget
    guard's Verdict for the session (or None), `quota` the account's `ShareTracker.shares()`,
    `conflicts` the session's file conflicts (collisions.find_conflicts) when known;
    `windows_seen` a dict the caller keeps of the context windows already looked up."""
    since = now - timedelta(minutes=DEFAULT_WINDOW_MINUTES)
    burn_from = now - timedelta(minutes=BURN_MINUTES)
    burn = state.burn
    while burn and burn[0][0] <= burn_from - timedelta(minutes=1):
        _, cost, tokens = burn.popleft()
        state.burn_cost -= cost
        state.burn_tokens -= tokens
    if not burn:
        state.burn_cost = 0.0  # no residue of the additions and subtractions
    burn_cost, burn_tokens = state.burn_cost, state.burn_tokens
    for end, cost, tokens in burn:  # (kept a minute longer than the window: a `now` a little earlier)
        if end > burn_from:
            break
        burn_cost -= cost
        burn_tokens -= tokens
    health = ctx_tokens = ctx_window = ctx_level = None
    rows = [RecentTurn(*t, state.last_seen, state.last_end) for t in state.turns if t[_STARTED] >= since]
    if rows:
        main = [r for r in main_thread(rows) if has_usage(r)]
        key = _window_key(rows, main[-1]) if main else None
        seen = windows_seen if windows_seen is not None else {}
        if key is not None and key not in seen:
            try:
                seen.update(_context_windows({key}))
            except Exception:  # noqa: BLE001 - the line without a context window rather than none
                pass
        windows = {key: seen[key]} if key in seen else {}
        q = quick_check(rows, now, windows, conflicts=conflicts)
        health = q._asdict()
        if main:
            ctx_tokens = prompt_tokens(main[-1])
            ctx_window = windows.get(key)
        if q.context_fill is not None:  # the colour of the fill: its severity, when warn or critical
            verdict = fill_verdict(q.context_fill)
            ctx_level = verdict[0] if verdict is not None and verdict[0] != "info" else None
    out: dict[str, Any] = {
        "v": SNAPSHOT_VERSION, "session_id": state.session_id, "name": state.name, "label": state.label,
        "client": state.client, "model": state.model, "provider": state.provider,
        "updated_at": now.isoformat(), "last_seen": state.last_seen.isoformat() if state.last_seen else None,
        "health": health, "context_tokens": ctx_tokens, "context_window": ctx_window, "context_level": ctx_level,
        "requests": state.requests, "tokens": state.tokens, "cost_usd": round(state.cost, 6),
        "unpriced": state.unpriced,
        "burn_usd_per_min": round(max(burn_cost, 0.0) / BURN_MINUTES, 6),
        "burn_tokens_per_min": round(burn_tokens / BURN_MINUTES, 1),
        "budget": None, "quota": [],
    }
    if budget is not None:
        b = budget.budget
        out["budget"] = {"id": b.id, "what": b.describe(), "kind": budget.kind, "used": budget.used,
                         "limit": budget.limit, "pct": round(budget.fraction * 100, 1), "state": budget.state}
    if quota:
        mine = [w for w in session_shares(quota, state.session_id) if not w["stale"]]
        mine.sort(key=lambda w: -w["used_pct"])
        out["quota"] = [{"window": w["window"], "source": w["source"], "used_pct": w["used_pct"],
                         "resets_at": w["resets_at"].isoformat() if w["resets_at"] else None,
                         "share_pct": w["share_pct"], "estimated": w["estimated"]} for w in mine]
    return out

