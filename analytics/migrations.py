"""Schema migrations, in the style of simonw/llm: an ordered list of small named functions.

Each migration runs once per database, in its own transaction, and is recorded in
`_llmsm_migrations(name, applied_at)`. Never edit a migration that has shipped: add a new one
(`m004_...`) instead. After the migrations, the views in `views.sql` are (re)created with
CREATE OR REPLACE VIEW whenever that file changed (its sha256 is kept in `_llmsm_meta`).

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]

MIGRATIONS: list[Migration] = []

MIGRATIONS_TABLE = "_llmsm_migrations"
META_TABLE = "_llmsm_meta"
VIEWS_HASH_KEY = "views_sha256"

_lock = threading.Lock()  # one migrate() at a time per process (connections share the database)


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration; its name is its identity in the tracking table."""
    if any(m.__name__ == fn.__name__ for m in MIGRATIONS):
        raise ValueError(f"duplicate migration name {fn.__name__}")
    MIGRATIONS.append(fn)
    return fn


# --------------------------------------------------------------------------------------------
# The migrations. Append only.
# --------------------------------------------------------------------------------------------


@migration
def m001_events(con: duckdb.DuckDBPyConnection) -> None:
    # Column for column the fields of analytics.events.ExchangeEvent, in order.
    con.execute(
        """
        CREATE TABLE events (
            id VARCHAR PRIMARY KEY,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ,
            session_id VARCHAR,
            session_source VARCHAR,
            label VARCHAR,
            agent_id VARCHAR,
            parent_agent_id VARCHAR,
            client VARCHAR,
            client_version VARCHAR,
            account VARCHAR,
            provider VARCHAR,
            api VARCHAR NOT NULL,
            method VARCHAR,
            path VARCHAR,
            upstream VARCHAR,
            requested_model VARCHAR,
            model VARCHAR,
            streamed BOOLEAN,
            status_code INTEGER,
            outcome VARCHAR NOT NULL,
            error_type VARCHAR,
            error_message VARCHAR,
            stop_reason VARCHAR,
            request_id VARCHAR,
            message_id VARCHAR,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cache_read_tokens BIGINT,
            cache_write_tokens BIGINT,
            cache_write_1h_tokens BIGINT,
            reasoning_tokens BIGINT,
            counted_tokens BIGINT,
            usage_source VARCHAR,
            usage_raw JSON,
            cost_usd DOUBLE,
            ttft_ms DOUBLE,
            duration_ms DOUBLE,
            request_bytes BIGINT,
            response_bytes BIGINT,
            message_count INTEGER,
            tool_errors INTEGER,
            request_hash VARCHAR,
            retry_count INTEGER,
            long_context BOOLEAN,
            cache_ttl VARCHAR,
            ratelimit JSON
        )
        """
    )
    # Point look-ups of one session (`llmsm session X`). Time ranges need no index: rows arrive
    # in time order, so DuckDB's zone maps already skip old row groups.
    con.execute("CREATE INDEX events_session_id ON events (session_id)")


@migration
def m002_runs(con: duckdb.DuckDBPyConnection) -> None:
    # One row per `llmsm run -- <command>`.
    con.execute(
        """
        CREATE TABLE runs (
            session_id VARCHAR NOT NULL,
            label VARCHAR,
            command VARCHAR,
            cwd VARCHAR,
            git_branch VARCHAR,
            pid INTEGER,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ,
            exit_code INTEGER
        )
        """
    )


