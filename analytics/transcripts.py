"""Importing assistants' own usage logs (transcripts) as historical events, incrementally.

The formats live in their own modules — `transcripts_claude` (Claude Code's
``~/.claude/projects/**/*.jsonl``) and `transcripts_codex` (Codex's rollout files) — and each
gives `run_import` a reader: a function that turns the new lines of one file into event rows.
What is shared is here: `run_import` lists the files, keeps only what is new since the last
import (`transcript_files`), reads it — in worker processes when there is much to read — and
hands the rows and the new file states to `transcript_db`, which stores both in one transaction.

De-duplication across files happens in that load: of several rows with the same event id the
first one wins, files in the order of the `earliest` timestamp their reader returned (then by
path), lines in file order; rows whose id is in the database already are left alone (imported
before). Event ids are deterministic (derived from the entry), so a file read again inserts
nothing.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .store import StoreError
from .transcript_db import Spool, load_stamps, load_states, write_import
from .transcript_files import CompleteLines, FilePart, FileState, fingerprint, list_jsonl, plan

__all__ = ["ImportStats", "Emit", "Reader", "run_import", "find_files", "count", "timestamp", "text", "MAX_COUNT"]

MAX_COUNT = (1 << 63) - 1  # a BIGINT column
# Reading is CPU-bound Python: with this much to read, files are read by worker processes (one
# per CPU, up to MAX_WORKERS), in batches of about BATCH_BYTES. Below it the start of the
# workers (~0.3 s) would cost more than it saves.
PARALLEL_MIN_BYTES = 128 << 20
BATCH_BYTES = 32 << 20
MAX_WORKERS = 4


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

    def add_reading(self, other: "ImportStats") -> None:
        """Add the counters of reading some files (a worker's) to these."""
        for name in ("files_read", "files_reread", "bytes_read", "lines", "usage_entries", "duplicates",
                     "synthetic", "malformed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unreadable_files += other.unreadable_files

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
        dict per event with transcript_db.IMPORTED_COLUMNS' names but `cost_usd`, which the
        spool fills in). `carry` holds the state left by the previous import of this file (empty
        when reading from the start) and is updated in place. Returns the earliest entry
        timestamp of these lines."""
        ...


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

_FAR = datetime.max.replace(tzinfo=timezone.utc)


@dataclass
class _Batch:
    """What reading some files gave: their rows in a spool file, counters, and per file (by its
    index in the import) the new state (None: unreadable) and its de-duplication order key."""

    spool: Path
    rows: int
    stats: ImportStats
    files: list[tuple[int, FileState | None, tuple[bool, datetime, str]]]


def _read_batch(reader: Reader, items: list[tuple[int, FilePart]], spool_dir: Path | None,
                on_bytes: Callable[[int], None] | None = None) -> _Batch:
    """Read the parts `items` (index, part) with `reader` into a spool of their own. Runs in the
    importing process or in a worker (then everything here is sent back pickled)."""
    stats = ImportStats()

    def counted(n: int) -> None:
        stats.bytes_read += n
        if on_bytes is not None:
            on_bytes(n)

    spool = Spool(spool_dir)
    try:
        files = []
        for index, part in items:
            prev = part.previous
            carry = dict(prev.carry) if prev is not None else {}
            spool.file, spool.seq = index, 0
            try:
                with open(part.path, "rb") as fh:
                    lines = CompleteLines(fh, part.start, counted)
                    earliest = reader(part, lines, carry, spool.add, stats)
                    fp = fingerprint(fh, lines.end)
            except OSError as exc:
                stats.unreadable_files.append(f"{part.path}: {exc.strerror or exc}")
                files.append((index, None, (True, _FAR, str(part.path))))  # its rows (if any) rank last
                continue
            if prev is not None and prev.earliest is not None and (earliest is None or prev.earliest < earliest):
                earliest = prev.earliest
            stats.files_read += 1
            stats.files_reread += part.reread
            state = FileState(str(part.path), part.size, part.mtime_ns, lines.end, fp, earliest, carry)
            files.append((index, state, (earliest is None, earliest or _FAR, str(part.path))))
        spool.close()
        return _Batch(spool.path, spool.rows, stats, files)
    except BaseException:
        spool.remove()
        raise


def _batches(parts: list[FilePart]) -> list[list[tuple[int, FilePart]]]:
    out: list[list[tuple[int, FilePart]]] = [[]]
    size = 0
    for index, part in enumerate(parts):
        if size >= BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append((index, part))
        size += max(0, part.size - part.start)
    return out


def _workers(to_read: int) -> int:
    if to_read < PARALLEL_MIN_BYTES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def _read_all(reader: Reader, parts: list[FilePart], spool_dir: Path | None, workers: int,
              progress: Callable[[int], None] | None) -> list[_Batch]:
    if workers <= 1:
        return [_read_batch(reader, list(enumerate(parts)), spool_dir, progress)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: list[_Batch] = []
    # spawn, not fork: the importing process may run threads (a progress bar, DuckDB's)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_read_batch, reader, batch, spool_dir): sum(max(0, p.size - p.start) for _, p in batch)
                   for batch in _batches(parts)}
        try:
            for future in as_completed(futures):
                done.append(future.result())
                if progress is not None:
                    progress(futures[future])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in futures:  # the spools of every batch that finished
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().spool.unlink(missing_ok=True)
            raise
    return done


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
    workers: int | None = 1,
) -> ImportStats:
    """Read what is new in `files` (from find_files) with `reader` and import it into `db`.

    `source` names the format in the file-state table. `full` reads every file from the start.
    `on_total(bytes)` is called once with the number of bytes to read, `progress(n)` as they are.
    `workers` is the number of reading processes; None: one per CPU (up to MAX_WORKERS) when
    there is much to read. Worker processes are started with "spawn", which imports the
    caller's main module again: a script needs the ``if __name__ == "__main__":`` guard (the
    `llmsm` command has it), hence the default of 1.
    Raises StoreError for an unusable database.
    """
    db_path = Path(db).expanduser()
    stats = ImportStats(files=len(files))
    # the stamps (size, mtime) first: the full state only of the files that changed
    stamps = {} if full else load_stamps(db_path, source, timeout)
    changed = [f for f in files if stamps.get(str(f[0])) != (f[1].st_size, f[1].st_mtime_ns)]
    known = [str(f[0]) for f in changed if str(f[0]) in stamps]
    states = load_states(db_path, source, timeout, known) if known else {}
    parts, unchanged = plan(changed, states, full)
    stats.files_unchanged = len(files) - len(changed) + unchanged
    to_read = sum(max(0, p.size - p.start) for p in parts)
    if on_total is not None:
        on_total(to_read)
    if not parts:
        return stats
    spool_dir = db_path.parent if db_path.parent.is_dir() else None
    batches = _read_all(reader, parts, spool_dir, _workers(to_read) if workers is None else workers, progress)
    try:
        order: list[tuple[bool, datetime, str]] = [(True, _FAR, "")] * len(parts)
        states_read: list[FileState] = []
        rows = 0
        for batch in batches:
            stats.add_reading(batch.stats)
            rows += batch.rows
            for index, state, key in batch.files:
                order[index] = key
                if state is not None:
                    states_read.append(state)
        ranks = [0] * len(order)
        for rank, index in enumerate(sorted(range(len(order)), key=order.__getitem__)):
            ranks[index] = rank
        unique, stats.inserted, stats.priced = write_import(
            db_path, source, [b.spool for b in batches if b.rows], rows, ranks, states_read, timeout
        )
        stats.events = unique
        stats.duplicates += rows - unique
    finally:
        for batch in batches:
            batch.spool.unlink(missing_ok=True)
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
