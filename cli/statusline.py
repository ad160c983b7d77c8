"""`llmsm statusline` without the CLI framework: cli/entry.py answers the command with `main`
before typer loads (its start-up would triple the cost of a line a status bar asks for every
few seconds). `python -m llmsm.cli.statusline [--db PATH]` prints the same line.

Two lines:
- fed Claude Code's status-line JSON on standard input (`session_id`, `cwd`, `model`, ...),
  that session's line, read from the snapshot the gateway keeps for it
  (analytics/status_files.py; no database, no DuckDB: it runs after every turn);
- otherwise, or when the gateway has no snapshot of that session, the global line
  (analytics/statusline.py's data).
The words are cli/format.py's; standard library otherwise.
"""

from __future__ import annotations

import os
import sys


def _db_arg(argv: list[str]) -> str | None:
    if len(argv) >= 2 and argv[0] == "--db":
        return os.path.expanduser(argv[1])
    if argv and argv[0].startswith("--db="):
        return os.path.expanduser(argv[0][5:])
    return None


def read_session_input(stream=None, timeout: float = 0.5) -> dict | None:
    """Claude Code's status-line JSON from standard input, when there is some: a dict with a
    string `session_id`, else None (a terminal, an empty or closed input, anything else).
    Reads until the end of the input or a complete JSON object, at most `timeout` seconds: a
    pipe that stays open, or one nobody writes to, must not hang a status bar."""
    import json

    stream = sys.stdin if stream is None else stream
    try:
        if stream is None or stream.isatty():
            return None
        fd = stream.fileno()
    except (OSError, ValueError):  # no file descriptor (a test runner's input)
        return None
    data = b""
    try:
        if os.name == "nt":
            data = os.read(fd, 1 << 20)
        else:
            import select
            import time

            deadline = time.monotonic() + timeout
            while len(data) < 1 << 20:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
                if data.rstrip().endswith(b"}"):
                    try:
                        json.loads(data)
                        break
                    except ValueError:
                        continue
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("session_id"), str) and obj["session_id"]:
        return obj
    return None


def session_line(db: str, session_id: str, color: bool) -> str | None:
    """The line of one session from its snapshot; None when the gateway has none."""
    import time

    from llmsm.analytics.status_files import read_snapshot, snapshot_dir
    from llmsm.cli.format import format_session_line

    snap = read_snapshot(snapshot_dir(db), session_id)
    if snap is None:
        return None
    return format_session_line(snap, color=color, now_ts=time.time())


def main(argv: list[str]) -> int:
    """Print the status line for `--db PATH` (or `--db=PATH`; default: $LLMSM_DB, else the user's
    database). Always exits 0, never with a traceback: a status bar shows whatever is printed."""
    line = None
    try:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        db = _db_arg(argv)
        given = read_session_input()
        if given is not None:
            if given.get("cwd") is not None or given.get("workspace") is not None:
                # Claude Code: its line goes to its own screen, which shows colour
                color = not os.environ.get("NO_COLOR")
            if db is None:
                from llmsm.analytics.status_files import default_db_path

                db = default_db_path()
            line = session_line(db, given["session_id"], color)
        if line is None:
            from pathlib import Path

            from llmsm.analytics.statusline import default_db_path as store_default, statusline
            from llmsm.cli.format import format_statusline

            line = format_statusline(statusline(Path(db) if db else store_default()), color=color)
    except Exception:  # a status line never shows a traceback
        line = "llmsm: unavailable"
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
