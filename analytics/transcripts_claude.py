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
missing — so importing the same files again inserts nothing. Imports are incremental
(`transcripts.run_import`): a file is read from where the last import stopped, and the ids of
the last responses read travel in the file's carry, so the rest of a response whose content
blocks were split by that stop is still known as a repeat. A pair that already has its row in
the database (from an earlier import) keeps that row: the earliest-file rule orders only the
files read together.

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from .transcript_files import FilePart
from .transcripts import MAX_COUNT, Emit, ImportStats, count, find_files, run_import, text, timestamp

__all__ = ["SOURCE", "default_projects_dir", "event_id", "read_claude_code", "import_claude_code"]

SOURCE = "claude-code"  # the format's name in the file-state table
SYNTHETIC_MODEL = "<synthetic>"
CARRY_PAIRS = 16  # response ids carried to the next import of a file (a split response is the last one)
_USAGE_KEY = b'"usage"'
# Hints to recognise a repeated content block without parsing it, and to find a line's
# timestamp: Claude Code writes compact JSON, so the keys are found as bytes; a hint that is
# wrong (an id with an escaped quote) only fails to match, and the parsed ids decide. Lines
# spaced otherwise are parsed in full and use the regular expression.
_TS_KEY = b'"timestamp":"'
_REQ_KEY = b'"requestId":"'
_MSG_KEY = b'"id":"msg_'
_TS_RE = re.compile(rb'"timestamp"\s*:\s*"([^"\\]{10,40})"')


def default_projects_dir() -> Path:
    """$CLAUDE_CONFIG_DIR/projects when that variable is set (first entry), else ~/.claude/projects."""
    env = (os.environ.get("CLAUDE_CONFIG_DIR") or "").strip()
    if env:
        first = env.split(",")[0].strip()
        if first:
            return Path(first).expanduser() / "projects"
    return Path.home() / ".claude" / "projects"


def event_id(message_id: str | None, request_id: str | None, fallback: str) -> str:
    """Deterministic id: the same transcript entry always maps to the same event."""
    if message_id and request_id:
        key = f"claude-code\0{message_id}\0{request_id}"
    else:
        key = f"claude-code-line\0{fallback}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates (\\ud83d without its pair: text cut inside an emoji)
        return json.loads(line)


def _entry_event(obj: dict[str, Any], raw_line: bytes) -> dict[str, Any] | None:
    """The event row of one usage entry, or None if the line carries no message.usage.

    Raises ValueError when the entry has usage but unusable fields. (Plain integers and strings,
    the usual case, are taken without a call: this runs once per response.)
    """
    message = obj.get("message")
    if type(message) is not dict:
        return None
    usage = message.get("usage")
    if usage is None:
        return None
    if type(usage) is not dict:
        raise ValueError("usage")
    inp = usage.get("input_tokens")
    out = usage.get("output_tokens")
    cw = usage.get("cache_creation_input_tokens")
    cr = usage.get("cache_read_input_tokens")
    inp = inp if type(inp) is int and 0 <= inp <= MAX_COUNT else count(inp, True)
    out = out if type(out) is int and 0 <= out <= MAX_COUNT else count(out, True)
    cw = cw if type(cw) is int and 0 <= cw <= MAX_COUNT else count(cw, False) or 0
    cr = cr if type(cr) is int and 0 <= cr <= MAX_COUNT else count(cr, False) or 0
    cw1h = None
    creation = usage.get("cache_creation")
    if type(creation) is dict:
        cw1h = creation.get("ephemeral_1h_input_tokens")
        cw1h = cw1h if type(cw1h) is int and 0 <= cw1h <= MAX_COUNT else count(cw1h, False)
    ts = obj.get("timestamp")
    if type(ts) is not str or not ts:
        raise ValueError("timestamp")
    started = datetime.fromisoformat(ts)
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    model = message.get("model")
    model = model if type(model) is str and model else None
    message_id = message.get("id")
    message_id = message_id if type(message_id) is str and message_id else None
    request_id = obj.get("requestId")
    request_id = request_id if type(request_id) is str and request_id else None
    if message_id and request_id:
        eid = event_id(message_id, request_id, "")
    else:
        eid = event_id(None, None, text(obj.get("uuid")) or hashlib.sha256(raw_line).hexdigest())
    return {
        "id": eid,
        "started_at": started,
        "session_id": text(obj.get("sessionId")),
        "session_source": "claude_code_transcript",
        "agent_id": text(obj.get("agentId")),
        "client": "claude-code",
        "client_version": text(obj.get("version")),
        "provider": "anthropic",
        "api": "messages",
        "method": "POST",
        "path": "/v1/messages",
        "requested_model": model,
        "model": model,
        "streamed": False,
        "outcome": "ok",
        "stop_reason": text(message.get("stop_reason")),
        "request_id": request_id,
        "message_id": message_id,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cr,
        "cache_write_tokens": cw,
        "cache_write_1h_tokens": cw1h,
        "reasoning_tokens": None,  # transcripts do not report thinking tokens separately
        "usage_source": "transcript",
        "usage_raw": usage,
    }


