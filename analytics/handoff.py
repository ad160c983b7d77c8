"""`llmsm handoff`: a brief a fresh session can start from, written from what the wire showed.

A handoff gathers, for one session:

- the facts of the `sessions` view (client, label, requests, errors, tokens, cost, the latest
  `llmsm run`: directory and branch), the provider and model of its latest turn, and the
  context fill of that turn (its whole prompt against the model's window, the way the status
  line computes it: the latest main-agent turn, windows from the shared cache);
- its merged digest (analytics/digest.py): project, goal, asks, files, commands, todos, the
  assistant's latest text, the latest errors;
- where the client keeps its own transcript, what fills the gaps (`TranscriptNotes`): Claude
  Code's latest compaction summary (`~/.claude/projects/*/<session id>.jsonl`,
  `CLAUDE_CONFIG_DIR` honoured), Codex's latest compacted summary
  (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*-<thread id>.jsonl`), and the directory, branch
  and first request when the wire did not show them. Never required.

`compose_brief` writes the Markdown brief, led by the goal (`--goal`, else the session's own),
and fits it into a token budget (tiktoken, analytics/tokens.py) by dropping the least
important parts first (`DROP_ORDER`); as a last resort the text is cut at the budget.
`handoff_json` is the `llmsm.handoff/1` document. Everything shown is scrubbed of secrets.

Nothing here imports mitmproxy, typer or rich; heavy modules are imported inside functions.
"""

from __future__ import annotations

import glob
import json
import mmap
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from .apis import TURN_APIS, sql_list
from .digest import SessionDigest, clean_text, load_digest, user_text
from .scrub import scrub

__all__ = [
    "SCHEMA",
    "DEFAULT_MAX_TOKENS",
    "DROP_ORDER",
    "Brief",
    "Handoff",
    "TranscriptNotes",
    "load_handoff",
    "read_transcript_notes",
    "compose_brief",
    "fit_text",
    "count_tokens",
    "handoff_facts",
    "handoff_json",
    "record_parent",
]

SCHEMA = "llmsm.handoff/1"
DEFAULT_MAX_TOKENS = 2000
SUMMARY_CHARS = 8000  # of a transcript's compaction summary: it is cut to the budget anyway
ELLIPSIS = "…"

# The parts of a brief, least important first: the first ones go when the brief is too long.
DROP_ORDER = (
    "older asks",  # every request of the user but the newest
    "files read",  # files only read, oldest first
    "commands that passed",  # and those whose result was not seen, oldest first
    "completed todos",
    "assistant text",  # shortened first, then dropped
    "latest ask",
    "summary",  # the transcript's compaction summary: shortened first, then dropped
    "errors",  # oldest first
    "failed commands",  # oldest first
    "files changed",  # oldest first
    "open todos",  # the last of the list first
)
_STAGE = {name: i for i, name in enumerate(DROP_ORDER)}
_MIN_SHRUNK = 48  # tokens: a shortened text block smaller than this is dropped instead
_NOTE_RESERVE = 48  # tokens kept for the closing note on what was left out


# --------------------------------------------------------------------------------------------
# The session's own transcript
# --------------------------------------------------------------------------------------------

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{3,199}$")  # ids that can name a file


@dataclass(slots=True)
class TranscriptNotes:
    """What a client's transcript adds to the wire's digest."""

    path: str
    kind: str  # 'claude-code' | 'codex'
    summary: str | None = None  # the latest compaction summary, scrubbed
    summary_source: str | None = None  # "Claude Code's compaction summary", ...
    cwd: str | None = None
    branch: str | None = None
    first_ask: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "summary_source": self.summary_source,
                "cwd": self.cwd, "branch": self.branch}


def claude_transcript(session_id: str) -> Path | None:
    """Claude Code's transcript of `session_id`, if there is one."""
    from .transcripts_claude import default_projects_dir  # the one place that knows CLAUDE_CONFIG_DIR

    if not _SAFE_ID.match(session_id):
        return None
    found = glob.glob(os.path.join(glob.escape(str(default_projects_dir())), "*", glob.escape(session_id) + ".jsonl"))
    return _newest(found)


