"""The DuckDB file: opening it safely across processes, writing events and runs, user queries.

DuckDB locks the whole file for every other process while a read-write connection is open
(readers too), so nothing here keeps a connection between calls: every write opens,
writes and closes, and every open retries for a while when another process holds the lock.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import platformdirs

from . import migrations
from .events import EVENT_COLUMNS, JSON_COLUMNS, ExchangeEvent

__all__ = [
    "StoreError",
    "DatabaseBusy",
    "DatabaseCorrupt",
    "DatabaseMissing",
    "InvalidEvents",
    "BadInput",
    "default_db_path",
    "connect",
    "open_for_query",
    "open_db",
    "insert_events",
    "insert_run",
    "end_run",
    "run_query",
]


# --------------------------------------------------------------------------------------------
# Errors: the message is one line a user can act on.
# --------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Any failure of the store; str(e) is one clear line for users."""


class DatabaseBusy(StoreError):
    """Another process (or another configuration in this process) holds the database file."""


class DatabaseCorrupt(StoreError):
    """The file exists but is not a DuckDB database this version can read."""


class DatabaseMissing(StoreError):
    """A read-only open of a database that does not exist yet."""

    @classmethod
    def at(cls, path: Path) -> "DatabaseMissing":
        return cls(f"no database at {path} yet: nothing has been recorded there")


class InvalidEvents(StoreError):
    """The rows themselves were rejected (a value out of range, a wrong type): retrying won't help."""


class BadInput(StoreError):
    """A value the user gave that cannot be used (one clear line)."""


def _one_line(msg: object) -> str:
    text = str(msg).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(msg).__name__


# --------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------


def default_db_path() -> Path:
    """$LLMSM_DB, else the per-user data dir (e.g. ~/.local/share/llmsm/llmsm.duckdb)."""
    env = os.environ.get("LLMSM_DB")
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path("llmsm") / "llmsm.duckdb"


_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return (
        "Could not set lock on file" in text
        or "Conflicting lock" in text
        or "different configuration than existing connections" in text
        or "Unique file handle conflict" in text
    )


def _busy_message(path: Path, exc: BaseException) -> str:
    m = _LOCK_RE.search(str(exc))
    if m:
        holder = f"pid {m.group('pid')}, {os.path.basename(m.group('exe'))}"
        return f"database {path} is held by another process ({holder}); close it or try again"
    if "different configuration" in str(exc) or "Unique file handle conflict" in str(exc):
        return f"database {path} is already open in this process"
    return f"database {path} is held by another process (pid unknown); close it or try again"


def _classify_open_error(path: Path, exc: BaseException, read_only: bool) -> StoreError:
    text = str(exc)
    if _is_lock_conflict(exc):
        return DatabaseBusy(_busy_message(path, exc))
    if "not a valid DuckDB database file" in text or "database file with version number" in text or (
        "Corrupt" in text or "corrupt" in text
    ):
        return DatabaseCorrupt(f"{path} is not a usable DuckDB database ({_one_line(exc)}); move it away to start a new one")
    if read_only and ("does not exist" in text or not path.exists()):
        return DatabaseMissing.at(path)
    return StoreError(f"cannot open database {path}: {_one_line(exc)}")


T = TypeVar("T")


def _retry_busy(path: Path, read_only: bool, timeout: float, attempt: Callable[[], T]) -> T:
    """attempt() again while it fails on a lock another process holds, until `timeout` seconds
    have passed (backing off from 10 ms to 200 ms); any other failure at once. DuckDB errors
    come out as StoreErrors (DatabaseBusy when the time is up)."""
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.01
    while True:
        try:
            return attempt()
        except duckdb.Error as exc:
            err = _classify_open_error(path, exc, read_only)
            left = deadline - time.monotonic()
            if not isinstance(err, DatabaseBusy) or left <= 0:
                raise err from exc
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.2)


