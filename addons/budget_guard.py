"""The budget guard: a mitmproxy addon that refuses requests once their budget is used up.

Added after LLMGateway (addons/server.py, `llmsm_addons`), so by the time its `request` hook runs
the gateway has attributed the exchange (session, label, client). The check is a look-up in memory
(analytics/budgets.py, BudgetBook): no database round trip on the request path. The budgets and
totals are those of the database the recorder writes (addons/recorder.py), which it is given.

Keeping the counters right:
- A background thread reloads every `interval` s (1 s) if the database file changed since the
  last reload (or the day did): it attaches the file read-only with a short timeout (busy: try
  again next second), reads `budget_status` and which of the exchanges seen in memory are
  already stored, and installs "database + not yet stored" as the counters. While the file is
  attached nobody can write it, so the two agree exactly. A new or removed budget therefore
  applies within about a second of `llmsm budget set/rm`; an idle gateway reads nothing.
  Neither does one whose file only this gateway changed (its writer's commits, every second
  while busy: events the book counts already), but for one read every `own_writes_reread` s
  (5 s) that catches a write the file's state took for ours (`store.changed_only_by_us`).
- Each finished exchange (flow.metadata[EVENT_META], set by the gateway for the hook it finished
  in) is added at once in the `response` / `error` / WebSocket hooks.

Team budgets (`llmsm budget set --team`, analytics/team/budgets.py) live in the team database:
with `--team-db` a second thread refreshes a second book of the same kind (`self.team`) from the
team's totals every `team_interval` s (5 s) plus this gateway's own charges not yet shipped,
and each request gets the worse of the two verdicts. A team database that cannot be reached
leaves the team book as it was last read (still counting this gateway's own use) and the local
budgets untouched; the failure is recorded for `llmsm team status`.

Over budget, the request is answered here with a 429 (402 for Codex CLI: budgets.refusal_status)
in the provider's own error format; it never reaches the provider, and the gateway records it like
any answer. A response already streaming is never cut: only new requests are checked. On a
Responses WebSocket (Codex) each `response.create` is checked the same way: over budget it is not
forwarded, and the client gets the refusal as an `error` event with its status and headers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from mitmproxy import ctx, http

from llmsm.addons.hooks import EVENT_META, META, WS_META, guarded
from llmsm.analytics import budgets
from llmsm.analytics.apis import TURN_APIS
from llmsm.analytics.budgets import BudgetBook, Charge, Verdict

if TYPE_CHECKING:
    from llmsm.addons.recorder import Recorder

log = logging.getLogger("llmsm.budget")

WARN_META = "llmsm_budget_warn"


class BudgetGuard:
    def __init__(self, recorder: Recorder, *, interval: float = 1.0, read_timeout: float = 0.25) -> None:
        self.recorder = recorder  # its database holds the budgets and the totals so far
        self.interval = interval
        self.read_timeout = read_timeout
        self.book = BudgetBook()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()  # "id:state" already logged (event loop and reload thread)
        self._warned_lock = threading.Lock()
        self._last_error: str | None = None
        # The book is up to date with this database on this day (budgets restart each day) ...
        self._loaded_key: tuple[Path, date] | None = None
        self._loaded_files: tuple = ()  # ... as its files were then (store.file_state)
        self._loaded_at = 0.0  # time.monotonic() of that read
        self.own_writes_reread = 5.0
        self.team = BudgetBook()  # team budgets (start_team); loaded stays False without a team database
        self.team.loaded = True
        self.team_interval = 5.0
        self._team_thread: threading.Thread | None = None
        self._team_url = ""
        self._team_con = None
        self._team_error: str | None = None
        self._projects: dict[str, str] = {}  # session id -> project, as the shipper saw them

    # -- lifecycle -----------------------------------------------------------------------
    def running(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="llmsm-budgets", daemon=True)
            self._thread.start()

    def done(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + self.read_timeout + 2)
            self._thread = None
        if self._team_thread is not None:
            self._team_thread.join(self.team_interval + 7)
            self._team_thread = None

    # -- team budgets --------------------------------------------------------------------
    def start_team(self, url: str, developer: str) -> None:
        """Refresh the team book from the team database `url` in a thread of its own."""
        self._team_url = url
        self.team.developer = developer
        self.team.loaded = False
        if self._team_thread is None:
            self._team_thread = threading.Thread(target=self._team_loop, name="llmsm-team-budgets", daemon=True)
            self._team_thread.start()

    def team_projects_seen(self, rows: list[dict]) -> None:
        """The shipper's batches: which project each session is in (for team project budgets)."""
        for r in rows:
            if r.get("session_id") and r.get("project"):
                self._projects[r["session_id"]] = r["project"]

    def _team_loop(self) -> None:
        while not self._stop.is_set():
            self.reload_team()
            self._stop.wait(self.team_interval)

    def reload_team(self) -> bool:
        from llmsm.analytics.team import budgets as team_budgets
        from llmsm.analytics.team.pg import connect
        from llmsm.analytics.team.ship import record_attempt, redact_url

        try:
            if self._team_con is None or self._team_con.closed:
                self._team_con = connect(self._team_url, connect_timeout=3)
            today = budgets.today()
            rows = team_budgets.used(self._team_con, today)
            in_db = team_budgets.stored_ids(self._team_con, self.team.pending_ids())
            self.team.install(rows, in_db, today)
        except Exception as exc:
            if self._team_con is not None:
                try:
                    self._team_con.close()
                except Exception:
                    pass
                self._team_con = None
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if msg != self._team_error:
                log.warning("team budgets not refreshed (local budgets still enforced): %s", msg)
                self._record_team(record_attempt, redact_url, msg)
            self._team_error = msg
            return False
        if self._team_error is not None:
            log.info("team budgets refreshed again")
            self._team_error = None
            self._record_team(record_attempt, redact_url, None)
        return True

    def _record_team(self, record_attempt, redact_url, error: str | None) -> None:
        db = self.recorder.db_path
        if db is not None:
            try:
                record_attempt(db, "budgets:" + redact_url(self._team_url), error=error)
            except Exception:
                pass

    def _check(self, session_id: str | None, label: str | None, client: str | None) -> Verdict | None:
        """The worse of the local and the team verdict."""
        local = self.book.check(session_id, label, client)
        if self.team.idle:
            return local
        team = self.team.check(session_id, label, client, project=self._projects.get(session_id or ""))
        if local is None or (team is not None and team.fraction > local.fraction):
            return team
        return local

    # -- the reload thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.reload()
            self._stop.wait(self.interval)

    def reload(self) -> bool:
        """One read of the database into the book. False when it could not be read (busy,
        missing): the book keeps what it had and counting goes on in memory."""
        from llmsm.analytics import store

        db_path = self.recorder.db_path  # None until the recorder is configured
        if db_path is None or not db_path.exists():
            return False
        key, files = (db_path, date.today()), store.file_state(db_path)
        if key == self._loaded_key:
            if files == self._loaded_files:
                return True  # nothing was stored or changed since: the book is up to date
            if (time.monotonic() - self._loaded_at < self.own_writes_reread
                    and store.changed_only_by_us(db_path, self._loaded_files)):
                return True  # only our writer stored anything since: events the book counts already
        try:
            with store.read_attached(db_path, timeout=self.read_timeout) as con:
                rows, in_db, day = budgets.load_for_guard(con, self.book.pending_ids())
                # still attached: no event can be stored in between
                self.book.install(rows, in_db, day)
        except Exception as exc:  # StoreError (busy, ...), duckdb.Error (a view missing in an older database), ...
            self._note_error(exc)
            return False
        self._loaded_key, self._loaded_files, self._loaded_at = key, files, time.monotonic()
        # a budget raised or back under its threshold may warn again later
        active = {f"{v.budget.id}:{v.state}" for v in self.book.snapshot() if v.state != "ok"}
        with self._warned_lock:
            self._warned &= active
        if self._last_error is not None:
            log.info("budgets readable again")
            self._last_error = None
        return True

    def _note_error(self, exc: BaseException) -> None:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if msg != self._last_error:
            log.debug("budgets not reloaded: %s", msg)
        self._last_error = msg

    # -- the check -----------------------------------------------------------------------
    @guarded
    def request(self, flow: http.HTTPFlow) -> None:
        ex = flow.metadata.get(META)
        if ex is None or flow.response is not None or getattr(ex, "answered_by_gateway", False):
            return
        if ex.api not in TURN_APIS:  # count_tokens and 'other' requests spend nothing: they pass
            return
        identity = ex.identity
        verdict = self._check(identity.session_id, identity.label, ex.client)
        if verdict is None:
            return
        if verdict.state == "exceeded":
            status, headers, body = budgets.error_response(ex.provider, verdict, ex.client)
            flow.response = http.Response.make(status, body, headers)
            log.info("refused a request: %s", budgets.exceeded_message(verdict))
        else:
            flow.metadata[WARN_META] = verdict
            self._log_warning(verdict)

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        verdict: Verdict | None = flow.metadata.get(WARN_META)
        if verdict is not None and flow.response is not None:
            flow.response.headers[budgets.BUDGET_HEADER] = f"warn; id={verdict.budget.id}; used={verdict.fraction:.0%}"

    # -- counting ------------------------------------------------------------------------
    @guarded
    def response(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    @guarded
    def error(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    @guarded
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        self._check_websocket_turn(flow)
        self._count(flow)

    def _check_websocket_turn(self, flow: http.HTTPFlow) -> None:
        """A `response.create` the client just sent, which the gateway has made its exchange."""
        ws = flow.metadata.get(WS_META)
        if (self.book.idle and self.team.idle) or ws is None or ws.current is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        if ws.opened_by is not message:  # not the message that opened the current turn
            return
        ex = ws.current
        verdict = self._check(ex.identity.session_id, ex.identity.label, ex.client)
        if verdict is None:
            return
        if verdict.state != "exceeded":
            self._log_warning(verdict)
            return
        message.drop()
        # Recorded like a refused HTTP request: its status, no usage and no estimate of any.
        ex.status_code = budgets.refusal_status(ex.client)
        frame = budgets.websocket_error_frame(verdict, ex.client)
        ctx.master.commands.call("inject.websocket", flow, True, frame, True)
        log.info("refused a request: %s", budgets.exceeded_message(verdict))

    @guarded
    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def _count(self, flow: http.HTTPFlow) -> None:
        if self.book.idle and self.team.idle:
            # No budget: nothing to add to. A budget set later is loaded with the database's
            # totals, and the events still on their way there are in it by the next reload.
            return
        event = flow.metadata.get(EVENT_META)
        if event is None:
            return
        if event.usage_source == "transcript":
            return
        charge = Charge.from_event(event)
        verdicts = self.book.record(charge) if not self.book.idle else []
        if not self.team.idle:
            project = self._projects.get(charge.session_id or "")
            verdicts += self.team.record(dataclasses.replace(charge, project=project) if project else charge)
        for verdict in verdicts:
            if verdict.state != "ok":
                self._log_warning(verdict)

    def _log_warning(self, verdict: Verdict) -> None:
        key = f"{verdict.budget.id}:{verdict.state}"
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        if verdict.state == "exceeded":
            log.warning("budget %s used up: %s", verdict.budget.id, budgets.exceeded_message(verdict))
        else:
            log.warning(
                "budget %s (%s) is %.0f%% used", verdict.budget.id, verdict.budget.describe(), verdict.fraction * 100
            )

