"""What every session is doing right now: the answer of the MCP tool `sessions` (`llmsm mcp`).

For the sessions seen within a window (default 60 minutes), of every project or of one:
the dashboard's frame (analytics/dashboard.load_frame: aggregates and health, file conflicts
included: nothing is re-derived here) and, from each session's digest (analytics/digest.py,
merged by `SessionDigest`), its project, the files it touched recently and its latest ask.

The digest part is one query for all those sessions, bounded by their first request (the older
part of the table is not read), and it reads only the deltas that decide what is shown: the latest one carrying a project, the latest carrying asks, the first carrying
the goal, and those of the last RECENT_FILES_MINUTES carrying files. Merged in time order by
`SessionDigest`, they give the same project, goal, latest ask and recent files as the whole
digest would, at a fraction of the reading.

Nothing here imports mitmproxy, typer or rich, nor formats for a screen.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .dashboard import DEFAULT_WINDOW_MINUTES, load_frame
from .digest import SessionDigest, truncate
from .memory import pick_project, project_matches, resolve_project

__all__ = ["RECENT_FILES_MINUTES", "active_sessions"]

UTC = timezone.utc
RECENT_FILES_MINUTES = 30.0
MAX_FILES_SHOWN = 10
DOING_CHARS = 200  # the latest ask, short

# A delta holds a key only with a value (DigestDelta), written as compact JSON: `"goal":` is in
# its text exactly when it has a goal (inside a string value a quote is escaped), which spares
# parsing the JSON of every row.
_DIGESTS_SQL = """
SELECT session_id,
    arg_min(digest, started_at) FILTER (WHERE contains(digest::VARCHAR, '"goal":')),
    min(started_at) FILTER (WHERE contains(digest::VARCHAR, '"goal":')),
    arg_max(digest, started_at) FILTER (WHERE contains(digest::VARCHAR, '"project":')),
    max(started_at) FILTER (WHERE contains(digest::VARCHAR, '"project":')),
    arg_max(digest, started_at) FILTER (WHERE contains(digest::VARCHAR, '"asks":')),
    max(started_at) FILTER (WHERE contains(digest::VARCHAR, '"asks":')),
    list({'at': started_at, 'digest': digest} ORDER BY started_at, id)
        FILTER (WHERE started_at >= $recent_from AND contains(digest::VARCHAR, '"files":'))
FROM events
WHERE session_id IN (SELECT unnest($ids::VARCHAR[])) AND digest IS NOT NULL
  AND started_at >= $first_seen AND started_at <= $at
GROUP BY session_id
"""


def _digests(con: Any, ids: list[str], at: datetime, recent_from: datetime, first_seen: datetime) -> dict[str, SessionDigest]:
    """`first_seen`: the earliest first request of those sessions, which bounds the scan (rows
    are stored in time order: the older part of the table is skipped, not read)."""
    out: dict[str, SessionDigest] = {}
    if not ids:
        return out
    rows = con.execute(_DIGESTS_SQL, {"ids": ids, "at": at, "recent_from": recent_from, "first_seen": first_seen}).fetchall()
    for sid, goal, goal_at, project, project_at, asks, asks_at, recent in rows:
        deltas = [(goal_at, goal), (project_at, project), (asks_at, asks)]
        deltas += [(r["at"], r["digest"]) for r in recent or ()]
        digest = SessionDigest(session_id=sid)
        seen = set()
        for when, delta in sorted((d for d in deltas if d[1] is not None), key=lambda d: d[0]):
            if (when, delta) in seen:  # the same delta can be the latest of two kinds
                continue
            seen.add((when, delta))
            digest.add(delta, when)
        out[sid] = digest.finish()
    return out


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def active_sessions(
    con: Any, *, active_minutes: float = DEFAULT_WINDOW_MINUTES, project: str | None = None,
    at: datetime | None = None, default_project: str | None = None,
) -> list[dict[str, Any]]:
    """The sessions seen within `active_minutes` before `at` (now), the one that needs attention
    most first, of every project, or of `project` (memory.resolve_project: a path or a bare
    name). Each: session_id, label, client, model, state, last_seen, project (root), cwd,
    branch, status, score, top_reason {factor, severity, message, advice}, reasons (how many),
    conflicts, context_fill, cost_usd, requests, errors, goal, doing (the latest ask, short),
    files (touched within RECENT_FILES_MINUTES: path, action, last_seen; newest first)."""
    at = datetime.now(UTC) if at is None else _utc(at)
    frame = load_frame(con, at=at, window_minutes=active_minutes)
    recent_from = at - timedelta(minutes=RECENT_FILES_MINUTES)
    firsts = [s.first_seen for s in frame.sessions if s.first_seen is not None]
    first_seen = min(firsts) if len(firsts) == len(frame.sessions) else datetime.min.replace(tzinfo=UTC)
    digests = _digests(con, [s.session_id for s in frame.sessions], at, recent_from, first_seen)
    wanted = resolve_project(project, default=default_project) if project else None
    out = []
    for s in frame.sessions:
        d = digests.get(s.session_id)
        where = pick_project(d.project if d is not None else None, s.cwd, s.git_branch)
        root = where.get("root") if where else None
        if wanted is not None and not project_matches(wanted, root):
            continue
        h = s.health
        top = h.reasons[0] if h is not None and h.reasons else None
        files = []
        if d is not None:
            recent = [f for f in d.files.values() if f["last_seen"] is not None and f["last_seen"] >= recent_from]
            recent.sort(key=lambda f: f["last_seen"], reverse=True)
            files = [{"path": f["path"], "action": f["action"], "last_seen": f["last_seen"]} for f in recent[:MAX_FILES_SHOWN]]
        ask = d.asks[-1] if d is not None and d.asks else None
        out.append({
            "session_id": s.session_id,
            "label": s.label,
            "client": s.client,
            "model": s.model,
            "state": s.state,
            "last_seen": s.last_seen,
            "project": root,
            "cwd": where.get("cwd") if where else None,
            "branch": (where.get("branch") if where else None) or s.git_branch,
            "status": s.status,
            "score": s.score,
            "top_reason": top.to_dict() if top is not None else None,
            "reasons": len(h.reasons) if h is not None else 0,
            "conflicts": [dict(c) for c in h.conflicts] if h is not None else [],
            "context_fill": s.context_fill,
            "cost_usd": s.cost_usd,
            "requests": s.requests,
            "errors": s.errors,
            "goal": truncate(d.goal, DOING_CHARS) if d is not None and d.goal else None,
            "doing": truncate(" ".join(ask.split()), DOING_CHARS) if ask else None,
            "files": files,
        })
    return out