def codex_home() -> Path:
    env = (os.environ.get("CODEX_HOME") or "").strip()
    return Path(env).expanduser() if env else Path.home() / ".codex"


def codex_rollout(thread_id: str) -> Path | None:
    """Codex's rollout file of `thread_id`, if there is one."""
    if not _SAFE_ID.match(thread_id):
        return None
    pattern = os.path.join(glob.escape(str(codex_home() / "sessions")), "*", "*", "*", f"rollout-*-{glob.escape(thread_id)}.jsonl")
    return _newest(glob.glob(pattern))


def _newest(paths: list[str]) -> Path | None:
    best = None
    for p in paths:
        try:
            mtime = os.stat(p).st_mtime
        except OSError:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, p)
    return Path(best[1]) if best else None


def _line_at(data: Any, pos: int) -> bytes:
    start = data.rfind(b"\n", 0, pos) + 1
    end = data.find(b"\n", pos)
    return bytes(data[start : end if end >= 0 else len(data)])


def _last_object(data: Any, marker: bytes, test) -> dict[str, Any] | None:
    """The last JSON line holding `marker` for which test(obj) is true (searched from the end)."""
    pos = len(data)
    for _ in range(50):  # a marker inside some text can be a false hit: a few more tries
        pos = data.rfind(marker, 0, pos)
        if pos < 0:
            return None
        try:
            obj = json.loads(_line_at(data, pos))
        except ValueError:
            continue
        if isinstance(obj, dict) and test(obj):
            return obj
    return None


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") in ("text", "input_text")]
        return "\n".join(t for t in texts if isinstance(t, str)) or None
    return None


def _first_claude_ask(fh) -> str | None:
    for n, raw in enumerate(fh):
        if n > 500:
            return None
        if b'"user"' not in raw:
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get("type") != "user" or obj.get("isMeta") or obj.get("isCompactSummary"):
            continue
        content = (obj.get("message") or {}).get("content") if isinstance(obj.get("message"), dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            continue
        text = user_text(_content_text(content), 1000)
        if text and not text.startswith("<command-") and not text.startswith("<local-command"):
            return text
    return None


def _first_codex_ask(fh) -> str | None:
    for n, raw in enumerate(fh):
        if n > 500:
            return None
        if b'"user_message"' not in raw:
            continue
        try:
            payload = json.loads(raw).get("payload") or {}
        except (ValueError, AttributeError):
            continue
        if payload.get("type") == "user_message":
            text = user_text(payload.get("message"), 1000)
            if text and not text.startswith("<environment_context>") and not text.startswith("<user_instructions>"):
                return text
    return None


def _read_claude(path: Path, data: Any, notes: TranscriptNotes) -> None:
    compact = _last_object(data, b'"isCompactSummary"', lambda o: o.get("isCompactSummary") is True)
    if compact is not None:
        notes.summary = _content_text((compact.get("message") or {}).get("content"))
        notes.summary_source = "Claude Code's compaction summary"
    else:
        titled = _last_object(data, b'"summary"', lambda o: o.get("type") == "summary")
        if titled is not None and isinstance(titled.get("summary"), str):
            notes.summary = titled["summary"]
            notes.summary_source = "Claude Code's session summary"
    where = _last_object(data, b'"cwd"', lambda o: isinstance(o.get("cwd"), str))
    if where is not None:
        notes.cwd = where["cwd"]
        notes.branch = where.get("gitBranch") if isinstance(where.get("gitBranch"), str) and where.get("gitBranch") else None


def _read_codex(path: Path, data: Any, notes: TranscriptNotes) -> None:
    compacted = _last_object(data, b'"compacted"', lambda o: o.get("type") == "compacted")
    if compacted is not None:
        payload = compacted.get("payload") or {}
        text = payload.get("message") if isinstance(payload, dict) else None
        if isinstance(text, str) and text.strip():
            notes.summary = text
            notes.summary_source = "Codex's compaction summary"
    turn = _last_object(data, b'"turn_context"', lambda o: o.get("type") == "turn_context")
    meta = _last_object(data, b'"session_meta"', lambda o: o.get("type") == "session_meta")
    for obj in (turn, meta):
        payload = (obj or {}).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("cwd"), str):
            notes.cwd = payload["cwd"]
            break
    git = ((meta or {}).get("payload") or {}).get("git") if isinstance((meta or {}).get("payload"), dict) else None
    if isinstance(git, dict) and isinstance(git.get("branch"), str):
        notes.branch = git["branch"]


