"""EventWriter: takes finished ExchangeEvents off mitmproxy's event loop and into DuckDB.

Plain threads + DuckDB; no mitmproxy import.

Durability model
----------------
`put()` runs on the event loop. It appends the event as one JSON line to a journal segment
(`<spool>/<time>-<pid>-<rand>.jsonl`, spool default `<db_path>.spool/`, mode 0700) with one
os.write on an O_APPEND descriptor, then queues it in memory. There is **no fsync**: a line
is in the kernel's page cache once os.write returns, so it survives SIGKILL or a crash of this
process, but not a power loss or kernel crash (the last seconds of events may then be lost).

A background thread writes batches (every `flush_interval` s, or sooner when `batch_size`
events wait) with `store.insert_events` (idempotent by event id; the file is opened and closed
for every batch so readers can open it in between) and deletes the journal segments whose
events are all committed. Segments are rotated under the writer's lock, so put() never writes
into a segment that is about to be deleted.

While the database cannot be written (another process holds it, its directory is missing or
unwritable, the file is corrupt, the disk is full) the events stay in memory and in the
journal; the thread retries with backoff (at most `retry_max_delay`, 2 s, between tries),
logs one warning when failures start (for a merely busy file: once it has been busy for
`busy_grace` s, so a short `llmsm sql` is no news) and one info line when writing works again.
Beyond `max_pending` queued events, new events go to the journal only and are read back from
it later. A backlog is written in chunks of up to `max(batch_size, 5000)` events.

Each live writer holds an exclusive flock on every segment it owns. A segment that can be
flocked (LOCK_EX | LOCK_NB) belongs to no live writer: `start()` adopts such orphaned segments
(a previous run that was killed, or closed while the database was unavailable), inserts their
events (idempotent) and deletes them.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmsm.analytics import store
from llmsm.analytics.events import ExchangeEvent

__all__ = ["EventWriter"]

_to_json = ExchangeEvent.__pydantic_serializer__.to_json  # model_dump_json() without a str round trip


def journal_line(event: ExchangeEvent) -> bytes:
    """The event as one line of the journal, which `ExchangeEvent.model_validate_json` reads back.

    orjson over the model's fields takes a third of pydantic's serializer (~6 against ~18 µs
    here), and this runs on the event loop for every exchange; what orjson refuses (an integer
    beyond 64 bits in `usage_raw`) goes through pydantic."""
    try:
        return orjson.dumps(event.__dict__, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _to_json(event) + b"\n"

# A commit every second: a dashboard (refreshed every second) is at most that far behind, and a
# burst of requests goes into the database as one batch (DuckDB's appender, one checkpoint)
# instead of one each. A batch costs ~40 ms of CPU here whatever its size (attach, append,
# checkpoint, detach), so with sessions busy the writer's share of a core is ~4% (8% at 0.5 s).
# The journal, not the commit, is what keeps an event safe.
DEFAULT_FLUSH_INTERVAL = 1.0
_SUFFIX = ".jsonl"
_TMP_SUFFIX = ".jsonl.new"


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int | None  # open while we own the segment: holds the flock
    lines: int = 0  # events appended to it
    unacked: int = 0  # of those, queued in memory and not yet committed
    spilled: int = 0  # of those, held only in the file (not in memory): replay before deleting
    writable: bool = True  # the active segment: put() appends to it
    orphan: bool = False  # adopted from a dead writer

    @property
    def needs_replay(self) -> bool:
        return self.spilled > 0 or self.orphan


class EventWriter:
    """Persist ExchangeEvents to DuckDB from a background thread; see the module docstring."""

    def __init__(
        self,
        db_path: Path,
        *,
        spool_dir: Path | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch_size: int = 500,
        logger: logging.Logger = logging.getLogger("llmsm.writer"),
        max_pending: int = 20_000,  # ~3 KB per queued event: ~60 MB at most
        segment_max_events: int = 20_000,
        retry_max_delay: float = 2.0,
        db_timeout: float = 0.25,
        recover_wait: float = 2.0,
        busy_grace: float = 1.0,
    ) -> None:
        self.db_path = Path(db_path).expanduser()
        self.spool_dir = Path(spool_dir) if spool_dir is not None else Path(str(self.db_path) + ".spool")
        self.flush_interval = max(0.01, float(flush_interval))
        self.batch_size = max(1, int(batch_size))
        self.log = logger
        self.max_pending = max(1, int(max_pending))
        self.segment_max_events = max(1, int(segment_max_events))
        self.retry_max_delay = float(retry_max_delay)
        self.db_timeout = float(db_timeout)
        self.recover_wait = float(recover_wait)
        self.busy_grace = float(busy_grace)  # a short `llmsm sql` holding the file is no news
        self.drain_batch = max(self.batch_size, 5000)  # bigger inserts when a backlog waits

        self._lock = threading.Lock()  # guards everything below; never held during DB or file reads
        self._queue: deque[tuple[ExchangeEvent, _Segment | None]] = deque()
        self._active: _Segment | None = None
        self._segments: list[_Segment] = []  # rotated segments we own (hold the flock)
        self._spool_ok: bool | None = None  # None: not set up yet
        self._journal_warned = False
        self._overflow_warned = False

        self._written = 0
        self._failures = 0
        self._dropped = 0  # events lost: neither journaled nor kept, or rejected by the database
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._warned = False  # a failure warning is out; the recovery gets an info line

        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._recovered = threading.Event()
        self._closed = False

    # ------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt orphaned journal segments, start the thread, wait (briefly) for their recovery."""
        if self._thread is not None:
            return
        self._closed = False
        self._stop.clear()
        with self._lock:
            self._setup_spool_locked()
        adopted = self._adopt_orphans()
        if adopted:
            self.log.info(
                "recovering %d journaled event(s) from %d earlier segment(s) in %s",
                sum(s.spilled for s in adopted), len(adopted), self.spool_dir,
            )
        else:
            self._recovered.set()
        self._thread = threading.Thread(target=self._run, name="llmsm-writer", daemon=True)
        self._thread.start()
        if adopted:
            self._recovered.wait(self.recover_wait)

    def put(self, event: ExchangeEvent) -> None:
        """Journal and queue one finished event. Called on the event loop: never blocks, never raises.

        The writer owns the event from now on: do not mutate it after put().
        """
        try:
            try:
                line: bytes | None = journal_line(event)
            except Exception as exc:  # an event pydantic cannot serialize: keep it in memory
                line = None
                self._warn_journal(f"cannot serialize event {getattr(event, 'id', '?')}: {exc}")
            notify = False
            with self._lock:
                seg = self._journal_locked(line) if line is not None else None
                if not self._closed and len(self._queue) < self.max_pending:
                    self._queue.append((event, seg))
                    if seg is not None:
                        seg.unacked += 1
                    notify = len(self._queue) >= self.batch_size
                elif seg is not None:
                    seg.spilled += 1  # in the journal only; read back later (or by the next start)
                else:
                    self._dropped += 1
                    if not self._overflow_warned:
                        self._overflow_warned = True
                        self.log.error(
                            "dropping events: %d pending in memory and the journal in %s is unavailable",
                            len(self._queue), self.spool_dir,
                        )
            if notify:
                self._wake.set()
        except Exception:  # never raise into the event loop
            try:
                self.log.exception("unexpected error in EventWriter.put")
            except Exception:
                pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wake the thread and wait until nothing is pending (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if self.stats()["pending"] == 0:
                return True
            time.sleep(0.01)
        return self.stats()["pending"] == 0

    def close(self, timeout: float = 10.0) -> None:
        """Write what can be written within `timeout` s, stop the thread, release the journal.

        Events that could not be written stay in their journal segments for the next start().
        """
        if self._closed and self._thread is None:
            return
        self._stop_deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout) + self.db_timeout + 2.0)
            if thread.is_alive():
                self.log.warning("writer thread still busy after %.1fs; leaving it", timeout)
        with self._lock:
            self._closed = True
            self._thread = None
            self._rotate_locked()
            self._gc_locked()
            unjournaled = sum(1 for _, seg in self._queue if seg is None)
            kept = len(self._queue) - unjournaled + sum(s.spilled for s in self._segments)
            for seg in self._segments:
                self._release_locked(seg, delete=False)
            self._segments.clear()
            self._queue.clear()
            if unjournaled:
                self._dropped += unjournaled
        if unjournaled:
            self.log.error("%d event(s) could not be written to %s nor journaled: lost", unjournaled, self.db_path)
        if kept:
            self.log.warning(
                "%d event(s) not yet in %s are kept in the journal %s; they are written on the next start",
                kept, self.db_path, self.spool_dir,
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._queue) + sum(s.spilled for s in self._segments)
            if self._active is not None:
                pending += self._active.spilled
            return {
                "pending": pending,
                "written": self._written,
                "failures": self._failures,
                "last_error": self._last_error,
                "dropped": self._dropped,
                "journal": str(self.spool_dir) if self._spool_ok else None,
            }

    def __enter__(self) -> EventWriter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------
    # Journal (all *_locked methods run with self._lock held)
    # ------------------------------------------------------------------------------------

    def _warn_journal(self, why: str) -> None:
        if not self._journal_warned:
            self._journal_warned = True
            self.log.warning("journal disabled: %s; events are kept in memory only until written to %s", why, self.db_path)

    def _setup_spool_locked(self) -> bool:
        if self._spool_ok is not None:
            return self._spool_ok
        try:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(self.spool_dir, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.spool_dir} is not writable")
            self._spool_ok = True
        except OSError as exc:
            self._spool_ok = False
            self._warn_journal(f"cannot create {self.spool_dir} ({exc.strerror or exc})")
        return self._spool_ok

    def _new_segment_locked(self) -> _Segment:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.spool_dir / (name + _TMP_SUFFIX)
        final = self.spool_dir / (name + _SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Locked before it gets a name recovery looks at: nobody can adopt a live segment.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, final)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return _Segment(path=final, fd=fd)

    def _journal_locked(self, line: bytes) -> _Segment | None:
        """Append one line to the active segment; None when the journal is unavailable."""
        if not self._setup_spool_locked():
            return None
        try:
            seg = self._active
            if seg is None or seg.lines >= self.segment_max_events:
                self._rotate_locked()
                seg = self._active = self._new_segment_locked()
            assert seg.fd is not None
            view = memoryview(line)
            while view:
                n = os.write(seg.fd, view)
                view = view[n:]
            seg.lines += 1
            if self._journal_warned:
                self._journal_warned = False
                self.log.info("journal in %s writable again", self.spool_dir)
            return seg
        except OSError as exc:
            # A partial line may be in the file: never append after it again.
            if self._active is not None and self._active.lines == 0:
                self._release_locked(self._active, delete=True)
                self._active = None
            else:
                self._rotate_locked()
            self._warn_journal(f"cannot write to {self.spool_dir} ({exc.strerror or exc})")
            return None

    def _rotate_locked(self) -> None:
        """Close the active segment for writing (it stays locked until its events are committed)."""
        seg = self._active
        if seg is None:
            return
        self._active = None
        seg.writable = False
        if seg.lines == 0:
            self._release_locked(seg, delete=True)
        else:
            self._segments.append(seg)

    def _gc_locked(self) -> None:
        """Delete rotated segments whose events are all committed."""
        keep = []
        for seg in self._segments:
            if seg.unacked <= 0 and not seg.needs_replay:
                self._release_locked(seg, delete=True)
            else:
                keep.append(seg)
        self._segments = keep

    @staticmethod
    def _release_locked(seg: _Segment, *, delete: bool) -> None:
        if delete:
            try:
                os.unlink(seg.path)  # unlink before unlocking: nobody re-adopts a committed segment
            except FileNotFoundError:
                pass
            except OSError:
                pass
        if seg.fd is not None:
            try:
                os.close(seg.fd)
            except OSError:
                pass
            seg.fd = None

    def _adopt_orphans(self) -> list[_Segment]:
        """Lock the segments of dead writers and queue them for replay by our thread."""
        if not self._spool_ok:
            return []
        try:
            names = sorted(os.listdir(self.spool_dir))
        except OSError:
            return []
        adopted = []
        with self._lock:
            own = {s.path.name for s in self._segments}
            if self._active is not None:
                own.add(self._active.path.name)
        for name in names:
            if name in own or not (name.endswith(_SUFFIX) or name.endswith(_TMP_SUFFIX)):
                continue
            path = self.spool_dir / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a live writer's segment
                continue
            if name.endswith(_TMP_SUFFIX):  # died before the first line: nothing in it
                try:
                    os.unlink(path)
                except OSError:
                    pass
                os.close(fd)
                continue
            try:
                with open(path, "rb") as f:
                    lines = sum(1 for raw in f if raw.strip())
            except OSError:
                lines = 0
            adopted.append(_Segment(path=path, fd=fd, lines=lines, spilled=lines, writable=False, orphan=True))
        with self._lock:
            self._segments[:0] = adopted
        return adopted

    # ------------------------------------------------------------------------------------
    # Background thread
    # ------------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                ok = self._cycle()
            except Exception as exc:  # the thread must not die
                ok = False
                self._failed(exc)
                self.log.debug("writer cycle failed", exc_info=True)
            if ok:
                self._recovered.set()
            if stopping and (ok or time.monotonic() >= self._stop_deadline):
                return
            if ok:
                delay = 0.0
                if not stopping:
                    self._wake.wait(self.flush_interval)
                    self._wake.clear()
            else:
                delay = min(self.retry_max_delay, max(0.05, delay * 2))
                if stopping:
                    time.sleep(max(0.0, min(delay, self._stop_deadline - time.monotonic())))
                else:
                    self._stop.wait(delay)  # while failing, only close() cuts the backoff short

    def _cycle(self) -> bool:
        """One pass: replay segments that need it, then drain the queue. True if all went well."""
        with self._lock:
            active = self._active
            if active is not None and active.lines and (
                self._failing_since is None or active.lines >= self.segment_max_events or self._stop.is_set()
            ):
                self._rotate_locked()
            self._gc_locked()
            replay = [s for s in self._segments if s.needs_replay]
        for seg in replay:
            if not self._replay(seg):
                return False
        first = True
        while True:
            with self._lock:
                # After the first insert, go on only while a full batch waits: draining the few
                # events that arrived meanwhile, back to back, cost ~14 ms of CPU per tiny insert.
                if not first and len(self._queue) < self.batch_size and not self._stop.is_set():
                    return True
                batch = list(itertools.islice(self._queue, self.drain_batch))
            first = False
            if not batch:
                return True
            if not self._insert([ev for ev, _ in batch]):
                return False
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
                for _, seg in batch:
                    if seg is not None:
                        seg.unacked -= 1
                self._gc_locked()

    def _replay(self, seg: _Segment) -> bool:
        """Insert every event of a rotated segment from its file, then mark it replayed."""
        events: list[ExchangeEvent] = []
        bad = 0
        try:
            with open(seg.path, "rb") as f:
                for raw in f:
                    raw = raw.strip()
                    if not raw:
                        continue
                    try:
                        events.append(ExchangeEvent.model_validate_json(raw))
                    except Exception:
                        bad += 1  # a line cut short by a crash or a full disk
                    if len(events) >= self.drain_batch:
                        if not self._insert(events):
                            return False
                        events = []
        except FileNotFoundError:
            pass  # deleted under us: nothing left to replay
        except OSError as exc:
            self._failed(exc)
            return False
        if events and not self._insert(events):
            return False
        if bad:
            self.log.warning("skipped %d unreadable line(s) in journal segment %s", bad, seg.path)
        with self._lock:
            seg.spilled = 0
            seg.orphan = False
            self._gc_locked()
        return True

    def _insert(self, events: list[ExchangeEvent]) -> bool:
        """Insert events; on rejected rows bisect and drop only the bad ones. False = retry later."""
        try:
            n = store.insert_events(self.db_path, events, timeout=self.db_timeout)
        except store.InvalidEvents as exc:
            if len(events) > 1:
                mid = len(events) // 2
                return self._insert(events[:mid]) and self._insert(events[mid:])
            with self._lock:
                self._dropped += 1
            self.log.error("dropping event %s: %s", events[0].id, exc)
            return True
        except Exception as exc:  # StoreError (busy, corrupt, missing dir, disk full, ...) or worse
            self._failed(exc)
            return False
        self._succeeded(n)
        return True

    def _failed(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, store.StoreError) else f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            self._last_error = msg
            if self._failing_since is None:
                self._failing_since = now
            busy = isinstance(exc, store.DatabaseBusy)
            warn = not self._warned and (not busy or now - self._failing_since >= self.busy_grace)
            if warn:
                self._warned = True
            pending = len(self._queue) + sum(s.spilled for s in self._segments)
        if warn:
            self.log.warning(
                "cannot write to the database: %s; keeping %d event(s) in memory%s and retrying",
                msg, pending, f" and in the journal {self.spool_dir}" if self._spool_ok else "",
            )
        else:
            self.log.debug("database write failed: %s", msg)

    def _succeeded(self, n: int) -> None:
        with self._lock:
            self._written += n
            since = self._failing_since
            warned = self._warned
            self._failing_since = None
            self._warned = False
            pending = len(self._queue)
        if warned and since is not None:
            self.log.info(
                "database %s writable again after %.1fs; writing %d pending event(s)",
                self.db_path, time.monotonic() - since, pending,
            )
