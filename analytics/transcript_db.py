"""The database side of `llmsm import`: the spool of new rows, the file states, the load.

Rows are priced as the gateway prices its own (`prices.cost_for_event`) and spooled as JSON
lines into temporary files next to the database, which DuckDB loads at once (``read_json``):
far faster than appending 200,000 rows from Python, and Python's memory stays flat however
large the corpus. The load and the new file states (table ``import_files``) are one
transaction: an import that stops half-way changes neither, and a file whose rows are stored is
marked read in the same commit — nothing lost, nothing counted twice.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson

from .store import DatabaseMissing, StoreError, connect
from .transcript_files import FileState

__all__ = ["STATE_TABLE", "IMPORTED_COLUMNS", "Spool", "load_stamps", "load_states", "write_import"]

STATE_TABLE = "import_files"  # created by migrations.m006_import_files
# DuckDB's memory for the load (it spills to a temporary folder beyond it): by default it may take
# 80 % of the machine's memory for a bulk insert that does not need it.
IMPORT_MEMORY_LIMIT = "256MB"
_STAGE = "_llmsm_import_stage"
_PRESENT = "_llmsm_import_present"
# the event columns an import writes (the others stay NULL); `streamed` is false, never NULL
IMPORTED_COLUMNS = (
    "id", "started_at", "session_id", "session_source", "agent_id", "client", "client_version",
    "provider", "api", "method", "path", "requested_model", "model", "streamed", "outcome",
    "stop_reason", "request_id", "message_id", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "usage_source", "usage_raw",
    "cost_usd",
)


class Spool:
    """Priced event rows as JSON lines in a temporary file. `file` (the index of the file being
    read, for the de-duplication order) and `seq` (the row's order) are written with each row."""

    def __init__(self, directory: Path | None) -> None:  # next to the database: /tmp may be in RAM
        where = str(directory) if directory is not None and directory.is_dir() else None
        self.fh = tempfile.NamedTemporaryFile(prefix=".llmsm-import-", suffix=".jsonl", dir=where, delete=False)
        self.path = Path(self.fh.name)
        self.rows = 0
        self.price = _pricer()
        self.file = 0
        self.seq = 0

    def add(self, row: dict[str, Any]) -> None:
        cost = None
        if self.price is not None:
            try:
                cost = self.price(row)
            except Exception:  # a price that cannot be computed stays unknown, never 0
                cost = None
        row["cost_usd"] = cost
        row["_file"] = self.file
        row["_seq"] = self.seq
        self.seq += 1
        self.rows += 1
        self.fh.write(orjson.dumps(row))
        self.fh.write(b"\n")

    def close(self) -> None:
        self.fh.close()

    def remove(self) -> None:
        self.fh.close()
        try:
            self.path.unlink()
        except OSError:
            pass


def _pricer() -> Callable[[dict[str, Any]], float | None] | None:
    try:
        from .prices import cost_for_event
    except Exception:  # prices unavailable: rows stay unpriced (cost_usd NULL)
        return None
    return cost_for_event


# --------------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def load_stamps(db: Path, source: str, timeout: float) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file of `source` as last read (empty without a database or
    table): what tells an unchanged file, read without the rest of its state (cheap for the
    thousands of files an import finds unchanged)."""
    rows = _read_state(db, timeout, f"SELECT path, size, mtime_ns FROM {STATE_TABLE} WHERE source = $source", {"source": source})
    return {path: (size, mtime_ns) for path, size, mtime_ns in rows}


def _read_state(db: Path, timeout: float, sql: str, params: dict[str, Any]) -> list[tuple]:
    """Rows of the import state table on a short read-only connection; none without a database
    or table (a database this version could not migrate, held by a writer: read everything)."""
    try:
        con = connect(db, read_only=True, timeout=timeout)
    except DatabaseMissing:
        return []
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.CatalogException:
        return []
    except duckdb.Error as exc:
        raise StoreError(f"cannot read {db}: {_one_line(exc)}") from exc
    finally:
        con.close()


def load_states(db: Path, source: str, timeout: float, paths: list[str] | None = None) -> dict[str, FileState]:
    """The remembered state of every file of `source` (of `paths` only, when given; empty
    without a database or table)."""
    if paths is not None and not paths:
        return {}
    sql = f"SELECT path, size, mtime_ns, read_bytes, fingerprint, earliest, carry FROM {STATE_TABLE} WHERE source = $source"
    params: dict[str, Any] = {"source": source}
    if paths is not None:
        sql += " AND path IN (SELECT unnest($paths::VARCHAR[]))"
        params["paths"] = paths
    rows = _read_state(db, timeout, sql, params)
    out = {}
    for path, size, mtime_ns, read_bytes, fp, earliest, carry in rows:
        try:
            loaded = orjson.loads(carry) if carry else {}
        except orjson.JSONDecodeError:
            loaded = None
        if not isinstance(loaded, dict):
            continue  # unusable: the file is read from the start
        out[path] = FileState(path, size, mtime_ns, read_bytes, fp, earliest, loaded)
    return out


def write_import(
    db: Path, source: str, spools: list[Path], rows: int, ranks: list[int], states: list[FileState], timeout: float
) -> tuple[int, int, int]:
    """New events (from `spools`, `rows` in all) and file states in one transaction. Returns
    (unique events in the spools, rows inserted, of those priced). `ranks[i]` is the place of
    the file of index i in the de-duplication order.

    The spools are de-duplicated into a TEMP table (first row per id by file rank, then line),
    the ids already stored are looked up by probing `events` with the (few) new ids — never the
    other way round, which would hash every id of a large database — and the rest inserted.
    """
    con = connect(db, timeout=timeout)
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB's own bar would print to the terminal
        con.execute(f"SET memory_limit = '{IMPORT_MEMORY_LIMIT}'")
        con.execute("BEGIN TRANSACTION")
        unique = inserted = priced = 0
        if rows:
            types = dict(con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events' "
                "AND schema_name = 'main' AND database_name = current_database()"
            ).fetchall())
            spec = ", ".join(f"'{c}': '{types[c]}'" for c in IMPORTED_COLUMNS)
            cols = ", ".join(IMPORTED_COLUMNS)
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in spools)
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE {_STAGE} AS
                SELECT {cols}
                FROM read_json([{files}], format = 'newline_delimited',
                               columns = {{{spec}, '_file': 'INTEGER', '_seq': 'BIGINT'}})
                QUALIFY row_number() OVER (PARTITION BY id ORDER BY list_extract($ranks, _file + 1), _seq) = 1
                """,
                {"ranks": ranks},
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_PRESENT} AS "
                f"SELECT id FROM events WHERE id IN (SELECT id FROM {_STAGE})"
            )
            unique, priced = con.execute(
                f"SELECT count(*), count(cost_usd) FILTER (WHERE id NOT IN (SELECT id FROM {_PRESENT})) FROM {_STAGE}"
            ).fetchone()
            row = con.execute(
                f"INSERT INTO events ({cols}) SELECT {cols} FROM {_STAGE} WHERE id NOT IN (SELECT id FROM {_PRESENT})"
            ).fetchone()
            inserted = int(row[0]) if row else 0
            con.execute(f"DROP TABLE {_STAGE}")
            con.execute(f"DROP TABLE {_PRESENT}")
        if states:
            now = datetime.now(timezone.utc).isoformat()
            state_rows = [
                {"source": source, "path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "read_bytes": s.read_bytes,
                 "fingerprint": s.fingerprint, "earliest": s.earliest.isoformat() if s.earliest else None,
                 "carry": orjson.dumps(s.carry).decode(), "imported_at": now}
                for s in states
            ]
            con.execute(
                f"""
                INSERT OR REPLACE INTO {STATE_TABLE}
                    (source, path, size, mtime_ns, read_bytes, fingerprint, earliest, carry, imported_at)
                SELECT r.source, r.path, r.size, r.mtime_ns, r.read_bytes, r.fingerprint,
                       r.earliest::TIMESTAMPTZ, r.carry::JSON, r.imported_at::TIMESTAMPTZ
                FROM (SELECT unnest($rows) AS r)
                """,
                {"rows": state_rows},
            )
        con.execute("COMMIT")
        return unique, inserted, int(priced)
    except duckdb.Error as exc:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise StoreError(f"cannot import into {db}: {_one_line(exc)}") from exc
    finally:
        con.close()
