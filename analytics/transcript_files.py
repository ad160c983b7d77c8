"""What is new in each transcript file since the last import: the file state and the reading.

Assistants only ever append to their transcripts (one JSON object per line), so an import
remembers per file (table ``import_files``, docs/schema.md) how far it read — the end of the
last complete line — with the file's size and modification time then, a fingerprint of what it
read, and a small ``carry`` (what the format needs to continue mid-file: the last response ids
of a Claude Code transcript, a Codex rollout's thread id, model and running totals). Next time:

* same size and modification time: the file is not even opened;
* grown, and the fingerprint of the part read before still matches: only the appended bytes
  are read, starting from the remembered state;
* shrunk, or the fingerprint differs (the file was rewritten): it is read again from the start.

Reading again is always safe — event ids derive from the entries, so nothing is counted twice —
it only costs time.

Nothing here touches the database or imports mitmproxy or typer.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FileState", "FilePart", "list_jsonl", "plan", "fingerprint", "CompleteLines"]

FINGERPRINT_BYTES = 4096  # from the start and before the end of the part read
CHUNK = 8 << 20  # read this much at a time: memory stays flat on a file of any size


@dataclass
class FileState:
    """One row of ``import_files``: how far one file was read."""

    path: str
    size: int  # st_size when it was read
    mtime_ns: int  # st_mtime_ns when it was read
    read_bytes: int  # the end of the last complete line read
    fingerprint: str  # see fingerprint()
    earliest: datetime | None = None  # the earliest entry timestamp seen in the file
    carry: dict[str, Any] = field(default_factory=dict)  # the format's own state at read_bytes


@dataclass
class FilePart:
    """A file to read now, from `start` (0, or where the previous import stopped)."""

    path: Path
    size: int
    mtime_ns: int
    start: int
    previous: FileState | None  # the state to continue from (None: from the start)
    reread: bool = False  # read before, but shrunk or rewritten since


def list_jsonl(root: Path, pattern: Callable[[str], bool] = lambda name: name.endswith(".jsonl")) -> list[tuple[Path, os.stat_result]]:
    """`root` itself if it is a file, else every matching file below it (sorted), with its stat.

    os.scandir gives the stat of each entry without another system call per file. Symbolic
    links to folders are not followed (a link to a parent would never end); links to files are.
    """
    st = root.stat()
    if not stat_mod.S_ISDIR(st.st_mode):
        return [(root, st)]
    found: list[tuple[str, os.stat_result]] = []
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # an unreadable sub-folder: its files cannot be read either
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and pattern(entry.name):
                    found.append((entry.path, entry.stat()))
            except OSError:
                continue
    found.sort(key=lambda item: item[0])  # by the path's text, before any Path is made
    return [(Path(path), st) for path, st in found]


def fingerprint(fh: Any, end: int) -> str:
    """SHA-256 of the first and the last FINGERPRINT_BYTES of the file's bytes [0, end)."""
    h = hashlib.sha256()
    fh.seek(0)
    h.update(fh.read(min(end, FINGERPRINT_BYTES)))
    tail = max(min(end, FINGERPRINT_BYTES), end - FINGERPRINT_BYTES)
    fh.seek(tail)
    h.update(fh.read(end - tail))
    return h.hexdigest()


def plan(
    files: list[tuple[Path, os.stat_result]], states: dict[str, FileState], full: bool = False
) -> tuple[list[FilePart], int]:
    """The files (or their new parts) to read, and how many are unchanged.

    `full` reads every file from the start (the remembered state is then only overwritten).
    """
    parts: list[FilePart] = []
    unchanged = 0
    for path, st in files:
        prev = None if full else states.get(str(path))
        if prev is None:
            parts.append(FilePart(path, st.st_size, st.st_mtime_ns, 0, None))
            continue
        if st.st_size == prev.size and st.st_mtime_ns == prev.mtime_ns:
            unchanged += 1
            continue
        if st.st_size < prev.read_bytes or not _same_start(path, prev):
            parts.append(FilePart(path, st.st_size, st.st_mtime_ns, 0, None, reread=True))
            continue
        # grown (or only touched: then nothing is read and the new time is remembered)
        parts.append(FilePart(path, st.st_size, st.st_mtime_ns, prev.read_bytes, prev))
    return parts, unchanged


def _same_start(path: Path, prev: FileState) -> bool:
    try:
        with open(path, "rb") as fh:
            return fingerprint(fh, prev.read_bytes) == prev.fingerprint
    except OSError:
        return False  # the read will report it


class CompleteLines:
    """The complete lines of a file from `start` on, without their line ends, in order.

    After iterating, `end` is the offset just after the last line consumed. A last line without
    its newline is consumed only if it is already a whole JSON object (a line being written is
    not: it is read next time, complete). `on_bytes(n)` is called as bytes are read.
    """

    def __init__(self, fh: Any, start: int, on_bytes: Callable[[int], None] | None = None) -> None:
        self.fh = fh
        self.start = start
        self.end = start
        self.on_bytes = on_bytes

    def __iter__(self) -> Iterator[bytes]:
        fh = self.fh
        fh.seek(self.start)
        pos = self.start
        rest = b""
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            if self.on_bytes is not None:
                self.on_bytes(len(chunk))
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            lines = data[:cut].split(b"\n")
            data = b""
            for line in lines:
                pos += len(line) + 1
                self.end = pos
                yield line
        if rest and _whole_object(rest):
            self.end = pos + len(rest)
            yield rest


def _whole_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False