def read_transcript_notes(session_id: str, client: str | None) -> TranscriptNotes | None:
    """The notes of the session's own transcript (by its client), None when there is none or it
    cannot be read. Files are searched from the end (mmap), so a large one costs little."""
    readers = []
    if client in (None, "claude-code", "unknown"):
        readers.append(("claude-code", claude_transcript, _read_claude, _first_claude_ask))
    if client in (None, "codex", "unknown"):
        readers.append(("codex", codex_rollout, _read_codex, _first_codex_ask))
    for kind, find, read, first_ask in readers:
        try:
            path = find(session_id)
            if path is None:
                continue
            notes = TranscriptNotes(path=str(path), kind=kind)
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size == 0:
                    return notes
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    read(path, data, notes)
                fh.seek(0)
                notes.first_ask = first_ask(fh)
        except (OSError, ValueError):
            continue
        notes.summary = clean_text(notes.summary, SUMMARY_CHARS)
        notes.cwd = clean_text(notes.cwd, 1000)
        notes.branch = clean_text(notes.branch, 200)
        return notes
    return None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class Handoff:
    """Everything a brief is written from (all of it scrubbed)."""

    session_id: str
    digest: SessionDigest
    session: dict[str, Any] = field(default_factory=dict)  # the `sessions` view's row
    provider: str | None = None
    model: str | None = None
    context: dict[str, Any] | None = None  # prompt_tokens, context_window, fill, model
    parent_session: str | None = None
    goal: str | None = None  # what the next session should do (--goal)
    transcript: TranscriptNotes | None = None

    @property
    def name(self) -> str:
        return self.session.get("label") or self.session_id

    @property
    def client(self) -> str | None:
        return self.session.get("client")

    @property
    def project(self) -> dict[str, Any] | None:
        """cwd, git, branch: as the wire showed them, else the `llmsm run`, else the transcript."""
        if self.digest.project and self.digest.project.get("cwd"):
            return self.digest.project
        run_cwd = self.session.get("cwd")
        if run_cwd:
            return {"cwd": run_cwd, "branch": self.session.get("git_branch")} if self.session.get("git_branch") else {"cwd": run_cwd}
        t = self.transcript
        if t is not None and t.cwd:
            return {"cwd": t.cwd, "branch": t.branch} if t.branch else {"cwd": t.cwd}
        return self.digest.project

    @property
    def session_goal(self) -> str | None:
        """What the session set out to do: the first thing its user asked."""
        if self.digest.goal:
            return self.digest.goal
        return self.transcript.first_ask if self.transcript is not None else None


# The whole prompt of a turn is the `requests` view's prompt_tokens (one home for that rule).
_TURN_SQL = f"""
SELECT provider, coalesce(model, requested_model) AS model, long_context, prompt_tokens
FROM requests
WHERE session_id = $sid AND api IN {sql_list(TURN_APIS)}
  AND (input_tokens IS NOT NULL OR cache_read_tokens IS NOT NULL OR cache_write_tokens IS NOT NULL)
ORDER BY agent_id IS NULL DESC, started_at DESC
LIMIT 1
"""
_LATEST_SQL = """
SELECT arg_max(provider, started_at) FILTER (WHERE provider IS NOT NULL),
       arg_max(coalesce(model, requested_model), started_at) FILTER (WHERE coalesce(model, requested_model) IS NOT NULL)
FROM events WHERE session_id = $sid
"""
_PARENT_SQL = "SELECT parent_session FROM runs WHERE session_id = $sid AND parent_session IS NOT NULL ORDER BY started_at DESC LIMIT 1"


