"""Claude Code transcripts (``~/.claude/projects/**/*.jsonl``) as historical events.

Each line of a transcript is a JSON object. The lines that carry usage are assistant entries::

    {"type": "assistant", "sessionId": "...", "requestId": "req_...", "timestamp": "...Z",
     "version": "2.0.46", "cwd": "...", "gitBranch": "...",
     "message": {"id": "msg_...", "model": "claude-...", "stop_reason": "...",
                 "usage": {"input_tokens": 7, "cache_creation_input_tokens": 162,
                           "cache_read_input_tokens": 17545, "output_tokens": 230,
                           "cache_creation": {"ephemeral_5m_input_tokens": 162,
                                              "ephemeral_1h_input_tokens": 0}}}}

One API response is written once per content block, so the same (message.id, requestId) pair
appears on several lines: it is counted once, the first line seen, files read in the order of
their earliest timestamp (the rule ccusage uses, so totals agree with it). Lines missing either
id are each counted (as ccusage does). Entries of the ``<synthetic>`` model (written by Claude
Code itself, never sent to the API) are skipped.

The event id is derived from (message id, request id) — or from the line's ``uuid`` when one is
missing — so importing the same files again inserts nothing.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from .events import ExchangeEvent
from .store import StoreError, connect, insert_events

__all__ = [
    "ImportStats",
    "default_projects_dir",
    "transcript_files",
    "event_id",
    "parse_file",
    "read_transcripts",
    "import_claude_code",
]

SYNTHETIC_MODEL = "<synthetic>"
BATCH = 20_000
_USAGE_KEY = b'"usage"'
# the entry's own timestamp: in Claude Code's key order it precedes any nested object that has one
_TS_RE = re.compile(rb'"timestamp"\s*:\s*"([^"\\]{10,40})"')
# hints to recognise a repeated content block without parsing it (the parsed ids decide the rest)
_REQ_RE = re.compile(rb'"requestId"\s*:\s*"([^"\\]+)"')
_MSG_RE = re.compile(rb'"id"\s*:\s*"(msg_[^"\\]+)"')


@dataclass
class ImportStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    usage_entries: int = 0  # lines carrying message.usage (before de-duplication)
    duplicates: int = 0  # repeated (message id, request id) pairs, counted once
    synthetic: int = 0  # <synthetic> model entries, skipped
    malformed: int = 0  # lines that are not JSON objects, or usage entries with unusable fields
    unreadable_files: list[str] = field(default_factory=list)
    events: int = 0  # unique events found
    inserted: int = 0  # new rows in the database
    priced: int = 0

    @property
    def already_present(self) -> int:
        return self.events - self.inserted


def default_projects_dir() -> Path:
    """$CLAUDE_CONFIG_DIR/projects when that variable is set (first entry), else ~/.claude/projects."""
    env = (os.environ.get("CLAUDE_CONFIG_DIR") or "").strip()
    if env:
        first = env.split(",")[0].strip()
        if first:
            return Path(first).expanduser() / "projects"
    return Path.home() / ".claude" / "projects"


def transcript_files(root: Path) -> list[Path]:
    """`root` itself if it is a file, else every *.jsonl below it (sorted)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.jsonl") if p.is_file())


