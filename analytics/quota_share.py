"""Each session's share of the quota windows: "which session ate my 5-hour window".

Subscription traffic reports how much of a window is used on every response (Anthropic's
`anthropic-ratelimit-unified-<w>-utilization`, Codex's `x-codex-*-used-percent`; read by
quota.parse_headers). llmsm sees those headers on every response of every session of an
account, so each change between two consecutive responses of an account is attributed to the
session whose request the later response answered:

- responses are ordered by when their headers arrived (`started_at + ttft_ms`, else `ended_at`);
- a change is `max(0, used now - used before)` (a rolling window can lose a little: never a
  negative share);
- the first response after the window reset (its time is past the previous response's reset
  time) starts a new window, and its whole utilization is its session's;
- what was used before llmsm's first response of a window is `baseline_pct`, nobody's;
- a change is an **estimate** when its request overlapped a request of another session of the
  same account (either may have used it): `estimated` on the session, `estimated_pct` the part.

Use by other clients of the same account (claude.ai, another machine) lands in the change of
the next response llmsm sees, as for any observer of these headers: the shares say what llmsm
saw, in percentage points of the window. Per-minute API rate limits (`anthropic-ratelimit-
tokens-*`, `x-ratelimit-*`) are not windows one fills over hours and are left out.

Pure: `ShareTracker` takes responses in any order (the gateway sees them as they end, the
status snapshot keeps one per account); `quota_shares(con)` reads the database (the last 7 days)
for `llmsm quota --by session`, `--json` and the session screen. Standard library only at import.
"""

from __future__ import annotations

import bisect
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

__all__ = ["SHARED_SOURCES", "WINDOW_HEADER_PREFIXES", "ShareTracker", "feed", "observed_at", "quota_shares", "session_shares", "tracker_rows"]

UTC = timezone.utc
SHARED_SOURCES = frozenset({"anthropic-unified", "codex"})  # windows one fills over hours or days
WINDOW_HEADER_PREFIXES = ("anthropic-ratelimit-unified-", "x-codex-")  # the headers those come in
MAX_REQUEST = timedelta(minutes=30)  # overlaps are looked for among responses this close in time
LOOKBACK = timedelta(days=7)  # the longest usual window


def observed_at(started_at: datetime, ended_at: datetime | None, ttft_ms: float | None) -> datetime:
    """When a response's headers arrived: its first body byte, else its end, else its start."""
    if ttft_ms is not None:
        return started_at + timedelta(milliseconds=float(ttft_ms))
    return ended_at or started_at


class _Obs:
    __slots__ = ("at", "sid", "pct", "resets_at", "start", "end", "delta", "overlap")

    def __init__(self, at, sid, pct, resets_at, start, end) -> None:
        self.at, self.sid, self.pct, self.resets_at, self.start, self.end = at, sid, pct, resets_at, start, end
        self.delta = 0.0
        self.overlap = False


def _reset_between(prev: _Obs, cur: _Obs) -> bool:
    return prev.resets_at is not None and cur.at >= prev.resets_at


class _Window:
    """One quota window of one account: its responses since it last reset, in order."""

    def __init__(self) -> None:
        self.obs: list[_Obs] = []
        self.keys: list[datetime] = []  # obs[i].at, for bisect
        self.from_reset = False  # the first response came after a reset llmsm saw: nothing is baseline
        self.began: datetime | None = None  # ... then: when the previous window reset

    def _delta(self, i: int) -> float:
        o = self.obs[i]
        if i == 0:
            return o.pct if self.from_reset else 0.0
        return max(0.0, o.pct - self.obs[i - 1].pct)

    def add(self, o: _Obs) -> None:
        obs = self.obs
        if obs and o.at >= obs[-1].at and _reset_between(obs[-1], o):
            self.began = obs[-1].resets_at
            obs.clear()
            self.keys.clear()
            self.from_reset = True
        elif obs and o.at < obs[0].at and self.from_reset and self.began is not None and o.at < self.began:
            return  # before the reset this window began with: the previous window's
        j = bisect.bisect_right(self.keys, o.at)
        obs.insert(j, o)
        self.keys.insert(j, o.at)
        for k in (j, j + 1):
            if k < len(obs):
                obs[k].delta = self._delta(k)
        # overlaps with another session's request (either way round)
        lo = bisect.bisect_left(self.keys, o.start - MAX_REQUEST)
        hi = bisect.bisect_right(self.keys, o.end + MAX_REQUEST)
        for k in range(lo, hi):
            other = obs[k]
            if other.sid != o.sid and other.start < o.end and o.start < other.end:
                other.overlap = o.overlap = True

    def latest(self) -> _Obs | None:
        return self.obs[-1] if self.obs else None