def _context(con: Any, session_id: str) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(context, provider, model): the latest main-agent turn with usage against its window."""
    from .prices import context_window  # from its cache file: genai-prices is not imported for it

    row = con.execute(_TURN_SQL, {"sid": session_id}).fetchone()
    latest = con.execute(_LATEST_SQL, {"sid": session_id}).fetchone() or (None, None)
    provider, model = latest
    if row is None:
        return None, provider, model
    t_provider, t_model, long_context, prompt = row
    window = None
    if t_model:
        try:
            window = context_window(t_model, t_provider or None, bool(long_context))
        except Exception:  # noqa: BLE001 - a broken cache costs the fill, not the brief
            window = None
    context = {"model": t_model, "prompt_tokens": int(prompt), "context_window": window,
               "fill": (prompt / window) if window else None}
    return context, provider or t_provider, model or t_model


def load_handoff(con: Any, session_id: str, *, goal: str | None = None, transcripts: bool = True) -> Handoff:
    """Read what a handoff of `session_id` needs (a connection from store.connect/open_for_query)."""
    cur = con.execute("SELECT * FROM sessions WHERE session_id = $sid", {"sid": session_id})
    columns = [d[0] for d in cur.description]
    row = cur.fetchone()
    session = dict(zip(columns, row)) if row else {"session_id": session_id}
    for key in ("label", "cwd", "command", "git_branch"):
        if isinstance(session.get(key), str):
            session[key] = scrub(session[key])
    digest = load_digest(con, session_id)
    context, provider, model = _context(con, session_id)
    try:
        parent = session.get("parent_session") or (con.execute(_PARENT_SQL, {"sid": session_id}).fetchone() or (None,))[0]
    except duckdb.Error:  # a read-only database from before runs.parent_session that could not be migrated
        parent = None
    h = Handoff(session_id=session_id, digest=digest, session=session, provider=provider, model=model,
                context=context, parent_session=parent, goal=clean_text(goal, 2000) if goal else None)
    if transcripts:
        h.transcript = read_transcript_notes(session_id, h.client)
    return h


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def _encoding(model: str | None):
    from .tokens import encoding_for_model

    return encoding_for_model(model)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens of `text` as the brief's budget counts them (analytics/tokens.py's encoder)."""
    return len(_encoding(model).encode_ordinary(text)) if text else 0


def _cut(text: str, max_tokens: int, enc) -> str:
    """`text` cut to at most `max_tokens` tokens, "…" included."""
    tokens = enc.encode_ordinary(text)
    if len(tokens) <= max_tokens:
        return text
    keep = max(0, max_tokens - 1)
    while keep > 0:
        cut = enc.decode(tokens[:keep]).rstrip("\ufffd").rstrip() + ELLIPSIS
        if len(enc.encode_ordinary(cut)) <= max_tokens:
            return cut
        keep -= 1
    return ""


def fit_text(text: str, max_tokens: int, model: str | None = None) -> str:
    """`text` as it is when it fits `max_tokens`, else cut there (with "…")."""
    if len(text.encode("utf-8")) <= max_tokens:  # a token is at least one byte: no need to count
        return text
    return _cut(text, max_tokens, _encoding(model))


# --------------------------------------------------------------------------------------------
# The brief
# --------------------------------------------------------------------------------------------


def _code(text: str) -> str:
    """Inline code for any text (backticks inside get a longer fence)."""
    text = " ".join(text.split("\n"))
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _bullet(text: str) -> str:
    """A list item; the text's own lines are indented under it."""
    lines = text.strip().splitlines() or [""]
    return "- " + "\n  ".join(line.rstrip() for line in lines)


@dataclass(slots=True)
class _Part:
    section: str
    text: str
    kind: str | None  # its name in DROP_ORDER; None: never dropped
    order: int = 0  # within its kind, the lower goes first
    shrink: bool = False  # a text block: shortened before it is dropped
    tokens: int = 0
    kept: bool = True
    shortened: bool = False


