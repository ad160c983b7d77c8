"""Sessions that edit the same file at the same time: the health reason `file_conflict`.

Two sessions active within the last `conflict_active_min` minutes (15) that have both edited or
written the same file (digest files with action edit / write, analytics/digest.py) within the
last `conflict_edits_min` minutes (120) collide: each gets a conflict naming the other session
and the file. The thresholds live in analytics/health_rules.py with the other health numbers;
the health model (analytics/health.py) and the status line (analytics/statusline.py) turn the
conflicts into the reason, so every view shows them.

A file is the same file when its absolute path is: a relative path (Codex's apply_patch) is
taken against the session's working directory (its project: analytics/memory.pick_project),
and one without a known directory is left out. Two sessions with the same absolute path are in
the same project by construction.

One query over the digests of the active sessions, as of a moment `at` (like the dashboard):
the edits of the lookback window, and, only when two sessions or more edited something, each
editor's `llmsm run` and label; then those editors' latest projects (memory.latest_projects). Standard library only at import (the status line imports it).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from .health_rules import DEFAULT_THRESHOLDS, Thresholds
from .memory import latest_projects, pick_project

__all__ = ["CONFLICTS_SQL", "find_conflicts"]

EDIT_ACTIONS = ("edit", "write")

# kind 'edit': a delta with an edit or write in it (a superset: the text is checked in Python);
# 'run': the latest `llmsm run`; 'label'. The latest project a digest showed is read after it,
# for the editors only (memory.latest_projects: backwards in time, stopping once all are found).
CONFLICTS_SQL = """
WITH active AS (
    SELECT session_id, arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label
    FROM events
    WHERE session_id IS NOT NULL AND started_at <= $at AND started_at >= $scan_from
    GROUP BY session_id
    HAVING max(coalesce(ended_at, started_at)) >= $active_from
),
edits AS (
    SELECT session_id, started_at, digest::VARCHAR AS j FROM events
    WHERE session_id IN (SELECT session_id FROM active) AND digest IS NOT NULL
      AND started_at <= $at AND started_at >= $edits_from
      AND (contains(digest::VARCHAR, '"edit"') OR contains(digest::VARCHAR, '"write"'))
),
editors AS (SELECT DISTINCT session_id FROM edits),
pair AS (SELECT count(*) >= 2 AS yes FROM editors),
run AS (
    SELECT session_id, json_object('cwd', arg_max(cwd, started_at), 'branch', arg_max(git_branch, started_at))::VARCHAR AS run
    FROM runs
    WHERE (SELECT yes FROM pair) AND session_id IN (SELECT session_id FROM editors) AND started_at <= $at
    GROUP BY session_id
)
SELECT 'edit' AS kind, session_id, started_at, j AS value FROM edits WHERE (SELECT yes FROM pair)
UNION ALL SELECT 'run', session_id, NULL, run FROM run
UNION ALL SELECT 'label', session_id, NULL, label FROM active
    WHERE (SELECT yes FROM pair) AND label IS NOT NULL AND session_id IN (SELECT session_id FROM editors)
"""


def _params(at: datetime, t: Thresholds) -> dict[str, Any]:
    active_from = at - timedelta(minutes=t.conflict_active_min)
    return {
        "at": at,
        "active_from": active_from,
        "scan_from": active_from - timedelta(hours=1),  # an exchange may end long after it started
        "edits_from": at - timedelta(minutes=t.conflict_edits_min),
    }


def _absolute(path: str, cwd: str | None) -> str | None:
    if os.path.isabs(path):
        return os.path.normpath(path)
    if not cwd:
        return None
    return os.path.normpath(os.path.join(cwd, path))


def _shown(file: str, root: str | None) -> str:
    """The file as the session's user reads it: relative to its project root when inside it."""
    if root and file.startswith(root.rstrip("/") + "/"):
        return file[len(root.rstrip("/")) + 1 :]
    return file


def find_conflicts(con: Any, at: datetime, t: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, list[dict[str, Any]]]:
    """Sessions active as of `at` that share an edited file with another: session id -> its
    conflicts, the most recent first, each {path (as the session shows it), file (absolute),
    other_session, other_label, other_at (the other's latest edit of it), at (this one's)}."""
    import orjson

    rows = con.execute(CONFLICTS_SQL, _params(at, t)).fetchall()
    if not rows:
        return {}
    deltas: list[tuple[str, datetime, str]] = []
    runs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for kind, sid, started_at, value in rows:
        if kind == "edit":
            deltas.append((sid, started_at, value))
        elif kind == "run":
            runs[sid] = orjson.loads(value) if value else {}
        elif kind == "label":
            labels[sid] = value
    editors = sorted({d[0] for d in deltas})
    projects = latest_projects(con, editors, at) if len(editors) >= 2 else {}
    where: dict[str, dict[str, Any] | None] = {}
    for sid in editors:
        run = runs.get(sid) or {}
        where[sid] = pick_project(projects.get(sid), run.get("cwd"), run.get("branch"))
    # absolute file -> session -> its latest edit
    edited: dict[str, dict[str, datetime]] = {}
    for sid, started_at, text in deltas:
        try:
            delta = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        files = delta.get("files") if isinstance(delta, dict) else None
        if not isinstance(files, list):
            continue
        cwd = (where.get(sid) or {}).get("cwd")
        for f in files:
            if not isinstance(f, dict) or f.get("action") not in EDIT_ACTIONS or not isinstance(f.get("path"), str):
                continue
            file = _absolute(f["path"], cwd)
            if file is None:
                continue
            by = edited.setdefault(file, {})
            if sid not in by or started_at > by[sid]:
                by[sid] = started_at
    out: dict[str, list[dict[str, Any]]] = {}
    for file, by in edited.items():
        if len(by) < 2:
            continue
        for sid, mine in by.items():
            root = (where.get(sid) or {}).get("root")
            for other, theirs in by.items():
                if other == sid:
                    continue
                out.setdefault(sid, []).append({
                    "path": _shown(file, root), "file": file, "other_session": other,
                    "other_label": labels.get(other), "other_at": theirs, "at": mine,
                })
    for conflicts in out.values():
        conflicts.sort(key=lambda c: max(c["other_at"], c["at"]), reverse=True)
    return out
