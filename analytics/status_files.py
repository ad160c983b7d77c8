"""Where the per-session status snapshots live, and how one is read.

The gateway (addons/status_snapshot.py) keeps one small JSON file per session next to its
database, `<db>.status/<session>.json`, rewritten atomically (a temporary file, then
os.replace) whenever the session's line changes; `llmsm statusline` fed Claude Code's
status-line JSON reads only that file. What a snapshot holds: analytics/session_status.py.

Only os and json: `llmsm statusline` runs after every turn of an assistant and must not pay
for more (platformdirs alone costs ~10 ms: on Linux the default database is found here
without it, by platformdirs' rule; a test keeps both equal).
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["SNAPSHOT_VERSION", "default_db_path", "file_name", "read_snapshot", "snapshot_dir", "write_snapshot"]

SNAPSHOT_VERSION = 1
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def default_db_path() -> str:
    """$LLMSM_DB, else the user's database (store.default_db_path), as a string."""
    env = os.environ.get("LLMSM_DB")
    if env:
        return os.path.expanduser(env)
    home = os.environ.get("HOME", "")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if sys.platform.startswith("linux") and home.startswith("/") and (not xdg or xdg.startswith("/")):
        base = xdg or os.path.join(home, ".local", "share")
        return os.path.join(base, "llmsm", "llmsm.duckdb")
    import platformdirs

    return str(platformdirs.user_data_path("llmsm") / "llmsm.duckdb")


def snapshot_dir(db_path: str | os.PathLike[str]) -> str:
    """`<db>.status`: the snapshots of the sessions the gateway writing `db_path` saw."""
    return os.fspath(db_path) + ".status"


def file_name(session_id: str) -> str:
    """The snapshot's file name: the session id when it is a plain name (Claude Code's uuid,
    Codex's thread id), else a hash of it."""
    if 0 < len(session_id) <= 100 and session_id[0] != "." and set(session_id) <= _SAFE:
        return session_id + ".json"
    import hashlib

    return "h-" + hashlib.sha256(session_id.encode()).hexdigest()[:32] + ".json"


def read_snapshot(directory: str, session_id: str) -> dict | None:
    """The snapshot of `session_id`, None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(directory, file_name(session_id)), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION or data.get("session_id") != session_id:
        return None
    return data


def write_snapshot(directory: str, data: dict) -> None:
    """Write a snapshot atomically: readers see the old file or the new one, never a part.
    (The gateway's snapshot thread writes a few dozen a second when many sessions are busy:
    orjson, imported here and not by `llmsm statusline`, and the directory made only when the
    first write finds it missing.)"""
    import orjson

    path = os.path.join(directory, file_name(data["session_id"]))
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        text = orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except orjson.JSONEncodeError:  # what orjson cannot write (an integer beyond 64 bits): as before
        text = json.dumps(data, separators=(",", ":"), default=str).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except FileNotFoundError:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)
