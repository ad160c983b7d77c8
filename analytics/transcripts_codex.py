"""Codex rollout files (``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread id>.jsonl``) as
historical events.

Each line is ``{"timestamp": "...Z", "type": "...", "payload": {...}}``. Three types matter:

* ``session_meta`` (the first line): ``payload.id`` is the thread id — the id Codex also sends
  on the wire (``session-id``/``thread-id``), so the gateway records the same ``session_id`` —
  and ``payload.cli_version``;
* ``turn_context``: ``payload.model`` is the model of the turns that follow (a token_count
  that names one itself, ``info.model``, sets it too);
* ``event_msg`` whose ``payload.type`` is ``token_count``: after each model response,
  ``payload.info`` holds ``total_token_usage`` (the thread's running totals) and
  ``last_token_usage`` (that response's), each with ``input_tokens`` (cached included),
  ``cached_input_tokens``, ``output_tokens`` (reasoning included), ``reasoning_output_tokens``
  and ``total_tokens``. ``info`` is null before the first response, and Codex writes the same
  token_count again unchanged (rate-limit updates): a response is counted only when
  ``total_token_usage`` changed (grew; or restarted lower, which a resumed thread does).

One event per counted response: ``last_token_usage`` (else the growth of the totals) in
llmsm's semantics — ``input_tokens`` uncached (input − cached), ``cache_read_tokens`` = cached,
``output_tokens`` with reasoning, ``reasoning_tokens`` — at the token_count's timestamp, with
``usage_source = 'transcript'``, client ``codex``, provider ``openai``, api ``responses``,
``session_id`` the thread id. The event id derives from the thread id and the running totals,
so reading a rollout again inserts nothing. The semantics are those of ``@ccusage/codex``.

A rollout carries no response ids, so "the wire wins" cannot match by message id as for Claude
Code: the one counting rule (`imported_seen_on_wire` in views.sql) matches a Codex row to a
wire row of the Responses API by its token counts and time (CODEX_WIRE_BEFORE_S, _AFTER_S).

Nothing here imports mitmproxy or typer.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .transcript_files import FilePart
from .transcripts import Emit, ImportStats, count, find_files, run_import, text, timestamp

__all__ = [
    "SOURCE",
    "default_sessions_dir",
    "event_id",
    "read_codex",
    "import_codex",
    "CODEX_WIRE_BEFORE_S",
    "CODEX_WIRE_AFTER_S",
]

SOURCE = "codex"  # the format's name in the file-state table
USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")
_THREAD_IN_NAME = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\.jsonl$")
# cheap tests before a line is parsed: only these three types are read
_TOKEN_COUNT, _TURN_CONTEXT, _SESSION_META = b'"token_count"', b'"turn_context"', b'"session_meta"'


def default_sessions_dir() -> Path:
    """$CODEX_HOME/sessions when CODEX_HOME is set, else ~/.codex/sessions."""
    home = (os.environ.get("CODEX_HOME") or "").strip()
    return (Path(home).expanduser() if home else Path.home() / ".codex") / "sessions"


def event_id(thread_id: str, epoch: int, totals: list[int]) -> str:
    """Deterministic id of one response: its thread, and the thread's running totals after it
    (`epoch` counts the restarts of those totals within the file, so values seen before a
    restart never collide with values after it)."""
    key = "codex\0" + thread_id + "\0" + str(epoch) + "\0" + "\0".join(map(str, totals))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _usage(value: Any) -> list[int] | None:
    """The five counts of a usage object (missing ones 0), None when there is no object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("usage")
    return [count(value.get(k), False) or 0 for k in USAGE_KEYS]


