"""What carries over between sessions: notes kept for a project, and search over past sessions.

- Notes (`notes` table, migration m008_notes): `add_note`, `list_notes`, `remove_note`. A note
  belongs to a project, a project is its root directory (`project_root`: the top of the git work
  tree a path is in, else the directory itself). Every note is scrubbed of secrets
  (analytics/scrub.py) before it is stored, like the digests.
- `search`: notes and past sessions whose digest (goal, asks, files, commands, text:
  analytics/digest.py) matches every word of a query, newest first, each with a snippet.
- What a session's project is (`session_info`, `pick_project`): the latest project its digest
  showed, else its `llmsm run`'s directory, as `llmsm handoff` reads it (Handoff.project, which
  also asks the client's transcript).

Projects are named by path (absolute, `~`, or relative to the working directory) or by a bare
name, which matches every project whose root has that name (`llmsm` matches /home/u/src/llmsm).

Each function opens the database for its own work and closes it (DuckDB locks the file per
process; the gateway keeps writing): reads on a read-only connection (store.open_for_query),
writes on a short read-write one. Standard library only at import (the status line reaches
`project_root` through analytics/collisions.py); nothing here formats for a screen.
"""

from __future__ import annotations

import functools
import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .scrub import scrub

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "NOTE_CHARS",
    "NoteError",
    "add_note",
    "is_project_name",
    "latest_projects",
    "list_notes",
    "pick_project",
    "project_matches",
    "project_root",
    "remove_note",
    "resolve_project",
    "search",
    "search_within",
    "session_info",
]

UTC = timezone.utc
NOTE_CHARS = 4000  # a note longer than this is cut (with "…")
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
SNIPPET_CHARS = 160  # around the first word of the query
MAX_TERMS = 8
TERM_CHARS = 200
# Search reads the digests newest first, in windows going back in time, and stops as soon as it
# has found enough sessions: rows are stored in time order, so a recent window reads only the
# recent part of the table. Each window reads at most SEARCH_ROWS candidate rows (the SQL filter
# is a superset: it also matches the digest's keys; every candidate is checked in Python).
# With a time budget (the MCP tool's: an assistant waits for the answer), the next window is
# read only if, at the speed of the windows read so far, it fits in what is left of the budget;
# the answer then says from when on it searched, and `before` goes on from there.
SEARCH_WINDOWS = (timedelta(hours=1), timedelta(hours=4), timedelta(days=1), timedelta(days=3), timedelta(days=7),
                  timedelta(days=30), timedelta(days=90), timedelta(days=365), None)
SEARCH_ROWS = 2000
SEARCH_SMALL = 20_000  # a history of at most this many requests is read in one go, whatever the budget
NOTE_FIELDS = ("id", "created_at", "project", "note", "source", "session_id")


class NoteError(ValueError):
    """A note or a query that cannot be used; str(e) is one line for users."""


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# Projects
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _root_of(path: str) -> str:
    p = Path(path)
    for d in (p, *p.parents):
        try:
            if (d / ".git").exists():  # a directory, or the file of a worktree or submodule
                return str(d)
        except OSError:
            break
    return str(p)