# Sections in the order the brief shows them, with their headings.
_SECTIONS = (
    ("intro", None),
    ("state", "## Where it stands"),
    ("todos", "## Todo list"),
    ("asks", "## The user's latest requests (oldest first)"),
    ("summary", "## Summary of the earlier conversation"),
    ("changed", "## Files changed"),
    ("commands", "## Commands run (oldest first)"),
    ("errors", "## Errors"),
    ("text", "## The assistant's last message"),
    ("read", "## Files read"),
)


@dataclass
class Brief:
    """The Markdown brief and how it was fitted."""

    text: str
    max_tokens: int
    model: str | None = None
    omitted: dict[str, int] = field(default_factory=dict)  # per DROP_ORDER name: parts left out
    shortened: list[str] = field(default_factory=list)
    cut: bool = False  # the text itself was cut at the budget (the parts that stay were too long)
    _tokens: int | None = None

    @property
    def tokens(self) -> int:
        if self._tokens is None:
            self._tokens = count_tokens(self.text, self.model)
        return self._tokens


def _intro(h: Handoff) -> str:
    client = h.client if h.client and h.client != "unknown" else "assistant"
    project = h.project or {}
    where = f" in {_code(project['cwd'])}" if project.get("cwd") else ""
    lines = ["# Handoff", ""]
    if h.goal:
        lines.append(f"**Goal:** {h.goal}")
    elif h.session_goal:
        lines.append(f"**Goal:** carry on with the earlier session's work. It set out to: {h.session_goal}")
    else:
        lines.append("**Goal:** carry on where the earlier session left off (its latest requests are below).")
    lines += [
        "",
        f"You are continuing an earlier {client} session ({_code(h.name)}){where}. What follows was recorded "
        "by llmsm from that session's API requests (secrets redacted): use it as context for the goal, and check "
        "files before relying on what it says about them.",
    ]
    return "\n".join(lines)


def _state(h: Handoff) -> list[str]:
    s, out = h.session, []
    project = h.project or {}
    if project.get("cwd"):
        repo = ["git"] if project.get("git") else []
        if project.get("branch"):
            repo.append(f"branch {_code(project['branch'])}")
        out.append(f"- Project: {_code(project['cwd'])}" + (f" ({', '.join(repo)})" if repo else ""))
    if h.goal and h.session_goal:
        out.append(_bullet(f"The earlier session set out to: {h.session_goal}"))
    who = [x for x in (s.get("client") if s.get("client") != "unknown" else None, s.get("client_version")) if x]
    facts = [f"{_code(h.session_id)}" + (f" ({s['label']})" if s.get("label") and s["label"] != h.session_id else "")]
    if who:
        facts.append(" ".join(who))
    if h.model:
        facts.append(f"model {h.model}")
    if s.get("requests") is not None:
        facts.append(f"{s['requests']} requests, {s.get('errors') or 0} failed")
    if s.get("total_tokens"):
        facts.append(f"{s['total_tokens']} tokens")
    if s.get("cost_usd") is not None:
        facts.append(f"${s['cost_usd']:.2f}")
    out.append("- Earlier session: " + ", ".join(facts))
    c = h.context
    if c and c.get("context_window"):
        out.append(f"- Its context at the end: {c['prompt_tokens']} of {c['context_window']} tokens ({c['fill']:.0%})")
    elif c:
        out.append(f"- Its context at the end: {c['prompt_tokens']} tokens")
    if h.parent_session:
        out.append(f"- It was itself handed off from {_code(h.parent_session)}")
    return out