class ShareTracker:
    """The shares of one account's quota windows, fed one response at a time (any order)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str], _Window] = {}

    def add(self, session_id: str | None, headers: Mapping[str, str] | None, at: datetime,
            started_at: datetime | None = None, ended_at: datetime | None = None) -> None:
        """One response: its session, its rate-limit headers, when they arrived (`observed_at`),
        and its request's start and end (for overlaps)."""
        if not headers:
            return
        from .quota import parse_headers

        start = started_at or at
        end = ended_at or at
        for w in parse_headers(headers, at):
            if w.source not in SHARED_SOURCES or w.used_pct is None:
                continue
            self.windows.setdefault((w.source, w.window), _Window()).add(
                _Obs(at, session_id, float(w.used_pct), w.resets_at, start, end))

    def shares(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Per window: source, window, used_pct (latest), resets_at, observed_at, stale (reset
        since), baseline_pct (used before llmsm's first response of the window),
        attributed_pct, and `sessions`: session_id, share_pct, requests, estimated,
        estimated_pct (the part of share_pct whose requests overlapped another session's),
        largest share first."""
        now = now or datetime.now(UTC)
        out = []
        for (source, name), win in self.windows.items():
            last = win.latest()
            if last is None:
                continue
            per: dict[Any, dict[str, Any]] = {}
            for o in win.obs:
                s = per.setdefault(o.sid, {"session_id": o.sid, "share_pct": 0.0, "requests": 0,
                                           "estimated": False, "estimated_pct": 0.0})
                s["requests"] += 1
                s["share_pct"] += o.delta
                if o.overlap and o.delta > 0:
                    s["estimated"] = True
                    s["estimated_pct"] += o.delta
            sessions = sorted(per.values(), key=lambda s: (-s["share_pct"], str(s["session_id"])))
            for s in sessions:
                s["share_pct"] = round(s["share_pct"], 2)
                s["estimated_pct"] = round(s["estimated_pct"], 2)
            baseline = 0.0 if win.from_reset else win.obs[0].pct
            out.append({
                "source": source, "window": name, "used_pct": round(last.pct, 2), "resets_at": last.resets_at,
                "observed_at": last.at, "stale": bool(last.resets_at is not None and last.resets_at < now),
                "baseline_pct": round(baseline, 2),
                "attributed_pct": round(sum(s["share_pct"] for s in sessions), 2),
                "sessions": sessions,
            })
        out.sort(key=lambda w: (w["source"], -w["used_pct"], w["window"]))
        return out


def session_shares(windows: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    """One session's part of `ShareTracker.shares()` / `quota_shares()`: per window, the window's
    fields and the session's share_pct, estimated, estimated_pct (0 when it used none)."""
    out = []
    for w in windows:
        mine = next((s for s in w["sessions"] if s["session_id"] == session_id), None)
        out.append({k: v for k, v in w.items() if k != "sessions"} | {
            "share_pct": mine["share_pct"] if mine else 0.0,
            "estimated": bool(mine and mine["estimated"]),
            "estimated_pct": mine["estimated_pct"] if mine else 0.0,
        })
    return out


_SQL = """
SELECT id, account, provider, session_id, started_at, ended_at, ttft_ms, ratelimit::VARCHAR AS headers
FROM events
WHERE ratelimit IS NOT NULL AND started_at >= $since AND started_at <= $now
  AND (ratelimit::VARCHAR LIKE '%unified-%' OR ratelimit::VARCHAR LIKE '%x-codex-%')
"""
_NAMES_SQL = """
SELECT session_id, arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label,
       arg_max(client, started_at) FILTER (WHERE client IS NOT NULL) AS client
FROM events WHERE session_id IN (SELECT unnest($ids)) GROUP BY session_id
"""


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def tracker_rows(con: Any, now: datetime, account: str | None = None, exclude: list[str] | None = None) -> list[tuple]:
    """The responses of the last 7 days that carried window headers (all accounts, or one:
    `account`, leaving out the event ids `exclude`), for `feed`."""
    sql, params = _SQL, {"since": now - LOOKBACK, "now": now}
    if account is not None:
        sql += " AND account = $account AND NOT list_contains($exclude, id)"
        params |= {"account": account, "exclude": exclude or []}
    return con.execute(sql, params).fetchall()


def feed(trackers: dict[tuple, ShareTracker], rows: list[tuple]) -> None:
    """Add `tracker_rows` to the trackers of their (account, provider)."""
    for _id, account, provider, sid, started, ended, ttft, headers in rows:
        try:
            h = json.loads(headers)
        except (TypeError, ValueError):
            continue
        if not isinstance(h, dict):
            continue
        started = _utc(started)
        ended = _utc(ended) if ended is not None else None
        trackers.setdefault((account, provider), ShareTracker()).add(
            sid, {str(k): str(v) for k, v in h.items() if v is not None}, observed_at(started, ended, ttft), started, ended)


_SESSION_ACCOUNTS_SQL = """
SELECT DISTINCT account FROM events
WHERE session_id = $sid AND ratelimit IS NOT NULL AND started_at >= $since AND started_at <= $now
"""


def quota_shares(con: Any, now: datetime | None = None, *, session_id: str | None = None) -> list[dict[str, Any]]:
    """The current quota windows of every account with each session's share (the dicts of
    `ShareTracker.shares()` plus account and provider; each session also has label and client),
    from the responses of the last 7 days. Most used window first per account. With
    `session_id`: only the accounts that session used (its screen refreshes every second)."""
    now = _utc(now) if now is not None else datetime.now(UTC)
    trackers: dict[tuple, ShareTracker] = {}
    accounts = None
    if session_id is not None:
        accounts = [r[0] for r in con.execute(_SESSION_ACCOUNTS_SQL, {"sid": session_id, "since": now - LOOKBACK, "now": now}).fetchall()]
    if accounts is None or None in accounts:  # a response without an account: tracker_rows cannot pick it out
        feed(trackers, tracker_rows(con, now))
    else:
        for account in accounts:
            feed(trackers, tracker_rows(con, now, account=account))
    out = []
    for (account, provider), tracker in trackers.items():
        for w in tracker.shares(now):
            out.append({"account": account, "provider": provider, **w})
    ids = sorted({s["session_id"] for w in out for s in w["sessions"] if s["session_id"] is not None})
    names = {r[0]: (r[1], r[2]) for r in con.execute(_NAMES_SQL, {"ids": ids}).fetchall()} if ids else {}
    for w in out:
        for s in w["sessions"]:
            s["label"], s["client"] = names.get(s["session_id"], (None, None))
    out.sort(key=lambda w: (w["account"] is None, w["account"] or "", w["provider"] or "", -w["used_pct"], w["window"]))
    return out