class _Earliest:
    """The earliest timestamp of a file. Claude Code writes `YYYY-MM-DDTHH:MM:SS.sssZ` (24
    characters): such values are compared as bytes and only an earlier one is parsed."""

    def __init__(self) -> None:
        self.value: datetime | None = None
        self.raw = b"\xff"

    def see_raw(self, raw: bytes) -> None:
        canonical = len(raw) == 24 and raw[23] == 90 and raw[19] == 46  # ...Z, ".sss"
        if canonical and raw >= self.raw:
            return
        try:
            ts = timestamp(raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return
        if canonical:
            self.raw = raw
        self.see(ts)

    def see(self, ts: datetime) -> None:
        if self.value is None or ts < self.value:
            self.value = ts


def read_claude_code(part: FilePart, lines: Iterable[bytes], carry: dict[str, Any], emit: Emit, stats: ImportStats) -> datetime | None:
    """The usage entries of one transcript's new lines (transcripts.Reader).

    Only lines with a ``"usage"`` key are parsed as JSON, and of those only the first line of
    each (message id, request id) pair in this file (later ones repeat it: one line per content
    block). Other lines are only checked to be one JSON object and have their timestamp read,
    which keeps the import fast on large tool outputs. (The loop is written out, without helper
    calls, because it runs once per line: a million times for a large corpus.)
    """
    earliest = _Earliest()
    recent: list[tuple[bytes, bytes]] = []
    for pair in carry.get("pairs") or ():
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
            recent.append((pair[0].encode("utf-8", "surrogatepass"), pair[1].encode("utf-8", "surrogatepass")))
    seen: set[tuple[bytes, bytes]] = set(recent)
    n_lines = usage_entries = duplicates = malformed = synthetic = 0
    for line in lines:
        if not line or line[-1] in b" \t\r":
            line = line.strip()
            if not line:
                continue
        n_lines += 1
        if _USAGE_KEY not in line:
            if line[0] != 123 or line[-1] != 125:  # not {...}
                malformed += 1
                continue
            i = line.find(_TS_KEY)
            if i >= 0:
                raw = line[i + 13 : i + 37]
                # most lines are later than the earliest so far: a bytes comparison says so
                if not (raw >= earliest.raw and line[i + 37 : i + 38] == b'"' and raw[23] == 90 and raw[19] == 46):
                    earliest.see_raw(line[i + 13 : line.find(b'"', i + 13)])
            else:
                m = _TS_RE.search(line)
                if m:
                    earliest.see_raw(m.group(1))
            continue
        i = line.find(_REQ_KEY)
        if i >= 0:
            j = line.find(_MSG_KEY)
            if j >= 0:
                key = (line[j + 6 : line.find(b'"', j + 10)], line[i + 13 : line.find(b'"', i + 13)])
                if key in seen:  # another content block of a response already read
                    usage_entries += 1
                    duplicates += 1
                    continue
        try:
            obj = _loads(line)
        except ValueError:
            malformed += 1
            continue
        if not isinstance(obj, dict):
            malformed += 1
            continue
        try:
            ev = _entry_event(obj, line)
        except (ValueError, TypeError, OverflowError):
            malformed += 1
            continue
        if ev is None:
            try:
                earliest.see(timestamp(obj.get("timestamp")))
            except ValueError:
                pass
            continue
        usage_entries += 1
        earliest.see(ev["started_at"])
        if ev["message_id"] and ev["request_id"]:
            key = (ev["message_id"].encode("utf-8", "surrogatepass"), ev["request_id"].encode("utf-8", "surrogatepass"))
            if key in seen:  # the hints missed it (other spacing): the parsed ids catch it
                duplicates += 1
                continue
            seen.add(key)
            recent.append(key)
        if ev["model"] == SYNTHETIC_MODEL:
            synthetic += 1
            continue
        emit(ev)
    stats.lines += n_lines
    stats.usage_entries += usage_entries
    stats.duplicates += duplicates
    stats.malformed += malformed
    stats.synthetic += synthetic
    carry["pairs"] = [[m.decode("utf-8", "surrogatepass"), r.decode("utf-8", "surrogatepass")] for m, r in recent[-CARRY_PAIRS:]]
    return earliest.value


def import_claude_code(
    db: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    timeout: float = 5.0,
    workers: int | None = 1,
) -> ImportStats:
    """Import what is new in the transcripts under `root` into the database `db` (idempotent).

    `full` reads every file from the start. `on_total(bytes)` is called once with the number of
    bytes to read, `progress(n)` as they are read. `workers`: see transcripts.run_import (None
    reads a large corpus in one process per CPU). Raises StoreError for an unusable path or
    database.
    """
    files = find_files(Path(root), "Claude Code transcripts")
    return run_import(db, SOURCE, files, read_claude_code, full=full, progress=progress, on_total=on_total, timeout=timeout,
                      workers=workers)
