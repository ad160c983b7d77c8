"""`llmsm mcp`: llmsm's data for the assistants, as an MCP server over stdio (official `mcp` SDK).

Tools (each answers a short text for the model and the same facts as structured content):

- `sessions`: the sessions active in the last N minutes (every project, or one): health and its
  top reason (file conflicts included), context fill, cost, recent files, latest ask
  (analytics/awareness.py over the dashboard's frame);
- `session_brief`: a session's handoff brief, as `llmsm handoff` writes it (analytics/handoff.py);
- `search`: past sessions and notes that match a query (analytics/memory.search_within: it reads
  back in time for SEARCH_BUDGET_S, then says where it stopped; `before` goes on from there);
- `remember` / `recall`: notes kept for a project (analytics/memory.py), by default the project
  the server was started in (its working directory; a git repository's root when inside one).

Start-up is what matters: Claude Code in `-p` leaves out a server that has not answered
`initialize` about 2 s after launch, and importing the SDK alone takes ~1.1 s. So cli/entry.py
hands `llmsm mcp [--db PATH]` to `main` here before the CLI framework loads, nothing but the SDK
is imported before the server answers, and the database is opened only when a tool is called:
a short read-only connection per call (store.open_for_query, which waits for a busy writer),
a short read-write one for `remember`. DuckDB locks the file per process and the gateway keeps
writing, so nothing is held between calls; calls take turns on one lock (a read-only and a
read-write connection cannot be open in one process at once). Half a second after start, a
thread imports the analytics modules and builds the tokenizer the brief is measured with, so
the first call does not pay for them.

Bad arguments (a wrong type, a value out of range, an unknown argument, a session that does not
exist) get a tool error with one clear line, never a crash of the server.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations, which are
# names local to build_server (the SDK is imported there, not at the top).
import inspect
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

SERVER_NAME = "llmsm"
INSTRUCTIONS = (
    "llmsm records every AI coding session on this machine (from the API traffic). Use `sessions` to see "
    "what other sessions are doing right now (and whether one edits the same files: file_conflict), "
    "`search` before re-investigating something a past session may have found, `session_brief` to "
    "pick up another session's work, and `remember` / `recall` to keep lessons for this project."
)
DEFAULT_ACTIVE_MINUTES = 60.0
MAX_ACTIVE_MINUTES = 7 * 24 * 60.0
QUERY_TIMEOUT_S = 3.0  # waiting for the gateway's write lock, at most
SEARCH_BUDGET_S = 0.15  # `search` reads back in time about this long, then says where it stopped
WARM_UP_DELAY_S = 0.5
UTC = timezone.utc


# --------------------------------------------------------------------------------------------
# Plain data and text
# --------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """`value` as JSON data: datetimes as ISO 8601, tuples and sets as lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "?"


def _who(label: str | None, session_id: str | None) -> str:
    if not session_id:
        return label or "?"
    return f"{label} ({session_id})" if label else session_id


def sessions_text(sessions: list[dict[str, Any]], minutes: float, project: str | None) -> str:
    from llmsm.cli.format import human_usd

    scope = f"project {project}" if project else "all projects"
    if not sessions:
        return f"No session active in the last {minutes:g} min ({scope})."
    lines = [f"{len(sessions)} session{'s' if len(sessions) != 1 else ''} active in the last {minutes:g} min ({scope}):"]
    for s in sessions:
        where = s["project"] or "project unknown"
        if s["branch"]:
            where += f" ({s['branch']})"
        lines.append(f"- {_who(s['label'], s['session_id'])} · {s['client'] or 'unknown client'} · {where} · {s['state']}")
        health = f"{s['status']} {s['score']}"
        if s["top_reason"]:
            health += f": {s['top_reason']['message']}"
            if s["reasons"] > 1:
                health += f" (+{s['reasons'] - 1} more)"
        bits = [health]
        if s["context_fill"] is not None:
            bits.append(f"context {s['context_fill']:.0%}")
        if s["cost_usd"] is not None:
            bits.append(human_usd(s["cost_usd"]))
        lines.append("  " + " · ".join(bits))
        if s["doing"] or s["goal"]:
            lines.append(f"  doing: {s['doing'] or s['goal']}")
        if s["files"]:
            root = (s["project"] or "").rstrip("/") + "/"
            shown = [f["path"][len(root):] if len(root) > 1 and f["path"].startswith(root) else f["path"] for f in s["files"]]
            lines.append("  files: " + ", ".join(f"{p} ({f['action']})" for p, f in zip(shown, s["files"])))
    return "\n".join(lines)


