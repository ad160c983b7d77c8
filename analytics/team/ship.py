"""The shipper: sends every locally stored event to a target (a team PostgreSQL, an OTLP
collector) exactly once, in the background. No mitmproxy import.

Order and position. `store.insert_events` gives each newly stored event the next number of a
sequence (`event_order.seq`, migration m006) in the insert's own transaction, and only one write
transaction holds the file at a time, so the numbers become visible in the order they are
taken: a reader that has seen seq N has seen every committed event below N. (Numbers of a
rolled-back insert are skipped, which is harmless: the position is a number, not a count.)
`started_at` is no such order: a long stream or a journal recovered after SIGKILL stores an
event long after it started.

Exactly once. Each target has a row in `ship_positions` (local database). A batch is read from
position P (seq > P, in seq order), sent, and only once the target has taken it is the position
set to the batch's last seq. A crash between the two sends the batch again: the team database
inserts with ON CONFLICT (id, started_at) DO NOTHING and updates its rollup only from the rows it
really inserted; an OTLP span keeps its ids (derived from the event id). So nothing is skipped
(the position only moves past what the target has), nothing counts twice.

Never in the gateway's way: the loop runs in a thread of its own; reading a batch attaches the
database through the writer's own DuckDB instance for a few milliseconds (as the budget guard
does); a target that is away costs retries with backoff (up to `max_delay`), never a wait on
the event loop. An idle gateway reads nothing (the file's state is compared first).
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from llmsm.analytics.events import EVENT_COLUMNS

if TYPE_CHECKING:
    from llmsm.analytics import store

log = logging.getLogger("llmsm.ship")

CONTENT_COLUMNS = frozenset({"digest"})  # what stays on the machine unless --team-share-content

# The project of an event: the folder name of its session's latest known working directory (from
# the session digest, else from `llmsm run`), never the path itself.
_PROJECT_SQL = r"""
regexp_extract(rtrim(replace(coalesce(
    (SELECT arg_max(json_extract_string(d.digest, '$.project.cwd'), d.started_at) FROM events d
     WHERE d.session_id = e.session_id AND json_extract_string(d.digest, '$.project.cwd') IS NOT NULL),
    (SELECT arg_max(r.cwd, r.started_at) FROM runs r WHERE r.session_id = e.session_id)
), '\', '/'), '/'), '[^/]+$')"""

# Whether the reports count the row (analytics/reports.py's rule: 'other' never; a transcript
# row only when no wire row has its message id), decided here where both rows are.
_COUNTED_SQL = """
e.api <> 'other' AND (e.usage_source IS DISTINCT FROM 'transcript' OR e.message_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM events w WHERE w.message_id = e.message_id AND w.usage_source IS DISTINCT FROM 'transcript'))"""


def default_developer() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def redact_url(url: str) -> str:
    """The URL without its password: how a target is named in ship_positions and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<bad url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else netloc))


@dataclass(frozen=True)
class Identity:
    developer: str
    host: str
    share_content: bool = False


@dataclass
class Batch:
    rows: list[dict[str, Any]]  # local columns (content columns None unless shared) + project, counted
    last_seq: int


def read_batch(db: Path, after: int, limit: int, *, share_content: bool, timeout: float = 0.25) -> Batch | None:
    """Up to `limit` events stored after seq `after`, in order; None when there are none."""
    cols = ", ".join(
        f"e.{c}" if share_content or c not in CONTENT_COLUMNS else f"NULL AS {c}" for c in EVENT_COLUMNS
    )
    sql = f"""
        WITH o AS (SELECT id, seq FROM event_order WHERE seq > $after ORDER BY seq LIMIT $limit)
        SELECT {cols}, {_PROJECT_SQL} AS project, {_COUNTED_SQL} AS counted, o.seq AS _seq
        FROM o JOIN events e USING (id) ORDER BY o.seq"""
    from llmsm.analytics import store  # here, not at the top: a team report must not load DuckDB

    with store.read_attached(db, timeout=timeout) as con:
        cur = con.execute(sql, {"after": after, "limit": limit})
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        if not rows:
            # Maybe only deleted events (pruned) lie ahead: move past them.
            top = con.execute("SELECT max(seq) FROM event_order WHERE seq > $after AND seq <= $after + $limit",
                              {"after": after, "limit": limit}).fetchone()[0]
            return Batch([], int(top)) if top is not None else None
    last = int(rows[-1]["_seq"])
    for r in rows:
        del r["_seq"]
        r["project"] = r["project"] or None
    return Batch(rows, last)


def backlog(con: Any, target: str) -> dict[str, Any]:
    """What `llmsm team status` says of one target, from an open (read-only) local connection."""
    row = con.execute(
        "SELECT position, shipped, last_success_at, last_attempt_at, last_error, last_error_at FROM ship_positions WHERE target = ?",
        [target],
    ).fetchone()
    position = int(row[0]) if row else 0
    behind = con.execute("SELECT count(*) FROM event_order o JOIN events e USING (id) WHERE o.seq > ?", [position]).fetchone()[0]
    oldest = con.execute(
        "SELECT min(e.started_at) FROM event_order o JOIN events e USING (id) WHERE o.seq > ?", [position]
    ).fetchone()[0]
    return {
        "target": target,
        "position": position,
        "shipped": int(row[1]) if row else 0,
        "behind": int(behind),
        "oldest_unshipped": oldest,
        "last_success_at": row[2] if row else None,
        "last_attempt_at": row[3] if row else None,
        "last_error": row[4] if row else None,
        "last_error_at": row[5] if row else None,
    }


def positions(con: Any) -> list[str]:
    return [r[0] for r in con.execute("SELECT target FROM ship_positions ORDER BY target").fetchall()]


def _load_position(db: Path, target: str, timeout: float) -> int:
    from llmsm.analytics import store

    with store.write_attached(db, timeout=timeout) as con:
        con.execute("INSERT INTO ship_positions (target) VALUES (?) ON CONFLICT DO NOTHING", [target])
        return int(con.execute("SELECT position FROM ship_positions WHERE target = ?", [target]).fetchone()[0])


def record_attempt(db: Path, target: str, timeout: float = 2.0, *, position: int | None = None, shipped: int = 0, error: str | None = None) -> None:
    from llmsm.analytics import store

    now = datetime.now(timezone.utc)
    with store.write_attached(db, timeout=timeout) as con:
        con.execute("INSERT INTO ship_positions (target) VALUES (?) ON CONFLICT DO NOTHING", [target])
        if position is not None:
            con.execute(
                "UPDATE ship_positions SET position = greatest(position, ?), shipped = shipped + ?, last_success_at = ?, "
                "last_attempt_at = ?, last_error = NULL WHERE target = ?",
                [position, shipped, now, now, target],
            )
        elif error is not None:
            con.execute(
                "UPDATE ship_positions SET last_attempt_at = ?, last_error = ?, last_error_at = ? WHERE target = ?",
                [now, error, now, target],
            )
        else:  # a target without a position (the team budgets' refresh) works again
            con.execute(
                "UPDATE ship_positions SET last_attempt_at = ?, last_success_at = ?, last_error = NULL WHERE target = ?",
                [now, now, target],
            )


class Sink(Protocol):
    target: str  # the row in ship_positions, e.g. "postgresql://user@host/db"

    def send(self, rows: list[dict[str, Any]]) -> int:
        """Deliver the rows (idempotently); returns how many were new. Raises on failure."""

    def close(self) -> None: ...


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class ShipLoop:
    """Ships `db` to `sink` from its durable position, in a thread (`start`/`stop`), or in the
    caller's thread (`run_once`, `catch_up`: `llmsm team push`)."""

    db: Path
    sink: Sink
    share_content: bool = False
    batch_size: int = 1000
    interval: float = 1.0  # how often an idle loop looks for new events
    max_delay: float = 10.0  # backoff ceiling while the target is away
    db_timeout: float = 0.25
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None  # after each delivered batch
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _position: int | None = None
    _seen_state: tuple | None = None
    last_error: str | None = None
    shipped: int = 0  # rows the target took as new, this run
    _last_batch_rows: int = 0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"llmsm-ship-{self.sink.target[:20]}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.sink.close()
        except Exception:
            pass

    def _run(self) -> None:
        from llmsm.analytics import store

        delay = self.interval
        while not self._stop.is_set():
            try:
                moved = self.run_once()
            except store.DatabaseBusy:
                moved = False  # the local file is busy: next time
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(delay)
                delay = min(self.max_delay, max(self.interval, delay * 2))
                continue
            delay = self.interval
            if not moved:
                self._stop.wait(self.interval)

    def _failed(self, exc: BaseException) -> None:
        msg = _one_line(exc)
        if msg != self.last_error:
            log.warning("shipping to %s failed (will retry): %s", self.sink.target, msg)
            try:
                record_attempt(self.db, self.sink.target, self.db_timeout, error=msg)
            except Exception:
                pass
        self.last_error = msg

    def run_once(self) -> bool:
        """Send one batch if there is one; True if the position moved."""
        from llmsm.analytics import store

        if not self.db.exists():
            return False
        state = store.file_state(self.db)
        if state == self._seen_state:
            return False
        if self._position is None:
            self._position = _load_position(self.db, self.sink.target, self.db_timeout)
        batch = read_batch(self.db, self._position, self.batch_size, share_content=self.share_content, timeout=self.db_timeout)
        if batch is None:
            self._seen_state = state  # our own position write changes the file: compare after it
            return False
        new = self.sink.send(batch.rows) if batch.rows else 0
        record_attempt(self.db, self.sink.target, max(self.db_timeout, 2.0), position=batch.last_seq, shipped=new)
        self._position = batch.last_seq
        self._last_batch_rows = len(batch.rows)
        self.shipped += new
        self._seen_state = None
        if self.last_error is not None:
            log.info("shipping to %s works again", self.sink.target)
            self.last_error = None
        if self.on_batch is not None and batch.rows:
            try:
                self.on_batch(batch.rows)
            except Exception:
                log.debug("on_batch failed", exc_info=True)
        return True

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Ship everything stored so far (in the caller's thread); returns the rows sent."""
        total = 0
        self._seen_state = None
        while True:
            if not self.run_once():
                return total
            sent = self._last_batch_rows
            total += sent
            if progress is not None:
                progress(sent)
            self._seen_state = None
