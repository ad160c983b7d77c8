"""Importing assistants' own usage logs (transcripts) as historical events, incrementally.

The formats live in their own modules — `transcripts_claude` (Claude Code's
``~/.claude/projects/**/*.jsonl``) and `transcripts_codex` (Codex's rollout files) — and each
gives `run_import` a reader: a function that turns the new lines of one file into event rows.
What is shared is here:

* `run_import`: list the files, keep only what is new since the last import
  (`transcript_files`), read it, and write the new events and the new file states to the
  database **in one transaction** — an import that stops half-way leaves both as they were, and
  a file whose rows are written is never read again, so nothing is lost and nothing counted twice.
* The rows are priced as the gateway prices its own (`prices.cost_for_event`) and spooled as
  JSON lines into a temporary file next to the database, which DuckDB then loads at once
  (``read_json``): far faster than appending 200,000 rows from Python, and the memory stays flat
  however large the corpus.
* De-duplication across files happens in that load: of several rows with the same event id the
  first one wins, files in the order the reader's `earliest` gives (then by path), lines in file
  order; rows whose id is in the database already are left alone (imported before, or read in
  a file that is not new).

Event ids are deterministic (derived from the entry), so a file read again inserts nothing.
Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import duckdb
import orjson

from .store import DatabaseMissing, StoreError, connect
from .transcript_files import CompleteLines, FilePart, FileState, fingerprint, list_jsonl, plan

__all__ = ["ImportStats", "Emit", "Reader", "run_import", "count", "timestamp", "text", "STATE_TABLE"]

STATE_TABLE = "import_files"  # created by migrations.m004_import_files
MAX_COUNT = (1 << 63) - 1  # a BIGINT column
# DuckDB's memory for the load (it spills to a temporary folder beyond it): by default it may take
# 80 % of the machine's memory for a bulk insert it does not need it for.
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


@dataclass
class ImportStats:
    files: int = 0  # files found
    files_read: int = 0  # of those, read now (new, grown or changed)
    files_unchanged: int = 0  # of those, unchanged since the last import: not opened
    files_reread: int = 0  # of the files read, read again from the start (shrunk or rewritten)
    bytes_read: int = 0
    lines: int = 0  # non-empty lines read
    usage_entries: int = 0  # lines carrying usage (before de-duplication)
    duplicates: int = 0  # repeated entries, counted once
    synthetic: int = 0  # Claude Code's <synthetic> model entries, skipped
    malformed: int = 0  # lines that are not JSON objects, or usage entries with unusable fields
    unreadable_files: list[str] = field(default_factory=list)
    events: int = 0  # unique events in what was read
    inserted: int = 0  # new rows in the database
    priced: int = 0  # of the new rows, those with a cost

    @property
    def already_present(self) -> int:
        return self.events - self.inserted

    def as_dict(self) -> dict[str, Any]:
        """The summary of `llmsm import ... --json` (docs/reports.md), without its `path`."""
        return {
            "files": self.files,
            "files_read": self.files_read,
            "files_unchanged": self.files_unchanged,
            "files_reread": self.files_reread,
            "bytes_read": self.bytes_read,
            "lines": self.lines,
            "usage_entries": self.usage_entries,
            "duplicates": self.duplicates,
            "synthetic": self.synthetic,
            "malformed": self.malformed,
            "unreadable_files": list(self.unreadable_files),
            "events": self.events,
            "inserted": self.inserted,
            "already_present": self.already_present,
            "priced": self.priced,
        }


# --------------------------------------------------------------------------------------------
# Field readers shared by the formats (ValueError for an unusable value)
# --------------------------------------------------------------------------------------------


def count(value: Any, required: bool) -> int | None:
    """A token count: a non-negative integer that fits a BIGINT (an integral float is accepted)."""
    if value is None:
        if required:
            raise ValueError("missing")
        return None
    if isinstance(value, bool):
        raise ValueError("bool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    raise ValueError("not a count")


def timestamp(value: Any) -> datetime:
    """An ISO 8601 time (``...Z`` or with an offset; naive is UTC)."""
    if not isinstance(value, str) or not value:
        raise ValueError("timestamp")
    ts = datetime.fromisoformat(value)  # Python >= 3.11 reads a trailing Z
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------------------------
# The reader interface
# --------------------------------------------------------------------------------------------

Emit = Callable[[dict[str, Any]], None]


class Reader(Protocol):
    def __call__(self, part: FilePart, lines: Iterable[bytes], carry: dict[str, Any], emit: Emit, stats: ImportStats) -> datetime | None:
        """Turn the lines of one file (from part.start on) into event rows given to `emit` (one
        dict per event with IMPORTED_COLUMNS' names; `cost_usd` is filled in by the spool).
        `carry` holds the state left by the previous import of this file (empty when reading from
        the start) and is updated in place. Returns the earliest entry timestamp of these lines."""
        ...


# --------------------------------------------------------------------------------------------
# Spool: priced rows as JSON lines in a temporary file
# --------------------------------------------------------------------------------------------


class _Spool:
    def __init__(self, directory: Path | None) -> None:
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
# The database side
# --------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def load_states(db: Path, source: str, timeout: float) -> dict[str, FileState]:
    """The remembered state of every file of `source` (empty without a database or table)."""
    try:
        con = connect(db, read_only=True, timeout=timeout)
    except DatabaseMissing:
        return {}
    try:
        rows = con.execute(
            f"SELECT path, size, mtime_ns, read_bytes, fingerprint, earliest, carry FROM {STATE_TABLE} WHERE source = ?",
            [source],
        ).fetchall()
    except duckdb.CatalogException:
        return {}  # a database this version could not migrate (held by a writer): read everything
    except duckdb.Error as exc:
        raise StoreError(f"cannot read {db}: {_one_line(exc)}") from exc
    finally:
        con.close()
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


def _write(db: Path, source: str, spool: _Spool, ranks: list[int], states: list[FileState], stats: ImportStats, timeout: float) -> None:
    """New events and file states in one transaction; fills stats.events/inserted/priced.

    The spool is de-duplicated into a TEMP table (first row per id by file rank, then line),
    the ids already stored are looked up by probing `events` with the (few) new ids — never the
    other way round, which would hash every id of a large database — and the rest inserted.
    """
    con = connect(db, timeout=timeout)
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB's own bar would print to the terminal
        con.execute(f"SET memory_limit = '{IMPORT_MEMORY_LIMIT}'")
        con.execute("BEGIN TRANSACTION")
        if spool.rows:
            types = dict(con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events' "
                "AND schema_name = 'main' AND database_name = current_database()"
            ).fetchall())
            spec = ", ".join(f"'{c}': '{types[c]}'" for c in IMPORTED_COLUMNS)
            cols = ", ".join(IMPORTED_COLUMNS)
            path = str(spool.path).replace("'", "''")
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE {_STAGE} AS
                SELECT {cols}
                FROM read_json('{path}', format = 'newline_delimited',
                               columns = {{{spec}, '_file': 'INTEGER', '_seq': 'BIGINT'}})
                QUALIFY row_number() OVER (PARTITION BY id ORDER BY list_extract($ranks, _file + 1), _seq) = 1
                """,
                {"ranks": ranks},
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_PRESENT} AS "
                f"SELECT id FROM events WHERE id IN (SELECT id FROM {_STAGE})"
            )
            unique, new, priced = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE NOT present), count(cost_usd) FILTER (WHERE NOT present) "
                f"FROM (SELECT cost_usd, id IN (SELECT id FROM {_PRESENT}) AS present FROM {_STAGE})"
            ).fetchone()
            row = con.execute(
                f"INSERT INTO events ({cols}) SELECT {cols} FROM {_STAGE} WHERE id NOT IN (SELECT id FROM {_PRESENT})"
            ).fetchone()
            con.execute(f"DROP TABLE {_STAGE}")
            con.execute(f"DROP TABLE {_PRESENT}")
            stats.duplicates += spool.rows - unique
            stats.events += unique
            stats.inserted += int(row[0]) if row else 0
            stats.priced += priced
        if states:
            now = datetime.now(timezone.utc).isoformat()
            rows = [
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
                {"rows": rows},
            )
        con.execute("COMMIT")
    except duckdb.Error as exc:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise StoreError(f"cannot import into {db}: {_one_line(exc)}") from exc
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------------