def search_text(results: list[dict[str, Any]], query: str, searched_from: datetime | None = None) -> str:
    more = ""
    if searched_from is not None:
        more = (f" Requests before {plain(searched_from)} were not searched: call search again "
                f"with before={plain(searched_from)!r} for older ones.")
    if not results:
        return f"Nothing found for {query!r}.{more}"
    lines = [f"{len(results)} result{'s' if len(results) != 1 else ''} for {query!r}, newest first:{more}"]
    for r in results:
        where = f", {r['project']}" if r["project"] else ""
        if r["kind"] == "note":
            lines.append(f"- note {r['note_id']} ({_when(r['at'])}{where}): {r['snippet']}")
        else:
            hits = f", {r['hits']} matching requests" if r["hits"] > 1 else ""
            lines.append(f"- session {_who(r['label'], r['session_id'])} ({_when(r['at'])}{where}{hits}) "
                         f"{r['field']}: {r['snippet']}")
    return "\n".join(lines)


def notes_text(notes: list[dict[str, Any]], project: str) -> str:
    if not notes:
        return f"No notes for {project}."
    lines = [f"{len(notes)} note{'s' if len(notes) != 1 else ''} for {project}, newest first:"]
    for n in notes:
        lines.append(f"- {n['id']} ({_when(n['created_at'])}): {n['note']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The tools (plain functions: the server wraps them)
# --------------------------------------------------------------------------------------------


class ToolFailure(Exception):
    """What the caller gets back as a tool error: one line."""


def _parse_before(value: str | None) -> datetime | None:
    """`before` of the search tool: an ISO 8601 time (as a previous answer gives it)."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolFailure(f"before: {value!r} is not an ISO 8601 time such as 2026-11-02T09:30:00+00:00") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class Tools:
    """The tools' work, against one database, for the project the server was started in."""

    def __init__(self, db: Path, project: str) -> None:
        self.db = db
        self.project = project
        self.lock = threading.Lock()

    def _connection(self):
        from llmsm.analytics.store import open_for_query

        return open_for_query(self.db, timeout=QUERY_TIMEOUT_S)

    def _guard(self, fn, *args: Any, **kw: Any) -> Any:
        """Run `fn` holding the lock; the store's errors and bad input become ToolFailure."""
        import duckdb

        from llmsm.analytics.memory import NoteError
        from llmsm.analytics.store import StoreError

        with self.lock:
            try:
                return fn(*args, **kw)
            except (StoreError, NoteError) as exc:
                raise ToolFailure(str(exc)) from exc
            except duckdb.Error as exc:
                raise ToolFailure(f"cannot read {self.db}: {str(exc).strip().splitlines()[0]}") from exc

    def sessions(self, project: str | None, active_minutes: float) -> tuple[str, dict[str, Any]]:
        from llmsm.analytics.awareness import active_sessions
        from llmsm.analytics.memory import resolve_project
        from llmsm.analytics.store import DatabaseMissing

        wanted = resolve_project(project) if project else None

        def work() -> list[dict[str, Any]]:
            try:
                con = self._connection()
            except DatabaseMissing:
                return []
            try:
                return active_sessions(con, active_minutes=active_minutes, project=wanted)
            finally:
                con.close()

        found = self._guard(work)
        data = {"active_minutes": active_minutes, "project": wanted, "sessions": found}
        return sessions_text(found, active_minutes, wanted), data

    def session_brief(self, session: str, max_tokens: int) -> tuple[str, dict[str, Any]]:
        from llmsm.analytics.dashboard import find_sessions
        from llmsm.analytics.handoff import compose_brief, handoff_json, load_handoff
        from llmsm.analytics.store import DatabaseMissing

        ref = session.strip()
        if not ref:
            raise ToolFailure("session: give a session id, a unique prefix of one, or a label (see the sessions tool)")

        def work():
            try:
                con = self._connection()
            except DatabaseMissing:
                raise ToolFailure(f"no session matches {ref!r}: nothing has been recorded yet") from None
            try:
                found = find_sessions(con, ref)
                if not found:
                    raise ToolFailure(f"no session matches {ref!r} (an id, a unique prefix of one, or a label)")
                if len(found) > 1 and found[0]["how"] == "prefix":
                    ids = ", ".join(f["session_id"] for f in found[:5])
                    raise ToolFailure(f"{ref!r} starts {len(found)} session ids ({ids}{', …' if len(found) > 5 else ''}): give more of it")
                return load_handoff(con, found[0]["session_id"])
            finally:
                con.close()

        h = self._guard(work)
        brief = compose_brief(h, max_tokens)
        return brief.text, handoff_json(h, brief)

    def search(self, query: str, project: str | None, limit: int, before: str | None = None) -> tuple[str, dict[str, Any]]:
        from llmsm.analytics.memory import resolve_project, search_within

        wanted = resolve_project(project) if project else None
        until = _parse_before(before)
        found = self._guard(search_within, self.db, query, project=wanted, limit=limit, before=until,
                            budget_s=SEARCH_BUDGET_S, timeout=QUERY_TIMEOUT_S)
        results, searched_from = found["results"], found["searched_from"]
        data = {"query": query, "project": wanted, "results": results, "searched_from": searched_from,
                "before": until}
        return search_text(results, query, searched_from), data

    def remember(self, note: str, project: str | None) -> tuple[str, dict[str, Any]]:
        from llmsm.analytics.memory import add_note, resolve_project

        wanted = resolve_project(project, default=self.project)
        kept = self._guard(add_note, self.db, note, wanted, source="mcp", timeout=QUERY_TIMEOUT_S)
        return f"Kept note {kept['id']} for {kept['project']}: {kept['note']}", {"note": kept}

    def recall(self, project: str | None, query: str | None) -> tuple[str, dict[str, Any]]:
        from llmsm.analytics.memory import list_notes, resolve_project

        wanted = resolve_project(project, default=self.project)
        notes = self._guard(list_notes, self.db, wanted, query or None, timeout=QUERY_TIMEOUT_S)
        return notes_text(notes, wanted), {"project": wanted, "query": query or None, "notes": notes}


def warm_up() -> None:
    """Import what the tools need and build the brief's tokenizer, off the request path."""
    try:
        import llmsm.analytics.awareness  # noqa: F401  (dashboard, health, digest, memory)
        import llmsm.analytics.handoff  # noqa: F401
        import llmsm.analytics.store  # noqa: F401
        from llmsm.analytics.prices import context_window
        from llmsm.analytics.tokens import encoding_for_model

        context_window("claude-sonnet-4-5", "anthropic", False)
        encoding_for_model("claude-sonnet-4-5")
    except Exception:  # noqa: BLE001 - a failed warm-up costs the first call its time, nothing more
        pass


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _explain(exc: BaseException) -> str:
    """A pydantic ValidationError as one line: "active_minutes: input should be greater than 0"."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0]
    parts = []
    for e in errors():
        where = ".".join(str(p) for p in e.get("loc", ())) or "arguments"
        msg = str(e.get("msg", "invalid")).rstrip(".")
        parts.append(f"{where}: {msg[:1].lower()}{msg[1:]}")
    return "; ".join(parts) or "invalid arguments"


def build_server(db: Path, project: str):
    """The MCPServer with llmsm's tools on `db`; `project`: the default of remember / recall."""
    from pydantic import Field, ValidationError

    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent, ToolAnnotations

    tools = Tools(db, project)

    def result(text: str, data: dict[str, Any]) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=plain(data))

    def run(fn, *args: Any) -> CallToolResult:
        try:
            return result(*fn(*args))
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None

    ProjectArg = Annotated[str | None, Field(
        description="A project: its directory (absolute, ~ or relative to the server's) or a bare name such as "
                    "'llmsm' (every project whose root has that name). Default: every project.")]

    def sessions(
        project: ProjectArg = None,
        active_minutes: Annotated[float, Field(gt=0, le=MAX_ACTIVE_MINUTES,
                                               description="Sessions seen within this many minutes.")] = DEFAULT_ACTIVE_MINUTES,
    ) -> CallToolResult:
        """The AI coding sessions active on this machine in the last `active_minutes` (default 60), of every
        project unless `project` is given: for each its id, label, client, project and branch, health with its
        top reason (file_conflict: another session edits the same file), context fill, cost, the files it touched
        recently and its latest request. Look here before editing files another session may be changing."""
        return run(tools.sessions, project, active_minutes)

    def session_brief(
        session: Annotated[str, Field(description="A session id, a unique prefix of one, or its label.")],
        max_tokens: Annotated[int, Field(ge=100, le=20_000, description="Longest brief, in tokens.")] = 2000,
    ) -> CallToolResult:
        """The handoff brief of another session (as `llmsm handoff` writes it): its goal, latest requests, files
        read and changed, commands and failures, todo list, errors and last message, to carry on its work."""
        return run(tools.session_brief, session, max_tokens)

    def search(
        query: Annotated[str, Field(min_length=1, max_length=2000,
                                    description="Words to find (all of them, any case).")],
        project: ProjectArg = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Most results.")] = 20,
        before: Annotated[str | None, Field(max_length=64, description=(
            "Only what was recorded before this time (ISO 8601): to go on where an answer says it stopped."))] = None,
    ) -> CallToolResult:
        """Past sessions and notes whose goal, requests, files, commands, last message or note text hold every
        word of `query`, newest first, each with a snippet and its session id. Use it before investigating
        something a past session may already have found. It reads back in time for a moment; when it stopped
        before the oldest request, the answer says so and `before` goes on from there."""
        return run(tools.search, query, project, limit, before)

    def remember(
        note: Annotated[str, Field(min_length=1, max_length=20_000, description="The note: a lesson, a decision, a pitfall.")],
        project: Annotated[str | None, Field(description="The project it is for (a directory or a bare name); "
                                                         "default: the project the server runs in.")] = None,
    ) -> CallToolResult:
        """Keep a note for a project, for later sessions (`recall`, `search`). Secrets are redacted."""
        return run(tools.remember, note, project)

    def recall(
        project: Annotated[str | None, Field(description="The project (a directory or a bare name); "
                                                         "default: the project the server runs in.")] = None,
        query: Annotated[str | None, Field(max_length=2000, description="Only notes holding every word of this.")] = None,
    ) -> CallToolResult:
        """The notes kept for a project, newest first."""
        return run(tools.recall, project, query)

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    registered = {
        "sessions": (sessions, read_only),
        "session_brief": (session_brief, read_only),
        "search": (search, read_only),
        "remember": (remember, ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                                open_world_hint=False)),
        "recall": (recall, read_only),
    }
    arguments = {name: set(inspect.signature(fn).parameters) for name, (fn, _) in registered.items()}

    class Server(MCPServer):
        async def call_tool(self, name: str, arguments_in: dict[str, Any], context: Any = None):  # type: ignore[override]
            known = arguments.get(name)
            if known is not None:
                unknown = sorted(set(arguments_in or {}) - known)
                if unknown:
                    raise ToolError(f"{name}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                    f"(it takes {', '.join(sorted(known))})")
            try:
                return await super().call_tool(name, arguments_in, context)
            except ToolError as exc:
                if isinstance(exc.__cause__, ValidationError):
                    raise ToolError(f"{name}: {_explain(exc.__cause__)}") from None
                raise

    server = Server(SERVER_NAME, instructions=INSTRUCTIONS, log_level="WARNING", version=_version())
    for name, (fn, annotations) in registered.items():
        server.add_tool(fn, name=name, annotations=annotations, structured_output=False)
    return server


def _version() -> str:
    from llmsm import __version__

    return __version__


def serve(db: Path, project_dir: str | os.PathLike[str] | None = None) -> None:
    """Run the server on stdio until the client closes it."""
    from llmsm.analytics.memory import project_root

    project = project_root(project_dir if project_dir is not None else Path.cwd())
    server = build_server(db, project)
    # only once the server is built: imported alongside the SDK, the analytics modules would
    # compete with it for the interpreter and delay the answer to `initialize`
    timer = threading.Timer(WARM_UP_DELAY_S, warm_up)
    timer.daemon = True
    timer.start()
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        pass


def main(argv: list[str]) -> int:
    """`llmsm mcp [--db PATH]` before the CLI framework loads (cli/entry.py)."""
    db: Path | None = None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--db" and args:
            db = Path(args.pop(0)).expanduser()
        elif a.startswith("--db="):
            db = Path(a[5:]).expanduser()
        else:
            sys.stderr.write(f"error: unexpected argument {a!r} (usage: llmsm mcp [--db PATH])\n")
            return 2
    if db is None:
        from llmsm.analytics.statusline import default_db_path  # the store's rule, without importing the store

        db = default_db_path()
    serve(db.absolute())
    return 0
