"""The session digest: what a session was about, as its requests showed it on the wire.

Each request's delta rides on its event row (`events.digest`, DIGEST-CONTRACT: issue 14):

    {"v": 1, "project": {"cwd": ..., "git": true, "branch": ...}, "goal": "...",
     "asks": ["..."], "files": [{"path": ..., "action": "read|edit|write"}],
     "commands": [{"command": ..., "failed": true|false|null}],
     "todos": [{"content": ..., "status": "pending|in_progress|completed"}], "text": "..."}

Every key but "v" is optional. Two halves live here, so that the bounds have one home:

- `DigestDelta`: the gateway fills one per request with what the request's new messages show
  (`set_project`, `set_goal`, `add_ask`, `add_file`, `add_command`, `set_todos`, `set_text`, or
  all at once with `DigestDelta.from_items`) and stores `to_json()` (None when nothing was seen).
  Every text is scrubbed of secrets (analytics/scrub.py) and cut to its bound here, and
  `<system-reminder>` blocks are taken out of what the user wrote: callers never do either.
- `SessionDigest`: a session's deltas merged in `started_at` order (project: latest; goal:
  first; asks: newest 5; files: unique by path, the newest action, newest 50; commands: newest
  30; todos: the latest list; text: the latest), plus the session's latest 5 errors from the
  events themselves. `load_digest(con, session_id)` reads it from the database.

What the database holds is scrubbed already; the merged digest is scrubbed once more on the way
out (`SessionDigest.finish`), so a delta written by anything else cannot leak a key into a brief.

Nothing here imports mitmproxy, typer or rich.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .scrub import scrub

__all__ = [
    "VERSION",
    "MAX_ASKS", "ASK_CHARS", "GOAL_CHARS", "TEXT_CHARS", "MAX_FILES", "PATH_CHARS", "MAX_COMMANDS",
    "COMMAND_CHARS", "MAX_TODOS", "TODO_CHARS", "CWD_CHARS", "BRANCH_CHARS", "MAX_ERRORS", "ERROR_CHARS",
    "FILE_ACTIONS", "TODO_STATUSES",
    "clean_text", "truncate", "user_text",
    "DigestDelta", "SessionDigest", "parse_delta", "load_digest",
]

VERSION = 1

# The bounds of one delta (the contract's), and of what the merge keeps.
MAX_ASKS = 5
ASK_CHARS = 500
GOAL_CHARS = 1000  # the contract leaves the goal unbounded: bounded like the assistant's text
TEXT_CHARS = 1000
MAX_FILES = 50
PATH_CHARS = 500
MAX_COMMANDS = 30
COMMAND_CHARS = 300
MAX_TODOS = 100  # "the whole latest list": a list longer than this is a runaway, not a plan
TODO_CHARS = 300
CWD_CHARS = 1000
BRANCH_CHARS = 200
MAX_ERRORS = 5
ERROR_CHARS = 300

FILE_ACTIONS = ("read", "edit", "write")
TODO_STATUSES = ("pending", "in_progress", "completed")
ELLIPSIS = "…"

# What is scrubbed before the cut: a little more than the bound, so that a key that straddles
# the bound is still whole when it is recognised (the longest key prefix a pattern needs is
# 30 characters; a PEM block cut here is redacted to the end).
_SCRUB_MARGIN = 256
_USER_TEXT_SCAN = 1 << 18  # what user_text reads of a message (reminders can be long: CLAUDE.md)
_REMINDER_RE = re.compile(r"<system-reminder>.*?(?:</system-reminder>|\Z)", re.DOTALL)


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with "…" when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + ELLIPSIS


def clean_text(value: Any, limit: int) -> str | None:
    """A string scrubbed of secrets, stripped and cut to `limit`; None for anything else or empty."""
    if not isinstance(value, str):
        return None
    text = scrub(value[: limit + _SCRUB_MARGIN]).strip()
    return truncate(text, limit) if text else None


def user_text(value: Any, limit: int) -> str | None:
    """What the user wrote, without the `<system-reminder>` blocks clients add to it, cleaned."""
    if not isinstance(value, str):
        return None
    value = value[:_USER_TEXT_SCAN]
    if "<system-reminder>" in value:
        value = _REMINDER_RE.sub("", value)
    return clean_text(value, limit)


def _failed(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _todo_status(value: Any) -> str:
    return value if value in TODO_STATUSES else "pending"


def _pairs(items: Iterable[Any], first: str, second: str) -> Iterable[tuple[Any, Any]]:
    """(a, b) from items given as dicts ({first: a, second: b}) or as pairs."""
    for item in items or ():
        if isinstance(item, Mapping):
            yield item.get(first), item.get(second)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            yield item[0], item[1]


# --------------------------------------------------------------------------------------------
# One request's delta (the gateway side)
# --------------------------------------------------------------------------------------------


class DigestDelta:
    """What one request showed beyond the session's previous request, within the contract's bounds.

    Call the adders in the order the messages show things (oldest first); each is cheap for what
    a later one makes obsolete (asks beyond the newest 5 are never scrubbed). `to_json()` gives
    the value for `ExchangeEvent.digest`: None when nothing was added.
    """

    __slots__ = ("_project", "_goal", "_asks", "_files", "_commands", "_todos", "_text")

    def __init__(self) -> None:
        self._project: dict[str, Any] | None = None
        self._goal: str | None = None
        self._asks: deque[str] = deque(maxlen=MAX_ASKS)
        self._files: dict[str, str] = {}  # path -> newest action, in order last seen
        self._commands: deque[tuple[str, bool | None]] = deque(maxlen=MAX_COMMANDS)
        self._todos: list[tuple[str, str]] | None = None
        self._text: str | None = None

    @classmethod
    def from_items(
        cls,
        *,
        project: Mapping[str, Any] | None = None,
        goal: str | None = None,
        asks: Iterable[str] = (),
        files: Iterable[Any] = (),
        commands: Iterable[Any] = (),
        todos: Iterable[Any] | None = None,
        text: str | None = None,
    ) -> "DigestDelta":
        """A delta from everything at once: files as (path, action) pairs or {"path", "action"}
        dicts, commands as (command, failed) or {"command", "failed"}, todos as (content, status)
        or {"content", "status"}; `todos=None` means no list was seen (`[]`: an empty list was)."""
        delta = cls()
        if project:
            delta.set_project(project.get("cwd"), git=project.get("git"), branch=project.get("branch"))
        if goal is not None:
            delta.set_goal(goal)
        for ask in asks or ():
            delta.add_ask(ask)
        for path, action in _pairs(files, "path", "action"):
            delta.add_file(path, action)
        for command, failed in _pairs(commands, "command", "failed"):
            delta.add_command(command, failed)
        if todos is not None:
            delta.set_todos(todos)
        if text is not None:
            delta.set_text(text)
        return delta

    def set_project(self, cwd: str | None = None, *, git: bool | None = None, branch: str | None = None) -> None:
        """The working directory, whether it is a git repository, and its branch, as the request
        shows them (Claude Code's and Codex's environment context)."""
        project: dict[str, Any] = {}
        if (c := clean_text(cwd, CWD_CHARS)) is not None:
            project["cwd"] = c
        if isinstance(git, bool):
            project["git"] = git
        if (b := clean_text(branch, BRANCH_CHARS)) is not None:
            project["branch"] = b
        if project:
            self._project = project

    def set_goal(self, text: str | None) -> None:
        """The first text the user wrote in the session: only when the first user message is part
        of what this request showed. System text must not be passed; reminders are removed."""
        self._goal = user_text(text, GOAL_CHARS)

    def add_ask(self, text: str | None) -> None:
        """One user message (a request, a correction); the newest 5 are kept."""
        if isinstance(text, str) and text.strip():
            self._asks.append(text)  # cleaned in to_json(): only the newest 5 are worth it

    def add_file(self, path: str | None, action: str | None) -> None:
        """A file the assistant read, edited or wrote (a tool call's path); `action` one of
        FILE_ACTIONS (anything else is ignored). A path seen again moves to the end."""
        if action not in FILE_ACTIONS or not isinstance(path, str) or not path.strip():
            return
        self._files.pop(path, None)
        self._files[path] = action

    def add_command(self, command: str | None, failed: bool | None = None) -> None:
        """A shell command the assistant ran; `failed` True/False from its result, None when the
        result was not seen. The newest 30 are kept."""
        if isinstance(command, str) and command.strip():
            self._commands.append((command, _failed(failed)))

    def set_todos(self, todos: Iterable[Any]) -> None:
        """The whole latest todo list (TodoWrite, Codex's plan): items as (content, status) or
        {"content", "status"}; a status outside TODO_STATUSES counts as pending."""
        items = []
        for content, status in _pairs(todos, "content", "status"):
            if (c := clean_text(content, TODO_CHARS)) is not None:
                items.append((c, _todo_status(status)))
                if len(items) >= MAX_TODOS:
                    break
        self._todos = items

    def set_text(self, text: str | None) -> None:
        """The assistant's text; call it for each text seen: the latest is kept."""
        if isinstance(text, str) and text.strip():
            self._text = text  # cleaned in to_json()

    def to_json(self) -> dict[str, Any] | None:
        """The delta as stored in `events.digest`, or None when nothing was seen."""
        out: dict[str, Any] = {"v": VERSION}
        if self._project:
            out["project"] = dict(self._project)
        if self._goal:
            out["goal"] = self._goal
        asks = [a for a in (user_text(a, ASK_CHARS) for a in self._asks) if a]
        if asks:
            out["asks"] = asks
        files = []
        for path, action in list(self._files.items())[-MAX_FILES:]:
            if (p := clean_text(path, PATH_CHARS)) is not None:
                files.append({"path": p, "action": action})
        if files:
            out["files"] = files
        commands = []
        for command, failed in self._commands:
            if (c := clean_text(command, COMMAND_CHARS)) is not None:
                commands.append({"command": c, "failed": failed})
        if commands:
            out["commands"] = commands
        if self._todos is not None:
            out["todos"] = [{"content": c, "status": s} for c, s in self._todos]
        if (t := clean_text(self._text, TEXT_CHARS)) is not None:
            out["text"] = t
        return out if len(out) > 1 else None


# --------------------------------------------------------------------------------------------
# A session's digest (the reading side)
# --------------------------------------------------------------------------------------------


def parse_delta(value: Any) -> dict[str, Any] | None:
    """A stored delta (a dict, or the JSON text DuckDB returns) as a dict; None if unusable."""
    if isinstance(value, (str, bytes)):
        import orjson

        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class SessionDigest:
    """A session's deltas merged by the contract's rules; `finish()` before reading it."""

    session_id: str
    project: dict[str, Any] | None = None
    goal: str | None = None
    asks: deque = field(default_factory=lambda: deque(maxlen=MAX_ASKS))
    # path -> {"path", "action" (newest), "actions" (every one seen, first seen first), "last_seen"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: deque = field(default_factory=lambda: deque(maxlen=MAX_COMMANDS))
    todos: list[dict[str, str]] | None = None
    text: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # the latest MAX_ERRORS, oldest first
    deltas: int = 0  # events that carried one
    first_seen: datetime | None = None  # of those events
    last_seen: datetime | None = None

    def add(self, delta: Any, at: datetime | None = None) -> None:
        """Merge the next delta (in `started_at` order); junk and unknown keys are ignored."""
        d = parse_delta(delta)
        if d is None:
            return
        self.deltas += 1
        if at is not None:
            self.first_seen = self.first_seen or at
            self.last_seen = at
        project = d.get("project")
        if isinstance(project, dict):
            kept = {k: project[k] for k in ("cwd", "git", "branch") if isinstance(project.get(k), (str, bool))}
            if kept:
                self.project = kept
        goal = d.get("goal")
        if self.goal is None and isinstance(goal, str) and goal:
            self.goal = goal[:GOAL_CHARS]
        for ask in _list(d.get("asks")):
            if isinstance(ask, str) and ask:
                self.asks.append(ask[:ASK_CHARS])
        for f in _list(d.get("files")):
            if not isinstance(f, dict):
                continue
            path, action = f.get("path"), f.get("action")
            if not isinstance(path, str) or not path or action not in FILE_ACTIONS:
                continue
            path = path[:PATH_CHARS]
            seen = self.files.pop(path, None)
            actions = seen["actions"] if seen else []
            if action not in actions:
                actions.append(action)
            self.files[path] = {"path": path, "action": action, "actions": actions, "last_seen": at}
        for c in _list(d.get("commands")):
            if isinstance(c, dict) and isinstance(c.get("command"), str) and c["command"]:
                self.commands.append({"command": c["command"][:COMMAND_CHARS], "failed": _failed(c.get("failed"))})
        todos = d.get("todos")
        if isinstance(todos, list):
            self.todos = [
                {"content": t["content"][:TODO_CHARS], "status": _todo_status(t.get("status"))}
                for t in todos[:MAX_TODOS]
                if isinstance(t, dict) and isinstance(t.get("content"), str) and t["content"]
            ]
        text = d.get("text")
        if isinstance(text, str) and text:
            self.text = text[:TEXT_CHARS]

    def finish(self) -> "SessionDigest":
        """Keep the newest MAX_FILES files and scrub everything kept (once: a handful of texts)."""
        if len(self.files) > MAX_FILES:
            self.files = dict(list(self.files.items())[-MAX_FILES:])
        if self.project and isinstance(self.project.get("cwd"), str):
            self.project["cwd"] = scrub(self.project["cwd"])
        self.goal = scrub(self.goal) if self.goal else self.goal
        self.asks = deque((scrub(a) for a in self.asks), maxlen=MAX_ASKS)
        self.files = {scrub(p): dict(f, path=scrub(p)) for p, f in self.files.items()}
        self.commands = deque((dict(c, command=scrub(c["command"])) for c in self.commands), maxlen=MAX_COMMANDS)
        if self.todos:
            self.todos = [dict(t, content=scrub(t["content"])) for t in self.todos]
        self.text = scrub(self.text) if self.text else self.text
        for e in self.errors:
            if isinstance(e.get("error_message"), str):
                e["error_message"] = clean_text(e["error_message"], ERROR_CHARS)
        return self

    @property
    def is_empty(self) -> bool:
        return not self.deltas and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "project": self.project,
            "goal": self.goal,
            "asks": list(self.asks),
            "files": list(self.files.values()),
            "commands": list(self.commands),
            "todos": self.todos,
            "text": self.text,
            "errors": self.errors,
            "deltas": self.deltas,
        }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_DELTAS_SQL = (
    "SELECT started_at, digest FROM events WHERE session_id = $sid AND digest IS NOT NULL{until} "
    "ORDER BY started_at, id"
)
_ERRORS_SQL = (
    "SELECT started_at, status_code, outcome, error_type, error_message FROM events "
    "WHERE session_id = $sid AND outcome <> 'ok' AND api <> 'other'{until} ORDER BY started_at DESC, id DESC LIMIT $n"
)
_ERROR_FIELDS = ("started_at", "status_code", "outcome", "error_type", "error_message")


def load_digest(con: Any, session_id: str, *, at: datetime | None = None) -> SessionDigest:
    """The merged digest of `session_id` (events up to `at`, when given), finished.

    Two indexed look-ups of the session's rows: the deltas (only `started_at` and `digest`) and
    the latest MAX_ERRORS failed API calls (outcome <> 'ok', as the `sessions` view counts
    errors: `other` requests such as preflights are not the session's errors).
    """
    until = " AND started_at <= $at" if at is not None else ""
    params: dict[str, Any] = {"sid": session_id}
    if at is not None:
        params["at"] = at
    digest = SessionDigest(session_id=session_id)
    for started_at, delta in con.execute(_DELTAS_SQL.format(until=until), params).fetchall():
        digest.add(delta, started_at)
    rows = con.execute(_ERRORS_SQL.format(until=until), {**params, "n": MAX_ERRORS}).fetchall()
    digest.errors = [dict(zip(_ERROR_FIELDS, r)) for r in reversed(rows)]
    return digest.finish()