def _parts(h: Handoff) -> list[_Part]:
    d = h.digest
    parts = [_Part("intro", _intro(h), None)]
    parts += [_Part("state", line, None) for line in _state(h)]
    mark = {"completed": "[x]", "in_progress": "[~]", "pending": "[ ]"}
    todos = d.todos or []
    n_todos = len(todos)
    for i, t in enumerate(todos):
        done = t["status"] == "completed"
        parts.append(_Part("todos", f"- {mark[t['status']]} {t['content']}" + (" (in progress)" if t["status"] == "in_progress" else ""),
                           "completed todos" if done else "open todos", i if done else n_todos - i))
    asks = list(d.asks)
    for i, ask in enumerate(asks):
        latest = i == len(asks) - 1
        parts.append(_Part("asks", _bullet(ask), "latest ask" if latest else "older asks", i))
    t = h.transcript
    if t is not None and t.summary:
        parts.append(_Part("summary", f"_{t.summary_source}:_\n\n{t.summary}", "summary", shrink=True))
    files = list(d.files.values())
    for i, f in enumerate(files):
        changed = [a for a in f["actions"] if a != "read"]
        if changed:
            how = "written" if changed == ["write"] else "edited"
            parts.append(_Part("changed", f"- {_code(f['path'])} ({how})", "files changed", i))
        else:
            parts.append(_Part("read", f"- {_code(f['path'])}", "files read", i))
    for i, c in enumerate(d.commands):
        failed = c.get("failed") is True
        parts.append(_Part("commands", f"- {_code(c['command'])}" + (" — failed" if failed else ""),
                           "failed commands" if failed else "commands that passed", i))
    for i, e in enumerate(d.errors):
        what = " ".join(str(x) for x in (e.get("status_code"), e.get("error_type") or e.get("outcome")) if x)
        msg = f": {e['error_message']}" if e.get("error_message") else ""
        when = e["started_at"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if isinstance(e.get("started_at"), datetime) else ""
        parts.append(_Part("errors", _bullet(f"{when} {what}{msg}".strip()), "errors", i))
    if d.text:
        parts.append(_Part("text", d.text, "assistant text", shrink=True))
    return parts


def _render(parts: list[_Part], note: str | None) -> str:
    by_section: dict[str, list[str]] = {}
    for p in parts:
        if p.kept:
            by_section.setdefault(p.section, []).append(p.text)
    blocks = []
    for name, heading in _SECTIONS:
        lines = by_section.get(name)
        if not lines:
            continue
        sep = "\n\n" if name in ("summary", "text", "asks") else "\n"
        blocks.append((heading + "\n\n" if heading else "") + sep.join(lines))
    if note:
        blocks.append(note)
    return "\n\n".join(blocks) + "\n"


def _note(h: Handoff, omitted: dict[str, int], shortened: list[str]) -> str | None:
    if not omitted and not shortened:
        return None
    bits = [f"{kind} ({n})" for kind, n in omitted.items()] + [f"{kind} shortened" for kind in shortened]
    return f"_Left out to fit: {', '.join(bits)} (all in `llmsm handoff {h.session_id} --json`)._"


def compose_brief(h: Handoff, max_tokens: int = DEFAULT_MAX_TOKENS) -> Brief:
    """The Markdown brief of `h`, at most `max_tokens` tokens (the model's encoder per tokens.py)."""
    parts = _parts(h)
    brief = Brief(text=_render(parts, None), max_tokens=max_tokens, model=h.model)
    if len(brief.text.encode("utf-8")) <= max_tokens:
        return brief  # a token is at least one byte: it fits without counting
    enc = _encoding(h.model)

    def count(text: str) -> int:
        return len(enc.encode_ordinary(text))

    brief._tokens = count(brief.text)
    if brief._tokens <= max_tokens:
        return brief
    for p in parts:
        p.tokens = count(p.text)
    headings = {name: count(heading) for name, heading in _SECTIONS if heading}
    steps = sorted((p for p in parts if p.kind is not None), key=lambda p: (_STAGE[p.kind], p.order))
    left = {name: sum(1 for p in parts if p.section == name) for name, _ in _SECTIONS}

    def take(step: _Part, over: int) -> int:
        """Shorten or drop `step`; returns about how many tokens that saved."""
        before = step.tokens
        if step.shrink and step.tokens - over >= _MIN_SHRUNK:
            step.text = _cut(step.text, step.tokens - over, enc)
            step.tokens = count(step.text)
            step.shortened = True
            return before - step.tokens
        step.kept = False
        left[step.section] -= 1
        return before + (headings.get(step.section, 0) if not left[step.section] else 0)

    def note() -> str | None:
        omitted: dict[str, int] = {}
        for p in parts:
            if not p.kept:
                omitted[p.kind] = omitted.get(p.kind, 0) + 1  # type: ignore[index]
        brief.omitted = omitted
        brief.shortened = [p.kind for p in parts if p.shortened and p.kept]  # type: ignore[misc]
        return _note(h, omitted, brief.shortened)

    # First on estimates (the whole text's count, less what each step saves): cheap. Then on
    # the rendered text, which is what counts, one step at a time while it is still too long.
    i = 0
    total = brief._tokens + _NOTE_RESERVE
    while total > max_tokens and i < len(steps):
        total -= take(steps[i], total - max_tokens)
        i += 1
    text = _render(parts, note())
    n = count(text)
    while n > max_tokens and i < len(steps):
        take(steps[i], n - max_tokens)
        i += 1
        text = _render(parts, note())
        n = count(text)
    if n > max_tokens:  # what is never dropped is itself too long: cut the text
        text = _cut(text, max_tokens, enc)
        n = count(text)
        brief.cut = True
    brief.text, brief._tokens = text, n
    return brief


# --------------------------------------------------------------------------------------------
# The JSON document
# --------------------------------------------------------------------------------------------

_USAGE_KEYS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
               "reasoning_tokens", "total_tokens", "cost_usd", "first_seen", "last_seen")