@migration
def m003_budgets(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE budgets (
            id VARCHAR PRIMARY KEY,
            scope VARCHAR NOT NULL CHECK (scope IN ('session', 'label', 'client', 'day')),
            target VARCHAR,
            max_tokens BIGINT,
            max_usd DOUBLE,
            warn_at DOUBLE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )


@migration
def m004_digest(con: duckdb.DuckDBPyConnection) -> None:
    # What each request showed of the session beyond the previous one (analytics/digest.py):
    # the material of `llmsm handoff`. Scrubbed of secrets and bounded before it is stored.
    con.execute("ALTER TABLE events ADD COLUMN digest JSON")


@migration
def m005_run_parent(con: duckdb.DuckDBPyConnection) -> None:
    # The session a run was handed off from (`llmsm handoff --start`, `llmsm run --parent`).
    con.execute("ALTER TABLE runs ADD COLUMN parent_session VARCHAR")


@migration
def m006_import_files(con: duckdb.DuckDBPyConnection) -> None:
    # How far `llmsm import` read each transcript file, so that the next import reads only what
    # was appended (analytics/transcript_files.py). `source` is the format (claude-code, codex).
    con.execute(
        """
        CREATE TABLE import_files (
            source VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            read_bytes BIGINT NOT NULL,
            fingerprint VARCHAR NOT NULL,
            earliest TIMESTAMPTZ,
            carry JSON,
            imported_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (source, path)
        )
        """
    )


@migration
def m007_team_ship_order(con: duckdb.DuckDBPyConnection) -> None:
    # The order events were stored in, for shippers (analytics/team/ship.py): filled in the
    # insert's own transaction by store.insert_events. started_at is no such order: a long
    # stream, or a journal recovered after a crash, stores an event long after it started.
    # A table of its own, so that `events` stays column for column an ExchangeEvent.
    con.execute("CREATE SEQUENCE event_order_seq")
    con.execute(
        "CREATE TABLE event_order (id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL DEFAULT nextval('event_order_seq'))"
    )
    con.execute("INSERT INTO event_order (id) SELECT id FROM events ORDER BY started_at, id")
    # How far each target (a team database, an OTLP collector) has been sent, and its last error.
    con.execute(
        """
        CREATE TABLE ship_positions (
            target VARCHAR PRIMARY KEY,
            position BIGINT NOT NULL DEFAULT 0,
            shipped BIGINT NOT NULL DEFAULT 0,
            last_success_at TIMESTAMPTZ,
            last_attempt_at TIMESTAMPTZ,
            last_error VARCHAR,
            last_error_at TIMESTAMPTZ
        )
        """
    )


@migration
def m008_notes(con: duckdb.DuckDBPyConnection) -> None:
    # Notes kept for a project (`llmsm memory`, the MCP tool `remember`: analytics/memory.py),
    # scrubbed of secrets before they are stored. `project` is a project's root directory.
    con.execute(
        """
        CREATE TABLE notes (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            project VARCHAR NOT NULL,
            note VARCHAR NOT NULL,
            source VARCHAR,
            session_id VARCHAR
        )
        """
    )


# --------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------


@functools.cache
def views_sql() -> str:
    """The text of views.sql shipped with the package (read once per process)."""
    return resources.files(__package__).joinpath("views.sql").read_text(encoding="utf-8")


def views_hash(sql: str | None = None) -> str:
    if sql is None:
        return _views_hash_cached()
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


@functools.cache
def _views_hash_cached() -> str:
    return hashlib.sha256(views_sql().encode("utf-8")).hexdigest()


def _fast_current(con: duckdb.DuckDBPyConnection) -> bool:
    """One cheap query answering "nothing to do" for an up-to-date database (~1 ms)."""
    try:
        row = con.execute(
            f"SELECT (SELECT count(*) FROM {MIGRATIONS_TABLE}), "
            f"(SELECT value FROM {META_TABLE} WHERE key = '{VIEWS_HASH_KEY}')"
        ).fetchone()
    except duckdb.CatalogException:
        return False
    return bool(row) and row[0] == len(MIGRATIONS) and row[1] == views_hash()


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary "
        "AND database_name = current_database() AND schema_name = 'main'",
        [name],
    ).fetchone()
    return bool(row and row[0])


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations recorded in this database, oldest first."""
    if not _table_exists(con, MIGRATIONS_TABLE):
        return []
    rows = con.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, name").fetchall()
    return [r[0] for r in rows]


def pending(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations this database still needs."""
    done = set(applied(con))
    return [m.__name__ for m in MIGRATIONS if m.__name__ not in done]


def _stored_views_hash(con: duckdb.DuckDBPyConnection) -> str | None:
    if not _table_exists(con, META_TABLE):
        return None
    row = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", [VIEWS_HASH_KEY]).fetchone()
    return row[0] if row else None


def _is_newer(con: duckdb.DuckDBPyConnection) -> bool:
    """True if the database holds migrations this code does not know (written by a newer llmsm)."""
    known = {m.__name__ for m in MIGRATIONS}
    return any(name not in known for name in applied(con))


def is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """True if nothing needs to run: all migrations applied and the views are up to date.

    Works on a read-only connection (it only reads).
    """
    if _fast_current(con):
        return True
    if pending(con):
        return False
    if _is_newer(con):
        return True  # never downgrade the views of a newer database
    return _stored_views_hash(con) == views_hash()


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the missing migrations (one transaction each), then (re)create the views.

    Returns the names of the migrations applied now. Safe to call on every connection: when
    the database is current this only reads two small tables.
    """
    if _fast_current(con):
        return []
    with _lock:
        con.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
        con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
        done = set(applied(con))
        ran: list[str] = []
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                fn(con)
                con.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                    [fn.__name__, datetime.now(timezone.utc)],
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            ran.append(fn.__name__)

        if _is_newer(con):
            return ran  # a newer llmsm owns the views of this database
        sql = views_sql()
        digest = views_hash(sql)
        if ran or _stored_views_hash(con) != digest:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute(
                    f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)",
                    [VIEWS_HASH_KEY, digest],
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return ran