def event_id(message_id: str | None, request_id: str | None, fallback: str) -> str:
    """Deterministic id: the same transcript entry always maps to the same event."""
    if message_id and request_id:
        key = f"claude-code\0{message_id}\0{request_id}"
    else:
        key = f"claude-code-line\0{fallback}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _count(value: Any, required: bool) -> int | None:
    """A token count: a non-negative integer (an integral float is accepted); ValueError otherwise."""
    if value is None:
        if required:
            raise ValueError("missing")
        return None
    if isinstance(value, bool):
        raise ValueError("bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    raise ValueError("not a count")


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError("timestamp")
    ts = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _entry_event(obj: dict[str, Any], raw_line: bytes) -> dict[str, Any] | None:
    """The event fields of one usage entry, or None if the line carries no message.usage.

    Raises ValueError when the entry has usage but unusable fields.
    """
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise ValueError("usage")
    inp = _count(usage.get("input_tokens"), True)
    out = _count(usage.get("output_tokens"), True)
    cw = _count(usage.get("cache_creation_input_tokens"), False)
    cr = _count(usage.get("cache_read_input_tokens"), False)
    cw1h = None
    creation = usage.get("cache_creation")
    if isinstance(creation, dict):
        cw1h = _count(creation.get("ephemeral_1h_input_tokens"), False)
    started = _timestamp(obj.get("timestamp"))
    model = _str(message.get("model"))
    message_id = _str(message.get("id"))
    request_id = _str(obj.get("requestId"))
    fallback = _str(obj.get("uuid")) or hashlib.sha256(raw_line).hexdigest()
    return {
        "id": event_id(message_id, request_id, fallback),
        "started_at": started,
        "session_id": _str(obj.get("sessionId")),
        "session_source": "claude_code_transcript",
        "agent_id": _str(obj.get("agentId")),
        "client": "claude-code",
        "client_version": _str(obj.get("version")),
        "provider": "anthropic",
        "api": "messages",
        "method": "POST",
        "path": "/v1/messages",
        "requested_model": model,
        "model": model,
        "outcome": "ok",
        "stop_reason": _str(message.get("stop_reason")),
        "request_id": request_id,
        "message_id": message_id,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cr if cr is not None else 0,
        "cache_write_tokens": cw if cw is not None else 0,
        "cache_write_1h_tokens": cw1h,
        "reasoning_tokens": None,  # transcripts do not report thinking tokens separately
        "usage_source": "transcript",
        "usage_raw": usage,
        "_dedup": (message_id, request_id) if message_id and request_id else None,
    }


def parse_file(path: Path, stats: ImportStats, progress: Callable[[int], None] | None = None) -> tuple[datetime | None, list[dict[str, Any]]]:
    """The usage entries of one transcript (in file order) and its earliest timestamp (of any line,
    as ccusage orders files).

    Only lines with a ``"usage"`` key are parsed as JSON, and of those only the first line of
    each (message id, request id) pair in this file (later ones repeat it: one line per content
    block). Other lines are only checked to be one JSON object and have their timestamp read,
    which keeps the import fast on large tool outputs.
    """
    entries: list[dict[str, Any]] = []
    earliest: datetime | None = None
    seen: set[tuple[bytes, bytes]] = set()
    try:
        fh = open(path, "rb")
    except OSError as exc:
        stats.unreadable_files.append(f"{path}: {exc.strerror or exc}")
        return None, entries
    with fh:
        pending = 0
        for raw in fh:
            stats.bytes += len(raw)
            if progress is not None:
                pending += len(raw)
                if pending >= 1 << 20:
                    progress(pending)
                    pending = 0
            line = raw.strip()
            if not line:
                continue
            stats.lines += 1
            if _USAGE_KEY not in line:
                if not (line.startswith(b"{") and line.endswith(b"}")):
                    stats.malformed += 1
                    continue
                m = _TS_RE.search(line)
                if m:
                    try:
                        ts = _timestamp(m.group(1).decode("ascii"))
                    except ValueError:
                        continue
                    if earliest is None or ts < earliest:
                        earliest = ts
                continue
            req = _REQ_RE.search(line)
            msg = _MSG_RE.search(line) if req else None
            if req and msg:
                key = (msg.group(1), req.group(1))
                if key in seen:  # another content block of a response already read
                    stats.usage_entries += 1
                    stats.duplicates += 1
                    continue
            else:
                key = None
            try:
                obj = json.loads(line)
            except ValueError:
                stats.malformed += 1
                continue
            if not isinstance(obj, dict):
                stats.malformed += 1
                continue
            try:
                ev = _entry_event(obj, line)
            except (ValueError, TypeError, OverflowError):
                stats.malformed += 1
                continue
            if ev is None:
                try:
                    ts = _timestamp(obj.get("timestamp"))
                except ValueError:
                    continue
                if earliest is None or ts < earliest:
                    earliest = ts
                continue
            stats.usage_entries += 1
            if key is not None and ev["_dedup"] is not None:
                seen.add(key)
            if earliest is None or ev["started_at"] < earliest:
                earliest = ev["started_at"]
            if ev["model"] == SYNTHETIC_MODEL:
                stats.synthetic += 1
                continue
            entries.append(ev)
        if progress is not None and pending:
            progress(pending)
    return earliest, entries


def read_transcripts(
    files: Iterable[Path],
    stats: ImportStats,
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Unique usage entries across all files: files in order of their earliest timestamp (files
    without one last), the first line of each (message id, request id) pair wins."""
    parsed: list[tuple[datetime | None, str, list[dict[str, Any]]]] = []
    for path in files:
        stats.files += 1
        earliest, entries = parse_file(path, stats, progress)
        parsed.append((earliest, str(path), entries))
    far = datetime.max.replace(tzinfo=timezone.utc)
    parsed.sort(key=lambda item: (item[0] is None, item[0] or far, item[1]))
    seen: set[tuple[str, str]] = set()
    ids: set[str] = set()
    for _, _, entries in parsed:
        for ev in entries:
            key = ev.pop("_dedup")
            if key is not None:
                if key in seen:
                    stats.duplicates += 1
                    continue
                seen.add(key)
            if ev["id"] in ids:  # the same line twice (a copied file): count it once
                stats.duplicates += 1
                continue
            ids.add(ev["id"])
            stats.events += 1
            yield ev


def _pricer() -> Callable[[ExchangeEvent], float | None] | None:
    try:
        from .prices import cost_for_event
    except Exception:  # prices unavailable: rows stay unpriced (cost_usd NULL)
        return None
    return cost_for_event


def _imported_ids(db: Path, timeout: float) -> set[str]:
    """Ids of the transcript rows already in the database (empty if there is no database yet)."""
    if not db.exists():
        return set()
    con = connect(db, read_only=True, timeout=timeout)
    try:
        return {r[0] for r in con.execute("SELECT id FROM events WHERE usage_source = 'transcript'").fetchall()}
    except duckdb.Error as exc:
        raise StoreError(f"cannot read {db}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
    finally:
        con.close()


def import_claude_code(
    db: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    timeout: float = 5.0,
) -> ImportStats:
    """Import every transcript under `root` into the database `db` (idempotent).

    `on_total(bytes)` is called once with the total size, `progress(n)` as bytes are read.
    Raises StoreError for an unusable path or database.
    """
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise StoreError(f"no Claude Code transcripts at {root_path} (no such file or directory)")
    try:
        files = transcript_files(root_path)
    except OSError as exc:
        raise StoreError(f"cannot list {root_path}: {exc.strerror or exc}") from exc
    stats = ImportStats()
    if on_total is not None:
        total = 0
        for p in files:
            try:
                total += p.stat().st_size
            except OSError:
                pass
        on_total(total)
    known = _imported_ids(Path(db).expanduser(), timeout)
    price = _pricer()
    batch: list[ExchangeEvent] = []
    for fields in read_transcripts(files, stats, progress):
        if fields["id"] in known:  # imported before: nothing to price or write
            continue
        try:
            ev = ExchangeEvent(**fields)  # validation is cheaper than model_construct here
        except ValueError:
            stats.malformed += 1
            stats.events -= 1
            continue
        if price is not None:
            try:
                ev.cost_usd = price(ev)
            except Exception:
                ev.cost_usd = None
            if ev.cost_usd is not None:
                stats.priced += 1
        batch.append(ev)
        if len(batch) >= BATCH:
            stats.inserted += insert_events(db, batch, timeout=timeout)
            batch = []
    if batch:
        stats.inserted += insert_events(db, batch, timeout=timeout)
    return stats
