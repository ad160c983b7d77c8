"""Keeping the event log: a copy out (`llmsm export`) and deleting what is old (`llmsm prune`).

Both work on the database file itself (export needs file access that the locked-down query
connection refuses; prune takes the write lock and compacts the file), so they live next to
the store rather than with the reports. docs/reports.md describes both.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from .store import BadInput, DatabaseMissing, StoreError, connect

__all__ = ["EXPORT_FORMATS", "export", "PruneResult", "prune"]

EXPORT_FORMATS = ("parquet", "csv", "jsonl")


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ {_sql_string(value.astimezone(timezone.utc).isoformat())}"


def export(
    db: str | os.PathLike[str],
    fmt: str,
    output: str | os.PathLike[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    timeout: float = 5.0,
) -> int:
    """Write every row of the `requests` view (all its columns, in order, oldest first) to
    `output` with DuckDB's COPY; returns the number of rows.

    The file appears atomically (written next to it, then renamed). Timestamps in CSV/JSONL are
    written in UTC. The connection is read-only on the database but may write files, so it is
    not the locked-down query connection.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadInput(f"unknown format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    out = Path(output).expanduser()
    if out.is_dir():
        raise BadInput(f"--output {out} is a directory: give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"--output: directory {parent} does not exist")
    options = {"parquet": "FORMAT parquet, COMPRESSION zstd", "csv": "FORMAT csv, HEADER true", "jsonl": "FORMAT json"}[fmt]
    where = []
    if since is not None:
        where.append(f"started_at >= {_ts_literal(since)}")
    if until is not None:
        where.append(f"started_at < {_ts_literal(until)}")
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        con = connect(db, read_only=True, timeout=timeout)
        try:
            con.execute("SET TimeZone = 'UTC'")
            row = con.execute(
                f"COPY (SELECT * FROM requests {clause} ORDER BY started_at, id) TO {_sql_string(str(tmp))} ({options})"
            ).fetchone()
        except duckdb.Error as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"export failed: {text}") from exc
        finally:
            con.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    cutoff: datetime
    matched: int  # events older than the cutoff (deleted unless dry_run)
    remaining: int
    dry_run: bool
    size_before: int
    size_after: int


def prune(db: str | os.PathLike[str], cutoff: datetime, *, dry_run: bool = False, timeout: float = 5.0) -> PruneResult:
    """Delete events with started_at strictly before `cutoff`, then compact the file.

    An event exactly at the cutoff is kept. `dry_run` only counts (read-only connection).
    """
    path = Path(db).expanduser()
    if not path.exists():
        raise DatabaseMissing.at(path)
    size_before = _size(path)
    if dry_run:
        con = connect(path, read_only=True, timeout=timeout)
        try:
            row = con.execute(
                "SELECT count(*) FILTER (WHERE started_at < ?), count(*) FILTER (WHERE started_at >= ?) FROM events",
                [cutoff, cutoff],
            ).fetchone()
        except duckdb.Error as exc:
            raise StoreError(f"cannot count events in {path}: {exc}") from exc
        finally:
            con.close()
        return PruneResult(cutoff, int(row[0]), int(row[1]), True, size_before, size_before)
    con = connect(path, timeout=timeout)
    try:
        try:
            row = con.execute("DELETE FROM events WHERE started_at < ?", [cutoff]).fetchone()
            deleted = int(row[0]) if row else 0
            remaining = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
            con.execute("CHECKPOINT")
            if deleted:
                _compact_into_place(con, path)
        except duckdb.Error as exc:
            raise StoreError(f"cannot prune {path}: {exc}") from exc
    finally:
        con.close()
    return PruneResult(cutoff, deleted, remaining, False, size_before, _size(path))


def _compact_into_place(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """DuckDB reuses deleted space but never gives it back: copy the database into a new file
    and move that over the old one. `con` holds the file's lock throughout, so a running gateway
    keeps its events (memory and journal) until this is done, then writes them into the new file."""
    fresh = path.with_name(path.name + ".compact")
    fresh.unlink(missing_ok=True)
    name = con.execute("SELECT current_database()").fetchone()[0]
    quoted = str(fresh).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS llmsm_compact")
    try:
        con.execute(f'COPY FROM DATABASE "{name.replace(chr(34), chr(34) * 2)}" TO llmsm_compact')
    finally:
        con.execute("DETACH llmsm_compact")
    os.replace(fresh, path)


def _size(path: Path) -> int:
    total = 0
    for p in (path, Path(str(path) + ".wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