def _open_raw(path: Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect with retries on lock conflicts until `timeout` seconds have passed."""
    return _retry_busy(path, read_only, timeout, lambda: duckdb.connect(str(path), read_only=read_only))


def _prepare_parent(path: Path) -> None:
    parent = path.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreError(f"cannot create the directory for database {path}: {exc.strerror or exc}") from exc


def _close_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.close()
    except Exception:
        pass


def _rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # no transaction open


def connect(path: str | os.PathLike[str], *, read_only: bool = False, timeout: float = 5.0) -> duckdb.DuckDBPyConnection:
    """Open the database, retrying while another process holds it (up to `timeout` s).

    Read-write connections create the file (and its directory) and run `migrate()`.
    Read-only connections need an existing file; if its schema is behind, the file is briefly
    opened read-write to migrate it (when nobody else holds it), then reopened read-only.

    Raises DatabaseBusy, DatabaseCorrupt, DatabaseMissing or StoreError.
    """
    path = Path(path).expanduser()
    if read_only:
        return _connect_read_only(path, timeout)
    _prepare_parent(path)
    con = _open_raw(path, False, timeout)
    try:
        migrations.migrate(con)
    except duckdb.Error as exc:
        _close_quietly(con)
        raise StoreError(f"cannot prepare database {path}: {_one_line(exc)}") from exc
    except BaseException:
        _close_quietly(con)
        raise
    return con


def _connect_read_only(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
    if not path.exists():
        raise DatabaseMissing.at(path)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    deadline = time.monotonic() + timeout
    con = _open_raw(path, True, timeout)
    try:
        current = migrations.is_current(con)
    except duckdb.Error:
        current = False
    if current:
        return con
    # Behind (or new): migrate if we can get the write lock quickly, else read what is there.
    _close_quietly(con)
    try:
        rw = _open_raw(path, False, min(0.5, max(0.0, deadline - time.monotonic())))
        try:
            migrations.migrate(rw)
        finally:
            _close_quietly(rw)
    except (StoreError, duckdb.Error, OSError):
        pass
    return _open_raw(path, True, max(0.0, deadline - time.monotonic()))


def open_for_query(path: str | os.PathLike[str], timeout: float = 5.0) -> duckdb.DuckDBPyConnection:
    """A read-only connection for user SQL: no file access, no ATTACH, settings locked.

    Writes fail because the database is attached read-only; `enable_external_access = false`
    blocks read_csv/COPY TO/ATTACH/INSTALL/LOAD of files; `lock_configuration = true` stops
    the user from switching either back. TEMP tables/views (in memory) remain allowed.
    """
    con = connect(path, read_only=True, timeout=timeout)
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        locked = con.execute(
            "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
        ).fetchone()
    except duckdb.Error as exc:
        _close_quietly(con)
        raise StoreError(f"cannot lock down the query connection: {_one_line(exc)}") from exc
    if not locked or locked[0] not in (False, "false") or locked[1] not in (True, "true"):
        _close_quietly(con)
        raise StoreError("cannot lock down the query connection (settings did not hold)")
    return con


@contextlib.contextmanager
def open_db(
    path: str | os.PathLike[str], *, missing_ok: bool = False, write: bool = False, timeout: float = 5.0
) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """The database for one command, closed when the block ends: how every command opens it.

    Read-only by default, locked down like `llmsm sql`'s connection (open_for_query). A missing
    file raises DatabaseMissing ("no database at ... yet"), or with `missing_ok` yields None, for
    commands whose answer is then simply empty. `write=True` opens read-write (creating and
    migrating the file). A DuckDB error that leaves the block becomes a one-line StoreError, so
    callers handle StoreError only.
    """
    if write:
        con = connect(path, timeout=timeout)
    else:
        try:
            con = open_for_query(path, timeout=timeout)
        except DatabaseMissing:
            if not missing_ok:
                raise
            yield None
            return
    try:
        yield con
    except duckdb.Error as exc:
        raise StoreError(_one_line(exc)) from exc
    finally:
        _close_quietly(con)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_COLS = ", ".join(EVENT_COLUMNS)
_COLUMN_LIST = list(EVENT_COLUMNS)
_JSON_IDX = tuple(i for i, name in enumerate(EVENT_COLUMNS) if name in JSON_COLUMNS)
_STAGE = "temp.main._llmsm_stage_events"
_ALIAS = "llmsm_target"
_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _row(ev: ExchangeEvent) -> list[Any]:
    """ExchangeEvent.to_row(), about twice as fast (reads the model's __dict__ directly)."""
    d = ev.__dict__
    row = [d[name] for name in EVENT_COLUMNS]
    for i in _JSON_IDX:
        if row[i] is not None:
            row[i] = _json_dumps(row[i])
    return row


def _unique_rows(events: Iterable[ExchangeEvent]) -> list[list[Any]]:
    seen: set[str] = set()
    rows = []
    for ev in events:
        if ev.id in seen:
            continue
        seen.add(ev.id)
        rows.append(_row(ev))
    return rows


class _Host:
    """A private in-memory DuckDB that ATTACHes the file for each write and DETACHes it after.

    Opening a DuckDB instance costs ~10 ms, ATTACH + DETACH ~2 ms plus the checkpoint, and the
    file lock is held only between the two (DuckDB's own per-process guard still refuses a file
    that another connection of this process has open).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.con: duckdb.DuckDBPyConnection | None = None
        # The file this instance last migrated, as (path, device, inode): the event writer
        # attaches it every second, and checking its schema each time costs ~2.5 ms. A file
        # replaced meanwhile (another inode) is checked again; one whose inode number was
        # reused makes the insert fail, which forgets this, so the writer's retry migrates it.
        self.migrated: tuple[Path, int, int] | None = None
        self.skipped = False  # the attached file's migration was skipped so (under `lock`)
        # Per file, the states it went through by this process's writes alone, oldest first:
        # a new list whenever a write finds the file as somebody else left it.
        self.chains: dict[Path, list[tuple]] = {}
        self.chain_lock = threading.Lock()  # not `lock`: held for a whole write, ~40 ms

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            self.con = duckdb.connect(":memory:", config={"threads": 1})
        return self.con

    def _discard(self) -> None:
        if self.con is not None:
            _close_quietly(self.con)
        self.con = None

    @contextlib.contextmanager
    def attached(self, path: Path, timeout: float, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file attached and selected with USE, detached on exit. Read-write: created and
        migrated if need be. Read-only: it must exist, and is read as it is."""
        if read_only:
            if not path.exists():
                raise DatabaseMissing.at(path)
        else:
            _prepare_parent(path)
        with self.lock:
            con = self._connection()
            quoted = str(path).replace("'", "''")
            attach = f"ATTACH '{quoted}' AS {_ALIAS}" + (" (READ_ONLY)" if read_only else "")
            _retry_busy(path, read_only, timeout, lambda: con.execute(attach))
            # Attached read-write, the file is ours until DETACH: as it is now, another
            # process (or nobody) left it. See `changed_only_by_us`.
            before = None if read_only else file_state(path)
            try:
                con.execute(f"USE {_ALIAS}")
                self.skipped = False
                if not read_only:
                    known = _file_key(path)
                    self.skipped = known is not None and known == self.migrated
                    if not self.skipped:
                        self.migrated = None
                        try:
                            migrations.migrate(con)
                        except duckdb.Error as exc:
                            raise StoreError(f"cannot prepare database {path}: {_one_line(exc)}") from exc
                        self.migrated = known
                try:
                    yield con
                except duckdb.Error:
                    if not read_only:
                        self.migrated = None  # perhaps not the file migrated before: checked next time
                    raise
            except BaseException:
                # Every write here commits or rolls back its own transaction; only one that raised
                # can have left one open (asking after a clean write costs ~0.7 ms). (Readers run
                # single statements: no transaction to end.)
                if not read_only:
                    _rollback_quietly(con)
                raise
            finally:
                try:
                    con.execute("USE memory")
                    con.execute(f"DETACH {_ALIAS}")
                except Exception:
                    # Never keep the file locked because of a failed detach: drop the instance.
                    self._discard()
                if before is not None:
                    self._wrote(path, before, file_state(path))

    def _wrote(self, path: Path, before: tuple, after: tuple) -> None:
        """Note one write of this process: the file went from `before` to `after`."""
        with self.chain_lock:
            chain = self.chains.get(path)
            if chain and chain[-1] == before:  # nobody else wrote since our last write
                chain.append(after)
                del chain[:-_CHAIN_KEPT]
            else:
                self.chains[path] = [before, after]

    def insert(self, path: Path, rows: list[list[Any]], timeout: float) -> int:
        # The database's errors are told apart outside the attach, which forgets the migrated
        # file on any of them (see `attached`).
        try:
            with self.attached(path, timeout) as con:
                try:
                    return self._append(con, rows)
                except (duckdb.CatalogException, duckdb.BinderException):
                    if not self.skipped:
                        raise
                    # The schema was taken as known (`migrated`) and is not there: another file
                    # under a reused inode number. Migrated now, then the same rows again.
                    _rollback_quietly(con)
                    migrations.migrate(con)
                    self.migrated = _file_key(path)
                    return self._append(con, rows)
        except (duckdb.DataError, duckdb.ConstraintException, TypeError, ValueError, OverflowError) as exc:
            raise InvalidEvents(f"events rejected by the database: {_one_line(exc)}") from exc
        except duckdb.Error as exc:
            raise StoreError(f"cannot write to database {path}: {_one_line(exc)}") from exc

    def _append(self, con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> int:
        con.execute("BEGIN TRANSACTION")
        try:
            # Straight into the table: the usual case, every id new, in one pass.
            appender = con.appender("events", columns=_COLUMN_LIST)
            appender.append_rows(rows)
            appender.flush()
            # Every id is new in `events`, so in `event_order` too (else the constraint sends
            # this to the staging path): an appender, ~4 ms less than an INSERT ... SELECT.
            appender = con.appender("event_order", columns=["id"])
            appender.append_rows([[r[0]] for r in rows])
            appender.flush()
        except duckdb.ConstraintException:
            # Some ids are stored already (a journal replayed after a crash): rarely.
            con.execute("ROLLBACK")
            return self._insert_new_ones(con, rows)
        finally:
            appender = None  # never flushed again by a late destructor
        con.execute("COMMIT")
        return len(rows)

    @staticmethod
    def _insert_new_ones(con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> int:
        """Insert the rows whose ids are not stored yet, through a staging table."""
        # A fresh staging table each time, dropped after: DuckDB keeps the deleted rows of an
        # in-memory table, so emptying one with DELETE grew the gateway's memory without bound.
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS SELECT {_COLS} FROM events LIMIT 0")
        appender = con.appender(_STAGE)
        appender.append_rows(rows)
        appender.flush()
        appender = None
        con.execute("BEGIN TRANSACTION")
        res = con.execute(f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM {_STAGE} ON CONFLICT DO NOTHING").fetchone()
        _order(con, f"SELECT id FROM {_STAGE}", {})
        con.execute("COMMIT")
        con.execute(f"DROP TABLE {_STAGE}")
        return int(res[0]) if res else 0


def file_state(path: Path) -> tuple:
    """What changes whenever anything is written to the database: (mtime, size, inode) of its
    file and of its WAL, None for one that is missing. Readers that come back every second
    compare it to skip a read that would find nothing new."""
    out: list = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def changed_only_by_us(path: str | os.PathLike[str], since: tuple) -> bool:
    """Whether every change of the database since it was in state `since` (a `file_state`)
    was a write of this process (the event writer's, the shipper's position).

    Exact but for one race: another process that writes in the microseconds between our
    DETACH and the `file_state` after it is taken for us. Who skips a read on this answer
    must therefore still read now and then (the budget guard: every few seconds)."""
    path = Path(path).expanduser()
    with _host.chain_lock:
        chain = _host.chains.get(path)
        return chain is not None and since in chain and chain[-1] == file_state(path)


def _file_key(path: Path) -> tuple[Path, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino)


def _order(con: duckdb.DuckDBPyConnection, ids_sql: str, params: dict[str, Any]) -> None:
    """Give each newly stored event its place in `event_order` (migration m006), in the insert's
    transaction: the order shippers read in (analytics/team/ship.py). One write transaction at a
    time holds the file, so sequence numbers become visible in the order they were taken."""
    con.execute(f"INSERT INTO event_order (id) {ids_sql} ON CONFLICT DO NOTHING", params)


_CHAIN_KEPT = 64  # states kept per file: a reader more than 64 writes behind reads anyway
_host = _Host()


def insert_events(path: str | os.PathLike[str], events: Sequence[ExchangeEvent], timeout: float = 5.0) -> int:
    """Insert events, ignoring ids already stored; returns how many rows are new.

    Each call opens the file, writes and closes it, so readers can open it between calls:
    rows go through DuckDB's appender straight into `events` in one transaction; when some ids
    are stored already, through a TEMP staging table and INSERT ... ON CONFLICT DO NOTHING.
    Raises InvalidEvents when the rows themselves are rejected, other StoreErrors otherwise.
    """
    if not events:
        return 0
    try:
        rows = _unique_rows(events)
    except (TypeError, ValueError) as exc:
        raise InvalidEvents(f"cannot serialize events: {_one_line(exc)}") from exc
    return _host.insert(Path(path).expanduser(), rows, timeout)


@contextlib.contextmanager
def read_attached(
    path: str | os.PathLike[str], timeout: float = 5.0, *, migrate: bool = False,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database read-only, for a reader that comes back often: inside the gateway (the
    budget guard, the status snapshot) and the live screens (`watch` reads every second).
    The file is attached to the process's one private DuckDB instance (the one the event
    writer also uses), so a read costs an ATTACH + DETACH (~6 ms here) rather than a DuckDB
    instance of its own (~30 ms of CPU to open, ~8 ms to close), and the writer cannot change
    the file while it is read. Other processes can't write it either meanwhile.

    `migrate`: for a process that did not open the file itself (the screens; the gateway's
    writer migrates its database when it starts): a database whose schema is behind is read
    through connect() instead, which migrates it when nobody else holds it, as every other
    read-only command does (~1 ms more per read to find out).
    Raises DatabaseMissing, DatabaseBusy, DatabaseCorrupt or StoreError."""
    path = Path(path).expanduser()
    with _host.attached(path, timeout, read_only=True) as con:
        try:
            current = not migrate or migrations.is_current(con)
        except duckdb.Error:
            current = False
        if current:
            yield con
            return
    con = connect(path, read_only=True, timeout=timeout)
    try:
        yield con
    finally:
        _close_quietly(con)


@contextlib.contextmanager
def write_attached(path: str | os.PathLike[str], timeout: float = 5.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database read-write on the process's one private DuckDB instance (as the event
    writer uses it), for small writes from inside the gateway (a shipper's position)."""
    with _host.attached(Path(path).expanduser(), timeout) as con:
        yield con


def insert_run(
    path: str | os.PathLike[str],
    *,
    session_id: str,
    command: str | None,
    cwd: str | None = None,
    label: str | None = None,
    git_branch: str | None = None,
    pid: int | None = None,
    started_at: datetime | None = None,
    timeout: float = 5.0,
) -> None:
    """Record the start of an `llmsm run` for `session_id`."""
    started_at = started_at or datetime.now(timezone.utc)
    con = connect(path, timeout=timeout)
    try:
        con.execute(
            "INSERT INTO runs (session_id, label, command, cwd, git_branch, pid, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [session_id, label, command, cwd, git_branch, pid, started_at],
        )
    except duckdb.Error as exc:
        raise StoreError(f"cannot record the run in {path}: {_one_line(exc)}") from exc
    finally:
        _close_quietly(con)


def end_run(
    path: str | os.PathLike[str],
    session_id: str,
    exit_code: int | None,
    *,
    pid: int | None = None,
    ended_at: datetime | None = None,
    timeout: float = 5.0,
) -> int:
    """Close the latest still-open run of `session_id` (of that `pid` if given).

    Returns the number of rows updated: 1, or 0 when no open run matched.
    """
    ended_at = ended_at or datetime.now(timezone.utc)
    where = "session_id = ? AND ended_at IS NULL" + (" AND pid = ?" if pid is not None else "")
    args: list[Any] = [session_id] + ([pid] if pid is not None else [])
    con = connect(path, timeout=timeout)
    try:
        row = con.execute(
            f"UPDATE runs SET ended_at = ?, exit_code = ? WHERE {where} "
            f"AND started_at = (SELECT max(started_at) FROM runs WHERE {where})",
            [ended_at, exit_code, *args, *args],
        ).fetchone()
        return int(row[0]) if row else 0
    except duckdb.Error as exc:
        raise StoreError(f"cannot record the end of the run in {path}: {_one_line(exc)}") from exc
    finally:
        _close_quietly(con)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run user SQL; returns (column names, rows). DuckDB errors become a one-line StoreError."""
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    except duckdb.Error as exc:
        raise StoreError(_one_line(exc)) from exc