def handoff_json(h: Handoff, brief: Brief, *, summarized_by: str | None = None) -> dict[str, Any]:
    """The `llmsm.handoff/1` document: the digest in full, and the brief as fitted."""
    return {
        **handoff_facts(h),
        "brief": brief.text,
        "brief_tokens": brief.tokens,
        "max_tokens": brief.max_tokens,
        "omitted": brief.omitted,
        "shortened": brief.shortened,
        "summarized_by": summarized_by,
    }


def handoff_facts(h: Handoff) -> dict[str, Any]:
    """What the handoff knows, without a brief (what --summarize gives the model)."""
    d, s = h.digest, h.session
    project = h.project
    return {
        "schema": SCHEMA,
        "session": h.session_id,
        "label": s.get("label"),
        "parent_session": h.parent_session,
        "client": h.client,
        "client_version": s.get("client_version"),
        "provider": h.provider,
        "model": h.model,
        "project": project.get("cwd") if project else None,
        "git": project.get("git") if project else None,
        "branch": project.get("branch") if project else None,
        "goal": h.goal or h.session_goal,
        "session_goal": h.session_goal,
        "asks": list(d.asks),
        "files": [{"path": f["path"], "action": f["action"], "actions": f["actions"], "last_seen": f["last_seen"]}
                  for f in d.files.values()],
        "commands": list(d.commands),
        "todos": d.todos or [],
        "errors": d.errors,
        "text": d.text,
        "summary": ({"source": h.transcript.summary_source, "text": h.transcript.summary}
                    if h.transcript is not None and h.transcript.summary else None),
        "usage": {k: s.get(k) for k in _USAGE_KEYS},
        "context": h.context,
        "context_fill": h.context.get("fill") if h.context else None,
        "sources": {"wire_deltas": d.deltas, "transcript": h.transcript.to_dict() if h.transcript else None},
    }


# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


def record_parent(path: str | os.PathLike[str], session_id: str, parent_session: str, *, pid: int | None = None,
                  timeout: float = 5.0) -> int:
    """Set `runs.parent_session` on the latest open run of `session_id` (of that `pid`): the
    session it was handed off from. Returns the rows updated. Raises store.StoreError."""
    from .store import StoreError, connect

    where = "session_id = ? AND ended_at IS NULL" + (" AND pid = ?" if pid is not None else "")
    args: list[Any] = [session_id] + ([pid] if pid is not None else [])
    con = connect(path, timeout=timeout)
    try:
        row = con.execute(
            f"UPDATE runs SET parent_session = ? WHERE {where} AND started_at = (SELECT max(started_at) FROM runs WHERE {where})",
            [parent_session, *args, *args],
        ).fetchone()
        return int(row[0]) if row else 0
    except duckdb.Error as exc:
        raise StoreError(f"cannot record the parent session in {path}: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        con.close()