def read_codex(part: FilePart, lines: Iterable[bytes], carry: dict[str, Any], emit: Emit, stats: ImportStats) -> datetime | None:
    """The responses of one rollout's new lines (transcripts.Reader). `carry` keeps the thread
    id, version, current model, running totals and restarts between imports of the file."""
    thread = carry.get("thread_id") or None
    version = carry.get("cli_version") or None
    model = carry.get("model") or None
    totals: list[int] | None = carry.get("totals") or None
    epoch = int(carry.get("epoch") or 0)
    earliest: datetime | None = None
    if thread is None:
        m = _THREAD_IN_NAME.search(part.path.name)
        thread = m.group(1).lower() if m else None
    name_thread = thread
    for line in lines:
        if not line or line[-1:] in b" \t\r":
            line = line.strip()
            if not line:
                continue
        stats.lines += 1
        if _TOKEN_COUNT not in line and _TURN_CONTEXT not in line and _SESSION_META not in line:
            if not (line.startswith(b"{") and line.endswith(b"}")):
                stats.malformed += 1
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.malformed += 1
            continue
        if not isinstance(obj, dict):
            stats.malformed += 1
            continue
        kind = obj.get("type")
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            continue
        if kind == "session_meta":
            # the file's own session_meta comes first; a later one (history carried into a fork)
            # does not change whose responses follow
            if not carry.get("meta_seen"):
                carry["meta_seen"] = True
                thread = text(payload.get("id")) or name_thread
                version = text(payload.get("cli_version")) or version
                try:
                    ts = timestamp(payload.get("timestamp") or obj.get("timestamp"))
                    earliest = ts if earliest is None or ts < earliest else earliest
                except ValueError:
                    pass
            continue
        if kind == "turn_context":
            model = text(payload.get("model")) or model
            continue
        if kind != "event_msg" or payload.get("type") != "token_count":
            continue
        info = payload.get("info")
        if info is None:
            continue  # before the first response: rate limits only
        stats.usage_entries += 1
        try:
            if not isinstance(info, dict):
                raise ValueError("info")
            total = _usage(info.get("total_token_usage"))
            last = _usage(info.get("last_token_usage"))
            started = timestamp(obj.get("timestamp"))
            if total is None and last is None:
                raise ValueError("no usage")
            if total is None:  # only the last response's usage: the totals are the sum of them
                total = [a + b for a, b in zip(totals or [0] * 5, last)]
            if total == totals:
                stats.duplicates += 1  # the same token_count again
                continue
            grew = totals is not None and all(a >= b for a, b in zip(total, totals))
            if last is None:
                last = [a - b for a, b in zip(total, totals)] if grew else total
            inp, cached, out, reasoning, _ = last
            if cached > inp:
                raise ValueError("cached_input_tokens > input_tokens")
        except (ValueError, TypeError, OverflowError):
            stats.malformed += 1
            continue
        if totals is not None and not grew:
            epoch += 1  # the totals restarted (a resumed thread)
        totals = total
        # a token_count may name its model itself (as @ccusage/codex reads it); else the turn's
        model = text(info.get("model")) or text(payload.get("model")) or model
        if earliest is None or started < earliest:
            earliest = started
        emit({
            "id": event_id(thread or str(part.path), epoch, total),
            "started_at": started,
            "session_id": thread,
            "session_source": "codex_rollout",
            "agent_id": None,
            "client": "codex",
            "client_version": version,
            "provider": "openai",
            "api": "responses",
            "method": "POST",
            "path": "/v1/responses",
            "requested_model": model,
            "model": model,
            "streamed": False,
            "outcome": "ok",
            "stop_reason": None,
            "request_id": None,
            "message_id": None,
            "input_tokens": inp - cached,
            "output_tokens": out,
            "cache_read_tokens": cached,
            "cache_write_tokens": 0,  # OpenAI bills no cache writes
            "cache_write_1h_tokens": None,
            "reasoning_tokens": reasoning,
            "usage_source": "transcript",
            "usage_raw": info,
        })
    carry.update(thread_id=thread, cli_version=version, model=model, totals=totals, epoch=epoch)
    return earliest


def import_codex(
    db: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    timeout: float = 5.0,
    workers: int | None = 1,
) -> ImportStats:
    """Import what is new in the rollouts under `root` into the database `db` (idempotent).
    Arguments as for transcripts_claude.import_claude_code."""
    files = find_files(Path(root), "Codex rollouts")
    return run_import(db, SOURCE, files, read_codex, full=full, progress=progress, on_total=on_total, timeout=timeout,
                      workers=workers)


# --------------------------------------------------------------------------------------------
# The wire wins: the bounds of the rule in views.sql (imported_seen_on_wire), which is its home
# --------------------------------------------------------------------------------------------

# A response streams for a while before Codex writes its token_count (the row's started_at),
# while the wire row starts when the request does: the wire row may start up to this long
# before the transcript row...
CODEX_WIRE_BEFORE_S = 3600
# ...and this long after it (the two clocks are one machine's, but a token_count can be written
# a moment before the gateway's row is timed on a busy machine). views.sql spells both out
# (tests/test_import_codex.py checks that they agree).
CODEX_WIRE_AFTER_S = 300