def project_root(path: str | os.PathLike[str]) -> str:
    """The project `path` is in: the top of its git work tree (the nearest directory up that holds
    `.git`), else the path itself; absolute, symlinks resolved (as a client's `getcwd` reports
    its directory). A path that does not exist here is normalized and kept."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path.cwd() / p
    text = os.path.realpath(p) if p.exists() else os.path.normpath(p)
    return _root_of(text)


def is_project_name(value: str) -> bool:
    """A bare name ("llmsm"), not a path ("/src/llmsm", "~/llmsm", "./llmsm", "src/llmsm")."""
    return "/" not in value and os.sep not in value and not value.startswith(("~", ".")) and value not in ("", ".")


def resolve_project(value: str | None, *, default: str | os.PathLike[str] | None = None) -> str:
    """The project a caller names: None or "" -> the project of `default` (else of the working
    directory); a path -> its project_root; a bare name -> the name itself (see project_matches)."""
    text = (value or "").strip()
    if not text:
        return project_root(default if default is not None else Path.cwd())
    if is_project_name(text):
        return text
    return project_root(text)


def project_matches(wanted: str, root: str | None) -> bool:
    """Whether the project `root` is the one `wanted` (from resolve_project) names: the same
    root or one inside it, or for a bare name, a root of that name."""
    if not root:
        return False
    if is_project_name(wanted):
        return os.path.basename(root.rstrip("/")) == wanted
    return root == wanted or root.startswith(wanted.rstrip("/") + "/")


def pick_project(digest_project: Any, run_cwd: str | None, run_branch: str | None) -> dict[str, Any] | None:
    """A session's project (cwd, git, branch, root): the latest its digest showed, else its
    `llmsm run`'s directory and branch."""
    from .digest import parse_delta

    project = parse_delta(digest_project) if digest_project is not None else None
    if project and isinstance(project.get("cwd"), str) and project["cwd"]:
        out = {k: project[k] for k in ("cwd", "git", "branch") if k in project}
    elif run_cwd:
        out = {"cwd": run_cwd, "branch": run_branch} if run_branch else {"cwd": run_cwd}
    else:
        return None
    out["cwd"] = scrub(out["cwd"])
    out["root"] = project_root(out["cwd"])
    return out


# The latest project of each of some sessions, in windows going back from `at` (rows are stored
# in time order, so a recent window reads only the recent part of the table), until every
# session has one or the whole history has been read.
PROJECT_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=30), None)
_PROJECTS_SQL = """
SELECT session_id, (arg_max(digest, started_at)->'project')::VARCHAR
FROM events
WHERE session_id IN (SELECT unnest($ids::VARCHAR[])) AND digest IS NOT NULL AND started_at <= $hi{lo}
  AND contains(digest::VARCHAR, '"project":')
GROUP BY session_id
"""


def latest_projects(con: Any, session_ids: list[str], at: datetime) -> dict[str, str]:
    """The latest `project` delta (JSON text) each session's digest showed as of `at`; sessions
    without one are left out. Reads back in PROJECT_WINDOWS, the sessions not yet found only."""
    out: dict[str, str] = {}
    missing = sorted(set(session_ids))
    hi = at
    for window in PROJECT_WINDOWS:
        if not missing:
            break
        lo = at - window if window is not None else None
        params: dict[str, Any] = {"ids": missing, "hi": hi}
        if lo is not None:
            params["lo"] = lo
        sql = _PROJECTS_SQL.format(lo=" AND started_at > $lo" if lo is not None else "")
        for sid, project in con.execute(sql, params).fetchall():
            if project is not None:
                out[sid] = project
        missing = [m for m in missing if m not in out]
        hi = lo if lo is not None else hi
    return out


_INFO_SQL = """
WITH ids AS (SELECT DISTINCT unnest($ids::VARCHAR[]) AS session_id),
ev AS (
    SELECT session_id,
        arg_max(label, started_at) FILTER (WHERE label IS NOT NULL) AS label,
        arg_max(client, started_at) FILTER (WHERE client IS NOT NULL AND client <> 'unknown') AS client,
        max(coalesce(ended_at, started_at)) AS last_seen
    FROM events WHERE session_id IN (SELECT session_id FROM ids) AND started_at <= $at AND started_at >= $since
    GROUP BY session_id
),
run AS (
    SELECT session_id, arg_max(label, started_at) AS run_label, arg_max(cwd, started_at) AS run_cwd,
           arg_max(git_branch, started_at) AS run_branch
    FROM runs WHERE session_id IN (SELECT session_id FROM ids) AND started_at <= $at
    GROUP BY session_id
)
SELECT ids.session_id, ev.label, ev.client, ev.last_seen, run.run_label, run.run_cwd, run.run_branch
FROM ids LEFT JOIN ev USING (session_id) LEFT JOIN run USING (session_id)
"""