def run_import(
    db: str | os.PathLike[str],
    source: str,
    files: list[tuple[Path, os.stat_result]],
    reader: Reader,
    *,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    timeout: float = 5.0,
) -> ImportStats:
    """Read what is new in `files` (from list_jsonl) with `reader` and import it into `db`.

    `source` names the format in the file-state table. `full` reads every file from the start.
    `on_total(bytes)` is called once with the number of bytes to read, `progress(n)` as they are.
    Raises StoreError for an unusable database.
    """
    db_path = Path(db).expanduser()
    stats = ImportStats(files=len(files))
    states = {} if full else load_states(db_path, source, timeout)
    parts, stats.files_unchanged = plan(files, states, full)
    if on_total is not None:
        on_total(sum(max(0, p.size - p.start) for p in parts))
    if not parts:
        return stats

    def on_bytes(n: int) -> None:
        stats.bytes_read += n
        if progress is not None:
            progress(n)

    spool = _Spool(db_path.parent)
    try:
        new_states: list[FileState] = []
        order: list[tuple[bool, datetime, str]] = []
        far = datetime.max.replace(tzinfo=timezone.utc)
        for part in parts:
            prev = part.previous
            carry = dict(prev.carry) if prev is not None else {}
            try:
                with open(part.path, "rb") as fh:
                    lines = CompleteLines(fh, part.start, on_bytes)
                    spool.file, spool.seq = len(order), 0
                    earliest = reader(part, lines, carry, spool.add, stats)
                    fp = fingerprint(fh, lines.end)
            except OSError as exc:
                stats.unreadable_files.append(f"{part.path}: {exc.strerror or exc}")
                order.append((True, far, str(part.path)))  # its rows (if any) rank last
                continue
            if prev is not None and prev.earliest is not None and (earliest is None or prev.earliest < earliest):
                earliest = prev.earliest
            stats.files_read += 1
            stats.files_reread += part.reread
            order.append((earliest is None, earliest or far, str(part.path)))
            new_states.append(FileState(str(part.path), part.size, part.mtime_ns, lines.end, fp, earliest, carry))
        spool.close()
        by_rank = sorted(range(len(order)), key=order.__getitem__)
        ranks = [0] * len(order)
        for rank, index in enumerate(by_rank):
            ranks[index] = rank
        _write(db_path, source, spool, ranks, new_states, stats, timeout)
    finally:
        spool.remove()
    return stats


def find_files(root: Path, what: str, suffix: str = ".jsonl") -> list[tuple[Path, os.stat_result]]:
    """The files to import under `root` (resolved, so that a symlinked folder and its target
    share one file state). Raises StoreError when root does not exist or cannot be listed."""
    try:
        resolved = root.expanduser().resolve()
    except OSError:
        resolved = root.expanduser()
    if not resolved.exists():
        raise StoreError(f"no {what} at {root} (no such file or directory)")
    try:
        return list_jsonl(resolved, lambda name: name.endswith(suffix))
    except OSError as exc:
        raise StoreError(f"cannot list {root}: {exc.strerror or exc}") from exc
