"""The status snapshot: keeps one small JSON file per session current next to the database
(`<db>.status/<session>.json`, analytics/status_files.py), which `llmsm statusline` reads
when Claude Code hands it a session: that command runs after every turn and cannot afford to
open the database (importing DuckDB alone takes ~130 ms).

It owns the `llmsm_status` option (on by default). Each finished event (the one the gateway
left in `flow.metadata[EVENT_META]`, and the side calls it finishes late) is appended to a
queue in the hook, nothing more; a thread of its own does the rest: it follows each session
(analytics/session_status.py `SessionState`) and each account's quota windows
(analytics/quota_share.py `ShareTracker`), reads once from the database what a session or an
account did before this gateway started (attached read-only, as the budget guard reads), and
writes the snapshots whose content changed, atomically. Every `refresh` seconds (10 s) it
re-evaluates the sessions seen within the last hour, so that a cache that went cold or errors
that aged show without a new request. Nothing here can slow or break traffic: the hooks only
append, and the thread logs its failures and goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http

from llmsm.addons.hooks import EVENT_META, guarded

if TYPE_CHECKING:
    from llmsm.addons.budget_guard import BudgetGuard
    from llmsm.addons.recorder import Recorder

log = logging.getLogger("llmsm.status")
UTC = timezone.utc
KEEP = timedelta(hours=6)  # sessions idle this long leave memory (their files stay)
# Sessions found by conversation continuity alone have no id a status bar could ask for (a
# hash of the history): they get no file, though their responses count in the quota shares.
UNASKED = frozenset({"conversation", "none"})


class StatusSnapshot:
    def __init__(self, recorder: Recorder, guard: BudgetGuard | None = None, *, refresh: float = 10.0,
                 min_gap: float = 0.5, read_timeout: float = 0.25) -> None:
        self.recorder = recorder  # the database whose `.status` folder the files go to
        self.guard = guard  # the budgets
        self.refresh = refresh
        # Between two passes: the events of a burst are written together. A lone event is written
        # at once; with many sessions busy, a pass every 0.5 s (each writes only the files whose
        # content changed) instead of 0.2 s costs the gateway a third of the CPU.
        self.min_gap = min_gap
        self.read_timeout = read_timeout
        self.enabled = True
        self._queue: deque = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time (the thread, or `flush`)
        self.sessions: dict[str, Any] = {}  # session id -> SessionState
        self.trackers: dict[tuple, Any] = {}  # (account, provider) -> ShareTracker
        self._tracker_seeded: dict[tuple, list[str] | None] = {}  # None: read; else ids fed before the read
        self._written: dict[str, dict] = {}  # what each file holds (without its time)
        self._last_refresh = 0.0
        self.windows: dict = {}  # (provider, model, long context) -> context window, as looked up
        self.conflicts: dict[str, list] = {}  # session id -> its file conflicts, as last read
        self._conflicts_state: tuple | None = None  # the database's state when they were read

    # -- mitmproxy -----------------------------------------------------------------------
    def load(self, loader) -> None:
        loader.add_option(
            "llmsm_status", bool, True,
            "Keep a small status file per session next to the database (<db>.status/), which "
            "`llmsm statusline` reads when an assistant gives it its session.",
        )

    def configure(self, updated) -> None:
        if "llmsm_status" in updated:
            self.enabled = bool(ctx.options.llmsm_status)

    def running(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="llmsm-status", daemon=True)
            self._thread.start()

    def done(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.flush()

    def put(self, event) -> None:
        """Queue one finished event (also the gateway's `late_event`)."""
        if self.enabled and event is not None and event.session_id:
            self._queue.append(event)
            self._wake.set()

    @guarded
    def _seen(self, flow: http.HTTPFlow) -> None:
        self.put(flow.metadata.get(EVENT_META))

    response = error = websocket_message = websocket_end = _seen

    # -- the thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.refresh)
            self._wake.clear()
            self.flush()
            self._stop.wait(self.min_gap)

    def flush(self, now: datetime | None = None) -> None:
        """One pass: take the queued events, write the snapshots that changed."""
        try:
            with self._lock:
                self._pass(now or datetime.now(UTC))
        except Exception:
            log.exception("llmsm: the status snapshot failed; traffic continues unaffected")

    def _pass(self, now: datetime) -> None:
        from llmsm.analytics.quota_share import WINDOW_HEADER_PREFIXES, ShareTracker, observed_at
        from llmsm.analytics.session_status import SessionState

        db = self.recorder.db_path
        if db is None:
            return
        dirty: set[str] = set()
        quota_moved: set = set()  # accounts whose windows moved: their other sessions' shares change too
        while self._queue:
            e = self._queue.popleft()
            st = self.sessions.get(e.session_id)
            if st is None and e.session_source not in UNASKED:
                st = self.sessions[e.session_id] = SessionState(e.session_id)
            if st is not None:
                st.add(e)
                dirty.add(e.session_id)
            if e.ratelimit and e.api != "other" and any(k.startswith(WINDOW_HEADER_PREFIXES) for k in e.ratelimit):
                key = (e.account, e.provider)
                tracker = self.trackers.get(key)
                if tracker is None:
                    tracker = self.trackers[key] = ShareTracker()
                    self._tracker_seeded[key] = []
                pending = self._tracker_seeded.get(key)
                if pending is not None:
                    pending.append(e.id)
                started = e.started_at.astimezone(UTC)
                ended = e.ended_at.astimezone(UTC) if e.ended_at else None
                tracker.add(e.session_id, e.ratelimit, observed_at(started, ended, e.ttft_ms), started, ended)
                quota_moved.add(e.account)
        if quota_moved:
            hour = now - timedelta(hours=1)
            dirty.update(sid for sid, s in self.sessions.items()
                         if s.account in quota_moved and s.last_seen is not None and s.last_seen >= hour)
        self._seed(db, now)
        mono = now.timestamp()
        if mono - self._last_refresh >= self.refresh:
            self._last_refresh = mono
            hour = now - timedelta(hours=1)
            dirty.update(sid for sid, s in self.sessions.items() if s.last_seen is not None and s.last_seen >= hour)
            for sid in [sid for sid, s in self.sessions.items() if s.last_seen is None or now - s.last_seen > KEEP]:
                del self.sessions[sid]
                self._written.pop(sid, None)
            self._read_conflicts(db, now)
        self._write(db, dirty, now)

    def _seed(self, db, now: datetime) -> None:
        """Read, once, what the database has of new sessions and accounts."""
        from llmsm.analytics import store
        from llmsm.analytics.quota_share import feed, tracker_rows
        from llmsm.analytics.session_status import seed

        sessions = [s for s in self.sessions.values() if not s.seeded]
        accounts = [k for k, v in self._tracker_seeded.items() if v is not None]
        if not sessions and not accounts:
            return
        if not db.exists():  # nothing stored yet: nothing came before
            for s in sessions:
                s.seeded = True
                s.unseeded_ids.clear()
            for k in accounts:
                self._tracker_seeded[k] = None
            return
        try:
            with store.read_attached(db, timeout=self.read_timeout) as con:
                seed(sessions, con, now)
                for k in accounts:
                    rows = tracker_rows(con, now, account=k[0], exclude=self._tracker_seeded[k])
                    feed(self.trackers, [r for r in rows if r[2] == k[1]])
                    self._tracker_seeded[k] = None
        except Exception as exc:  # busy, missing: again on the next pass
            log.debug("status snapshot: the database was not read (%s)", exc)

    def _read_conflicts(self, db, now: datetime) -> None:
        """The file conflicts (analytics/collisions.py, the query `llmsm health` runs), read on a
        refresh when two sessions or more were active within the conflict window and the
        database changed since the last read; none otherwise."""
        from llmsm.analytics import store
        from llmsm.analytics.collisions import find_conflicts
        from llmsm.analytics.health_rules import DEFAULT_THRESHOLDS

        since = now - timedelta(minutes=DEFAULT_THRESHOLDS.conflict_active_min)
        if sum(1 for s in self.sessions.values() if s.last_seen is not None and s.last_seen >= since) < 2:
            self.conflicts = {}
            return
        if not db.exists():
            return
        state = store.file_state(db)
        if state == self._conflicts_state:
            return
        try:
            with store.read_attached(db, timeout=self.read_timeout) as con:
                self.conflicts = find_conflicts(con, now)
        except Exception as exc:  # busy, an older database: the next refresh tries again
            log.debug("status snapshot: file conflicts not read (%s)", exc)
            return
        self._conflicts_state = state

    def _write(self, db, dirty: set[str], now: datetime) -> None:
        from llmsm.analytics.session_status import snapshot
        from llmsm.analytics.status_files import snapshot_dir, write_snapshot

        directory = snapshot_dir(db)
        shares: dict[tuple, list] = {}  # per tracker, once per pass
        for sid in dirty:
            st = self.sessions.get(sid)
            if st is None or not st.seeded:  # not yet what the database had: no half totals on screen
                continue
            budget = None
            if self.guard is not None and not self.guard.book.idle:
                budget = self.guard.book.check(sid, st.label, st.client, include_ok=True)
            key = (st.account, st.provider)
            if key not in shares:
                tracker = self.trackers.get(key)
                shares[key] = tracker.shares(now) if tracker is not None else []
            data = snapshot(st, now, budget=budget, quota=shares[key], conflicts=self.conflicts.get(sid),
                            windows_seen=self.windows)
            same = {k: v for k, v in data.items() if k != "updated_at"}
            if self._written.get(sid) == same:
                continue
            try:
                write_snapshot(directory, data)
            except OSError as exc:
                log.debug("status snapshot not written: %s", exc)
                continue
            self._written[sid] = same