def session_info(
    con: Any, session_ids: list[str], *, at: datetime | None = None, since: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """label, client, last_seen and project (pick_project) of each session as of `at`. `since`
    (a time each of those sessions was seen at or after, e.g. a request of it just found)
    bounds the scan for the label, client and last_seen: the latest ones are at or after it.
    The project is the latest its digest showed (latest_projects, going back from last_seen)."""
    if not session_ids:
        return {}
    at = at or _now()
    params = {"ids": list(session_ids), "at": at, "since": since or datetime.min.replace(tzinfo=UTC)}
    rows = con.execute(_INFO_SQL, params).fetchall()
    seen = [r[3] for r in rows if r[3] is not None]
    projects = latest_projects(con, [r[0] for r in rows], min(max(seen), at) if seen else at)
    out = {}
    for sid, label, client, last_seen, run_label, run_cwd, run_branch in rows:
        out[sid] = {"label": label or run_label, "client": client, "last_seen": last_seen,
                    "project": pick_project(projects.get(sid), run_cwd, run_branch)}
    return out


# --------------------------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------------------------


def _clean_note(note: Any) -> str:
    from .digest import clean_text

    if not isinstance(note, str) or not note.strip():
        raise NoteError("a note needs some text")
    text = clean_text(note, NOTE_CHARS)
    if not text:
        raise NoteError("a note needs some text")
    return text


def _note_dict(row: tuple) -> dict[str, Any]:
    return dict(zip(NOTE_FIELDS, row))


def _no_notes_table(exc: BaseException) -> bool:
    """A database from before m008_notes, read-only and not migrated (the gateway held it)."""
    import duckdb

    return isinstance(exc, duckdb.CatalogException) and "notes" in str(exc)


def add_note(
    db_path: str | os.PathLike[str], note: str, project: str | None = None, *,
    source: str | None = None, session_id: str | None = None, timeout: float = 5.0,
) -> dict[str, Any]:
    """Keep `note` for `project` (resolve_project: default the working directory's project; a
    bare name becomes the one known project of that name, if there is exactly one). The text is
    scrubbed of secrets and cut to NOTE_CHARS. Returns the note as stored (NOTE_FIELDS).
    Raises NoteError for an empty note, store.StoreError when the database cannot be written."""
    from .store import StoreError, connect

    text = _clean_note(note)
    wanted = resolve_project(project)
    con = connect(db_path, timeout=timeout)
    try:
        if is_project_name(wanted):
            known = [r[0] for r in con.execute("SELECT DISTINCT project FROM notes").fetchall()]
            named = [k for k in known if project_matches(wanted, k)]
            if len(named) == 1:
                wanted = named[0]
        row = None
        for _ in range(5):  # 8 hex digits: a clash is rare, and then another id is drawn
            note_id = secrets.token_hex(4)
            values = [note_id, _now(), wanted, text, source, session_id]
            try:
                con.execute("INSERT INTO notes (id, created_at, project, note, source, session_id) VALUES (?, ?, ?, ?, ?, ?)", values)
            except Exception as exc:  # noqa: BLE001 - the constraint is checked below
                import duckdb

                if isinstance(exc, duckdb.ConstraintException):
                    continue
                raise StoreError(f"cannot keep the note in {db_path}: {str(exc).strip().splitlines()[0]}") from exc
            row = values
            break
        if row is None:
            raise StoreError("cannot draw a free note id")
        return _note_dict(tuple(row))
    finally:
        con.close()


def _terms(query: str | None) -> list[str]:
    if query is None:
        return []
    if not isinstance(query, str):
        raise NoteError("the query must be text")
    terms = [t.lower()[:TERM_CHARS] for t in query.split()]
    if len(terms) > MAX_TERMS:
        raise NoteError(f"a query of at most {MAX_TERMS} words, please")
    return terms


def _limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise NoteError("limit must be a positive whole number")
    return min(int(limit), MAX_LIMIT)


def _notes_sql(wanted: str | None, terms: list[str], before: datetime | None = None) -> tuple[str, dict[str, Any]]:
    where, params = [], {}
    if before is not None:
        where.append("created_at <= $before")
        params["before"] = before
    if wanted is not None:
        if is_project_name(wanted):
            where.append("parse_filename(project) = $project")
        else:
            where.append("(project = $project OR starts_with(project, rtrim($project, '/') || '/'))")
        params["project"] = wanted
    for i, term in enumerate(terms):
        where.append(f"contains(lower(note), $t{i})")
        params[f"t{i}"] = term
    sql = f"SELECT {', '.join(NOTE_FIELDS)} FROM notes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY created_at DESC, id LIMIT $limit", params


def _read(db_path: str | os.PathLike[str], timeout: float):
    from .store import open_for_query

    return open_for_query(db_path, timeout=timeout)


def list_notes(
    db_path: str | os.PathLike[str], project: str | None = None, query: str | None = None, limit: int | None = DEFAULT_LIMIT,
    *, all_projects: bool = False, timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """Notes of `project` (resolve_project: default the working directory's), of every project
    with `all_projects`, newest first; with `query`, those holding every word of it (any case).
    A database that does not exist yet has no notes."""
    from .store import DatabaseMissing

    terms = _terms(query)
    n = _limit(limit)
    wanted = None if all_projects else resolve_project(project)
    sql, params = _notes_sql(wanted, terms)
    try:
        con = _read(db_path, timeout)
    except DatabaseMissing:
        return []
    try:
        return [_note_dict(r) for r in con.execute(sql, {**params, "limit": n}).fetchall()]
    except Exception as exc:  # noqa: BLE001
        if _no_notes_table(exc):
            return []
        raise
    finally:
        con.close()


def remove_note(db_path: str | os.PathLike[str], note_id: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Remove the note `note_id` (its id, or a unique prefix of 4 characters or more) and return
    it. Raises NoteError when no note or several match."""
    from .store import DatabaseMissing, connect

    ref = (note_id or "").strip().lower() if isinstance(note_id, str) else ""
    if len(ref) < 4:
        raise NoteError("give the note's id (at least its first 4 characters; see `llmsm memory list`)")
    path = Path(db_path).expanduser()
    if not path.exists():
        raise DatabaseMissing.at(path)
    con = connect(path, timeout=timeout)
    try:
        rows = con.execute(f"SELECT {', '.join(NOTE_FIELDS)} FROM notes WHERE starts_with(id, $ref) ORDER BY id",
                           {"ref": ref}).fetchall()
        if not rows:
            raise NoteError(f"no note {ref!r}")
        if len(rows) > 1:
            raise NoteError(f"{ref!r} starts {len(rows)} notes' ids: " + ", ".join(r[0] for r in rows[:5]))
        con.execute("DELETE FROM notes WHERE id = $id", {"id": rows[0][0]})
        return _note_dict(rows[0])
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Search: notes and past sessions
# --------------------------------------------------------------------------------------------


def _json_fragment(term: str) -> str:
    """`term` as it appears inside a JSON string (quotes, backslashes and controls escaped)."""
    import json

    return json.dumps(term, ensure_ascii=False)[1:-1]


def _fields(delta: dict[str, Any]) -> list[tuple[str, str]]:
    """The searchable values of a delta: (field, text), in the order a snippet prefers them."""
    out: list[tuple[str, str]] = []
    if isinstance(delta.get("goal"), str):
        out.append(("goal", delta["goal"]))
    for ask in reversed(delta.get("asks") or []):
        if isinstance(ask, str):
            out.append(("ask", ask))
    for f in delta.get("files") or []:
        if isinstance(f, dict) and isinstance(f.get("path"), str):
            out.append(("file", f["path"]))
    for c in delta.get("commands") or []:
        if isinstance(c, dict) and isinstance(c.get("command"), str):
            out.append(("command", c["command"]))
    if isinstance(delta.get("text"), str):
        out.append(("text", delta["text"]))
    return out


def snippet(text: str, term: str, width: int = SNIPPET_CHARS) -> str:
    """Up to `width` characters of `text` around the first occurrence of `term` (any case), "…"
    where it was cut, on one line, scrubbed."""
    flat = " ".join(text.split())
    pos = flat.lower().find(term.lower()) if term else 0
    if len(flat) <= width:
        return scrub(flat)
    start = max(0, min(pos - width // 3, len(flat) - width)) if pos >= 0 else 0
    piece = flat[start : start + width]
    return scrub(("…" if start > 0 else "") + piece + ("…" if start + width < len(flat) else ""))


def _match(delta: dict[str, Any], terms: list[str]) -> tuple[str, str] | None:
    """(field, snippet) when every term is in the delta's values, else None."""
    fields = _fields(delta)
    if not fields:
        return None
    lowered = [(f, t, t.lower()) for f, t in fields]
    whole = "\n".join(low for _, _, low in lowered)
    if not all(term in whole for term in terms):
        return None
    for field, text, low in lowered:
        if terms[0] in low:
            return field, snippet(text, terms[0])
    return lowered[0][0], snippet(lowered[0][1], terms[0])


_CANDIDATES_SQL = """
SELECT session_id, started_at, digest::VARCHAR FROM events
WHERE digest IS NOT NULL AND session_id IS NOT NULL AND started_at <= $hi{lo} AND {terms}
ORDER BY started_at DESC LIMIT $cap
"""


_WINDOW_ROWS_SQL = "SELECT count(*) FROM events WHERE started_at <= $hi{lo}"


def _search_sessions(
    con: Any, terms: list[str], wanted: str | None, limit: int, at: datetime, hi: datetime, budget_s: float | None,
) -> tuple[list[dict[str, Any]], datetime | None]:
    """(results, searched_from): the sessions found among the requests started in
    (searched_from, hi], searched_from None when every request up to `hi` was read."""
    import time

    from .digest import parse_delta

    started = time.perf_counter()
    scanned_rows, scan_s = 0, 0.0  # the speed of the windows read so far
    # ILIKE needs no lower-cased copy of each digest; `%`, `_` and `\` in a word are escaped
    like = {f"t{i}": "%" + _json_fragment(t).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            for i, t in enumerate(terms)}
    cond = " AND ".join(f"digest::VARCHAR ILIKE $t{i} ESCAPE '\\'" for i in range(len(terms)))
    found: dict[str, dict[str, Any]] = {}
    info: dict[str, dict[str, Any]] = {}
    rejected: set[str] = set()  # sessions of another project
    searched_from: datetime | None = hi
    windows = SEARCH_WINDOWS
    if con.execute(_WINDOW_ROWS_SQL.format(lo=""), {"hi": hi}).fetchone()[0] <= SEARCH_SMALL:
        windows = (None,)
    for window in windows:
        lo = at - window if window is not None else None
        if lo is not None and lo >= hi:
            continue  # a window that ends before `hi` (a search going on from `before`)
        bounds = {"hi": hi, **({"lo": lo} if lo is not None else {})}
        lo_sql = " AND started_at > $lo" if lo is not None else ""
        rows_in = None
        if budget_s is not None and scanned_rows:
            rows_in = con.execute(_WINDOW_ROWS_SQL.format(lo=lo_sql), bounds).fetchone()[0]
            spent = time.perf_counter() - started
            if spent + rows_in * scan_s / scanned_rows > budget_s:
                break  # it would not fit: the caller learns from when on it was searched
        t0 = time.perf_counter()
        sql = _CANDIDATES_SQL.format(lo=lo_sql, terms=cond)
        rows = con.execute(sql, {**like, **bounds, "cap": SEARCH_ROWS}).fetchall()
        scan_s += time.perf_counter() - t0
        if budget_s is not None:
            if rows_in is None:
                rows_in = con.execute(_WINDOW_ROWS_SQL.format(lo=lo_sql), bounds).fetchone()[0]
            scanned_rows += max(rows_in, 1)
        hits: list[tuple[str, datetime, str, str]] = []
        for sid, started_at, text in rows:
            if sid in rejected:
                continue
            delta = parse_delta(text)
            m = _match(delta, terms) if delta else None
            if m is not None:
                hits.append((sid, started_at, m[0], m[1]))
        new = sorted({h[0] for h in hits} - set(info))
        if new:
            info.update(session_info(con, new, at=at, since=min(h[1] for h in hits if h[0] in new)))
        for sid, started_at, field, snip in hits:  # newest first
            s = info.get(sid) or {}
            root = (s.get("project") or {}).get("root")
            if wanted is not None and not project_matches(wanted, root):
                rejected.add(sid)
                continue
            if sid in found:
                found[sid]["hits"] += 1
                continue
            found[sid] = {
                "kind": "session", "at": started_at, "session_id": sid, "note_id": None,
                "label": s.get("label"), "client": s.get("client"), "project": root,
                "field": field, "snippet": snip, "hits": 1,
            }
        searched_from = lo
        if len(found) >= limit or lo is None:
            break
        hi = lo
    return list(found.values()), searched_from


def search(
    db_path: str | os.PathLike[str], query: str, project: str | None = None, limit: int | None = DEFAULT_LIMIT, *,
    at: datetime | None = None, timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """Notes and past sessions holding every word of `query` (any case), newest first, at most
    `limit`: sessions by their digests' goal, asks, files, commands and text (one result per
    session: its newest matching request, with `hits` among the requests read), notes by their
    text. `project` (resolve_project; None: every project) keeps those of that project. Each:
    kind ('session' | 'note'), at, session_id, note_id, label, client, project, field, snippet,
    hits. The whole history is searched (search_within bounds the time). Raises NoteError for an
    empty query."""
    return search_within(db_path, query, project, limit, at=at, timeout=timeout)["results"]


def search_within(
    db_path: str | os.PathLike[str], query: str, project: str | None = None, limit: int | None = DEFAULT_LIMIT, *,
    at: datetime | None = None, before: datetime | None = None, budget_s: float | None = None, timeout: float = 5.0,
) -> dict[str, Any]:
    """`search` among what was recorded before `before` (default: up to now), reading back in
    time for about `budget_s` seconds at most (None: the whole history). Returns {"results"
    (as search gives them), "searched_from": the time from which on (exclusive) requests were
    read, None when all of them were; notes are all read up to `before`}."""
    import duckdb

    from .store import DatabaseMissing, StoreError

    terms = _terms(query)
    if not terms:
        raise NoteError("search for what? give a word or more")
    n = _limit(limit)
    wanted = resolve_project(project) if project else None
    at = at or _now()
    hi = min(_utc(before), at) if before is not None else at
    try:
        con = _read(db_path, timeout)
    except DatabaseMissing:
        return {"results": [], "searched_from": None}
    try:
        results, searched_from = _search_sessions(con, terms, wanted, n, at, hi, budget_s)
        sql, params = _notes_sql(wanted, terms, hi)
        try:
            notes = con.execute(sql, {**params, "limit": n}).fetchall()
        except duckdb.Error as exc:
            if not _no_notes_table(exc):
                raise
            notes = []
    except duckdb.Error as exc:
        raise StoreError(f"cannot search {db_path}: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        con.close()
    for r in notes:
        note = _note_dict(r)
        results.append({
            "kind": "note", "at": note["created_at"], "session_id": note["session_id"], "note_id": note["id"],
            "label": None, "client": None, "project": note["project"], "field": "note",
            "snippet": snippet(note["note"], terms[0]), "hits": 1,
        })
    results.sort(key=lambda r: r["at"], reverse=True)
    return {"results": results[:n], "searched_from": searched_from}


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
