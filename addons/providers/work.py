"""What a session's requests show about its work, for the session digest. Pure: no mitmproxy.

Every request carries the conversation so far. `WorkScanner.scan` reads what is new in it since
the session's previous request and returns that request's delta (`analytics.digest.DigestDelta`,
which owns the bounds and the scrubbing): the project (working directory, git, branch), the
user's first message (the goal) and newest asks, the files the assistant read, edited or wrote,
the shell commands it ran and whether each failed, its latest todo list or plan, its latest text.

Cost: per session (and Claude Code subagent, and conversation: its first message) the scanner
remembers how many messages it has scanned and a fingerprint of the last one (bounded LRU). A request whose history extends what
was scanned costs what its new messages cost, whatever the length of the history; a history
that shrank or changed (compaction, an edit, a rewind) has only its last RESCAN_TAIL messages
read again. The goal is set only when message 0 is in the scanned part.

One reader per request shape, named by the parser module of the API registry
(analytics/apis.py): Anthropic Messages (Claude Code), OpenAI Responses (Codex), Gemini
(Gemini CLI) and Chat Completions (opencode, Qwen Code and the like). The tool names each
client uses are in `TOOLS`.
"""

from __future__ import annotations

import re
import shlex
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmsm.addons.providers._common import loads
from llmsm.analytics.digest import GOAL_CHARS, DigestDelta, user_text

__all__ = ["RESCAN_TAIL", "MAX_SESSIONS", "TOOLS", "READERS", "WorkScanner", "context_project", "fingerprint",
           "patch_files", "shell_reads"]

RESCAN_TAIL = 6  # messages read again when the history changed
MAX_SESSIONS = 10_000  # sessions (and subagents) remembered; each costs about 300 bytes

# Lower-case tool name -> (kind, detail). kind: "read" / "edit" / "write" (a file named by the
# first of PATH_KEYS), "reads" (several: `paths`), "command" (a shell command), "patch" (an
# apply_patch text naming files), "todos" (the whole list; detail: where it is in the input).
TOOLS: dict[str, tuple[str, str | None]] = {
    # Claude Code
    "read": ("read", None), "edit": ("edit", None), "multiedit": ("edit", None), "write": ("write", None),
    "notebookedit": ("edit", None), "bash": ("command", None), "todowrite": ("todos", "todos"),
    # Codex
    "shell": ("command", None), "exec_command": ("command", None), "shell_command": ("command", None),
    "local_shell": ("command", None), "apply_patch": ("patch", None), "update_plan": ("todos", "plan"),
    # Gemini CLI (and Qwen Code, its fork)
    "read_file": ("read", None), "write_file": ("write", None), "replace": ("edit", None),
    "read_many_files": ("reads", None), "run_shell_command": ("command", None), "write_todos": ("todos", "todos"),
    "todo_write": ("todos", "todos"),
}
PATH_KEYS = ("file_path", "absolute_path", "notebook_path", "filePath", "path")

# Text a client puts in a user message that is its context, not the user's words.
_CONTEXT_OPENINGS = ("<environment_context>", "<session_context>", "This is the Gemini CLI.")
_NOT_THE_USER = (
    "<user_instructions>", "# AGENTS.md instructions", "<INSTRUCTIONS>", "<user_shell_command>",
    "<local-command-", "Caveat: The messages below", "<turn_aborted>",
)
# A history that opens with a summary of an earlier one (Claude Code's compaction): its first
# user message is not where the work began, so it sets no goal.
_CONTINUED = ("This session is being continued from a previous conversation",)
_REMINDER_OPEN, _REMINDER_CLOSE = "<system-reminder>", "</system-reminder>"


# --------------------------------------------------------------------------------------------
# The scanner: what is new per session
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    scanned: int = 0  # messages of the history already read
    fingerprint: int | None = None  # of the last of them
    project: tuple = (None, None, None)  # (cwd, git, branch) as last stored
    system_key: tuple | None = None  # cheap key of the system prompt last read
    system_project: tuple = (None, None, None)  # what it showed


class WorkScanner:
    """Per-session memory of what was scanned; `scan` gives a request's delta."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._seen: OrderedDict[Any, _Seen] = OrderedDict()

    def clear(self) -> None:
        self._seen.clear()

    def scan(
        self,
        key: Any,
        module: str,
        items: list[Any] | None,
        instructions: Any = None,
        *,
        items_are_new: bool = False,
        user_turns: bool = True,
        turn_metadata: str | None = None,
    ) -> dict[str, Any] | None:
        """The delta of one request of session `key` (`DigestDelta.to_json()`, None when it shows
        nothing new). `module`: the API's parser module (analytics/apis.py) naming the shape of
        `items` (the body's message list) and `instructions` (its system prompt). `items_are_new`:
        the body holds only what is new (a Responses body continuing a stored response).
        `user_turns`: False for a subagent, whose messages are the main agent's words, not the
        user's (no goal, asks or text). `turn_metadata`: Codex's x-codex-turn-metadata header."""
        reader = READERS.get(module)
        if reader is None or not isinstance(items, list):
            return None
        # One memory per conversation, known by its first message: another conversation under the
        # same session id (a compacted history, a client's own side request) does not look like
        # a change of this one.
        key = (key, fingerprint(items[0]) if items and not items_are_new else None)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen()
            if len(self._seen) > self.max_sessions:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        n = len(items)
        if items_are_new:
            start, first = 0, False
        else:
            start = _start(seen, items, n)
            first = start == 0
            seen.scanned = n
            seen.fingerprint = fingerprint(items[n - 1]) if n else None
        delta = DigestDelta()
        scan = _Scan(delta, goal=first and user_turns, asks=user_turns, shell_reads=module == "openai_responses")
        reader(scan, items, start)
        scan.finish()
        self._project(seen, delta, scan.project, instructions, turn_metadata)
        return delta.to_json()

    @staticmethod
    def _project(seen: _Seen, delta: DigestDelta, found: list, instructions: Any, turn_metadata: str | None) -> None:
        """The project as this request shows it, over what the session showed before; stored
        when it changed."""
        cwd, git, branch = seen.project
        if turn_metadata:  # Codex: the workspaces are git repositories, keyed by their root
            workspaces = _dict(_dict(loads(turn_metadata)).get("workspaces"))
            if workspaces:
                git = True
                cwd = cwd or next(iter(workspaces))
        if instructions is not None:
            key = _system_key(instructions)
            if key != seen.system_key:
                seen.system_key = key
                seen.system_project = context_project(_system_text(instructions))
            found = [seen.system_project, *found]
        for c, g, b in found:
            cwd = c or cwd
            git = git if g is None else g
            branch = b or branch
        project = (cwd, git, branch)
        if project != seen.project and (cwd or git is not None or branch):
            seen.project = project
            delta.set_project(cwd, git=git, branch=branch)


def _start(seen: _Seen, items: list[Any], n: int) -> int:
    """Where the new part of `items` starts: after what was scanned when the history extends
    it, else (shrank or changed) the last RESCAN_TAIL messages; 0 for a session not seen."""
    done = seen.scanned
    if done == 0:
        return 0
    if n >= done and fingerprint(items[done - 1]) == seen.fingerprint:
        return done
    return max(0, n - RESCAN_TAIL)


def fingerprint(message: Any) -> int:
    """A cheap hash of one message: its keys, lengths, first and last elements and the ends of
    its strings (not every byte: a tool result can be 100 KB). `cache_control` is left out:
    Claude Code moves its cache breakpoints to the newest messages on every request."""
    return hash(_shape(message, 0))


def _shape(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return (len(value), value[:48], value[-48:]) if len(value) > 96 else value
    if isinstance(value, dict):
        if depth >= 4:
            return len(value)
        return tuple((k, _shape(v, depth + 1)) for k, v in value.items() if k != "cache_control")
    if isinstance(value, list):
        if not value or depth >= 4:
            return len(value)
        return (len(value), _shape(value[0], depth + 1), _shape(value[-1], depth + 1))
    return value if value is None or isinstance(value, (bool, int, float)) else type(value).__name__


# --------------------------------------------------------------------------------------------
# One request's scan: what its new messages show, into a DigestDelta
# --------------------------------------------------------------------------------------------


class _Scan:
    """Collects what the readers find, in message order; `finish()` hands it to the delta.
    Tool calls wait for their results (failed or not) until the end of the scan."""

    __slots__ = ("delta", "want_goal", "asks", "shell_reads", "project", "_calls", "_by_id", "_by_name",
                 "_text", "_todos")

    def __init__(self, delta: DigestDelta, *, goal: bool, asks: bool, shell_reads: bool) -> None:
        self.delta = delta
        self.want_goal = goal
        self.asks = asks
        self.shell_reads = shell_reads  # Codex reads files with shell commands (cat, sed -n, ...)
        self.project: list[tuple] = []  # (cwd, git, branch) per context text seen
        self._calls: list[list[Any]] = []  # [kind, detail, input, failed]
        self._by_id: dict[Any, list[Any]] = {}
        self._by_name: dict[str, deque] = {}
        self._text: str | None = None
        self._todos: Any = None

    # -- what the readers report ------------------------------------------------------------
    def user_said(self, text: Any) -> None:
        """A user message's text (its text parts joined)."""
        if not isinstance(text, str):
            return
        head = text[:200].lstrip()
        if head.startswith(_CONTEXT_OPENINGS):
            self.context(text)
            return
        if head.startswith(_CONTINUED):
            self.want_goal = False
            return
        if not self.asks or head.startswith(_NOT_THE_USER):
            return
        if _REMINDER_OPEN in text:
            text = user_text(text, GOAL_CHARS)
            if not text or text.startswith(_NOT_THE_USER):
                return
        elif not text.strip():
            return
        if self.want_goal:
            self.want_goal = False
            self.delta.set_goal(text)
        self.delta.add_ask(text)

    def assistant_said(self, text: Any) -> None:
        if self.asks and isinstance(text, str) and text.strip():
            self._text = text

    def context(self, text: Any) -> None:
        """A text that may state the project (a client's environment context)."""
        if isinstance(text, str):
            found = context_project(text)
            if found != (None, None, None):
                self.project.append(found)

    def call(self, call_id: Any, name: Any, tool_input: Any) -> None:
        """A tool call; unknown tools (search, web, MCP) show no file or command."""
        if not isinstance(name, str):
            return
        tool = TOOLS.get(name.lower())
        if tool is None:
            return
        entry = [tool[0], tool[1], tool_input, None]
        self._calls.append(entry)
        if call_id is not None:
            self._by_id[call_id] = entry
        self._by_name.setdefault(name, deque()).append(entry)

    def result(self, call_id: Any, failed: bool | None, name: Any = None) -> None:
        """A tool call's result, matched by id, else (Gemini without ids) by name in order."""
        entry = self._by_id.pop(call_id, None) if call_id is not None else None
        if entry is None and isinstance(name, str):
            queue = self._by_name.get(name)
            while queue and entry is None:
                candidate = queue.popleft()
                if candidate[3] is None:
                    entry = candidate
        if entry is not None:
            entry[3] = failed

    # -- into the delta ---------------------------------------------------------------------
    def finish(self) -> None:
        delta = self.delta
        for kind, detail, tool_input, failed in self._calls:
            if isinstance(tool_input, str) and (kind != "patch" or tool_input.startswith("{")):
                tool_input = loads(tool_input)  # function-call arguments are JSON text
            if kind == "patch":  # a custom tool's raw input, or {"input": patch}
                self._patch(tool_input if isinstance(tool_input, str) else _dict(tool_input).get("input"))
                continue
            tool_input = _dict(tool_input)
            if kind == "command":
                self._command(tool_input, failed)
            elif kind == "todos":
                items = tool_input.get(detail)
                if isinstance(items, list):
                    self._todos = items
            elif kind == "reads":
                for path in _list(tool_input.get("paths")):
                    if isinstance(path, str) and not _GLOB.search(path):
                        delta.add_file(path, "read")
            else:
                delta.add_file(next((tool_input[k] for k in PATH_KEYS if isinstance(tool_input.get(k), str)), None), kind)
        if self._todos is not None:
            delta.set_todos(_todo_pairs(self._todos))
        if self._text is not None:
            delta.set_text(self._text)

    def _command(self, tool_input: dict[str, Any], failed: bool | None) -> None:
        command = tool_input.get("command", tool_input.get("cmd"))
        if command is None and isinstance(tool_input.get("action"), dict):  # Codex local_shell_call
            command = tool_input["action"].get("command")
        if isinstance(command, list):
            parts = [p for p in command if isinstance(p, str)]
            if len(parts) == 2 and parts[0] == "apply_patch":
                self._patch(parts[1])
                return
            if len(parts) == 3 and parts[1] in ("-lc", "-c") and parts[0].rsplit("/", 1)[-1] in _SHELLS:
                command = parts[2]
            else:
                command = shlex.join(parts)
        if not isinstance(command, str):
            return
        if command.lstrip().startswith("apply_patch"):  # `apply_patch <<'EOF' ...`: an edit, not a command
            self._patch(command)
            return
        self.delta.add_command(command, failed)
        if self.shell_reads:
            for path in shell_reads(command):
                self.delta.add_file(path, "read")

    def _patch(self, text: Any) -> None:
        for path, action in patch_files(text):
            self.delta.add_file(path, action)


_SHELLS = frozenset({"bash", "sh", "zsh", "dash", "fish"})
_GLOB = re.compile(r"[*?\[]")


def _todo_pairs(items: list[Any]) -> list[tuple[Any, Any]]:
    """(content, status) of a todo list or plan: Claude Code `content`, Codex `step`, Gemini CLI
    `description`; a cancelled item is no open work."""
    out = []
    for item in items:
        if isinstance(item, dict):
            content = item.get("content") or item.get("step") or item.get("description")
            status = item.get("status")
            out.append((content, "completed" if status in ("cancelled", "canceled") else status))
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------------------------
# Texts: the project, patches, shell commands that read files, failures
# --------------------------------------------------------------------------------------------

_CWD_LINES = ("Primary working directory: ", "Working directory: ", "I'm currently working in the directory: ")
_GIT_LINES = ("Is a git repository: ", "Is directory a git repo: ")
_BRANCH_LINE = "Current branch: "
_WORKSPACES = "**Workspace Directories:**"


def context_project(text: str) -> tuple[str | None, bool | None, str | None]:
    """(cwd, git, branch) as a client's context text states them: Claude Code's system prompt
    (`Primary working directory:`, `Is a git repository:`, `gitStatus` `Current branch:`),
    opencode's `<env>`, Codex's `<environment_context>` (`<cwd>`), Gemini CLI's
    `<session_context>` (`- **Workspace Directories:**`, then `  - <path>` lines)."""
    cwd = next((v for v in (_line_after(text, m) for m in _CWD_LINES) if v), None)
    if cwd is None and (i := text.find("<cwd>")) >= 0:
        j = text.find("</cwd>", i)
        cwd = (text[i + 5 : j].strip() or None) if j > 0 else None
    if cwd is None and (i := text.find(_WORKSPACES)) >= 0:
        for line in text[i + len(_WORKSPACES) : i + len(_WORKSPACES) + 4096].split("\n")[1:]:
            line = line.strip()
            if line:
                cwd = (line[2:].strip() or None) if line.startswith("- ") else None
                break
    git = None
    for marker in _GIT_LINES:
        value = _line_after(text, marker)
        if value is not None:
            git = value.lower() in ("true", "yes")
            break
    return cwd, git, _line_after(text, _BRANCH_LINE)


def _line_after(text: str, marker: str) -> str | None:
    i = text.find(marker)
    if i < 0:
        return None
    i += len(marker)
    j = text.find("\n", i)
    return text[i : j if j >= 0 else len(text)].strip() or None


_PATCH_ACTIONS = (("*** Update File: ", "edit"), ("*** Add File: ", "write"), ("*** Delete File: ", "edit"),
                  ("*** Move to: ", "write"))


def patch_files(text: Any) -> list[tuple[str, str]]:
    """(path, action) of the files an apply_patch text names: updated and deleted files are
    edits, added (and moved-to) files writes."""
    if not isinstance(text, str) or "*** " not in text:
        return []
    out = []
    for line in text.split("\n"):
        if line.startswith("*** "):
            for marker, action in _PATCH_ACTIONS:
                if line.startswith(marker):
                    out.append((line[len(marker) :].strip(), action))
                    break
    return out


_READERS = frozenset({"cat", "nl", "head", "tail", "sed", "less", "more", "bat"})
_READER_HINT = re.compile(r"(?:^|[\s;&|(])(?:cat|nl|head|tail|sed|less|more|bat)\s")
_SEPARATORS = frozenset({"|", "||", "&&", ";", "&", "|&", "(", ")"})
_VALUE_OPTIONS = frozenset({"-n", "-c"})  # options of head and tail that take the next word
_SED_VALUE_OPTIONS = frozenset({"-e", "-f"})


def shell_reads(command: str) -> list[str]:
    """Files a shell command reads with cat, nl, head, tail, sed -n, less, more or bat (how
    Codex reads files); [] when it cannot be read as simple commands."""
    if len(command) > 2000 or not _READER_HINT.search(command):
        return []
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote
        return []
    out: list[str] = []
    simple: list[str] = []
    for word in [*words, ";"]:
        if word in _SEPARATORS or word.startswith((">", "<")):
            if simple:
                out += _read_args(simple)
            simple = [] if word in _SEPARATORS else ["<redirect>"]
        else:
            simple.append(word)
    return out


def _read_args(words: list[str]) -> list[str]:
    program = words[0].rsplit("/", 1)[-1]
    if program not in _READERS:
        return []
    args, skip = [], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in (_SED_VALUE_OPTIONS if program == "sed" else _VALUE_OPTIONS)
        else:
            args.append(word)
    if program == "sed":
        if not any(w.startswith("-n") for w in words[1:]):
            return []  # a sed that edits or prints everything: not how a file is read
        if "-e" not in words:
            args = args[1:]  # the first word is the script
    return [a for a in args if not _GLOB.search(a) and not a.isdigit()]


# Where a tool's output states its exit code: Codex's JSON metadata (at the end), its text
# formats (at the start), Gemini CLI's shell output. Found with str.find: a regex with `^` and
# alternatives costs ~10x more per output, and a long history has hundreds of them.
_CODEX_EXIT_MARKERS = ('"exit_code":', "Exit code: ", "Process exited with code ")
_GEMINI_EXIT_MARKER = "Exit Code: "


def _exit_code(text: str, marker: str, *, last: bool = False) -> int | None:
    i = text.rfind(marker) if last else text.find(marker)
    if i < 0:
        return None
    digits = text[i + len(marker) : i + len(marker) + 12].lstrip()
    end = 1 if digits[:1] == "-" else 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    try:
        return int(digits[:end])
    except ValueError:
        return None


def codex_failed(output: Any) -> bool | None:
    """Whether a Codex tool output says its command failed: a non-zero `exit_code` in its JSON
    metadata, `Exit code: N` or `Process exited with code N` in its text, `success: false`."""
    if isinstance(output, dict):
        if output.get("success") is False:
            return True
        output = output.get("content") if isinstance(output.get("content"), str) else output.get("output")
    if isinstance(output, list):  # content items
        output = next((p.get("text") for p in output if isinstance(p, dict) and isinstance(p.get("text"), str)), None)
    if not isinstance(output, str):
        return None
    for marker in _CODEX_EXIT_MARKERS:
        code = _exit_code(output, marker, last=marker == _CODEX_EXIT_MARKERS[0])
        if code is not None:
            return code != 0
    return None


def gemini_failed(response: Any) -> bool | None:
    """Whether a Gemini CLI functionResponse says the call failed: an `error`, or a non-zero
    `Exit Code:` in a shell command's output."""
    if not isinstance(response, dict):
        return None
    if response.get("error"):
        return True
    output = response.get("output")
    if isinstance(output, str):
        code = _exit_code(output, _GEMINI_EXIT_MARKER, last=True)
        if code is not None:
            return code != 0
    return False


# --------------------------------------------------------------------------------------------
# The readers, one per request shape: (scan, items, start) over items[start:]
# --------------------------------------------------------------------------------------------


def _text_parts(content: Any) -> str | None:
    """The text of a message's content: a string, or its parts' `text` joined."""
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in _list(content) if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(texts) if texts else None


def _is_reminder(text: str) -> bool:
    """A text block that is one `<system-reminder>` block and nothing else (most of them):
    known without reading it."""
    text = text.strip()
    return text.startswith(_REMINDER_OPEN) and text.endswith(_REMINDER_CLOSE) and text.count(_REMINDER_OPEN) == 1


def read_anthropic(scan: _Scan, messages: list[Any], start: int) -> None:
    """Messages API: user turns (text blocks; tool_result blocks with `is_error`), assistant
    turns (text, tool_use with `input`)."""
    for message in messages[start:]:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role == "user":
            if isinstance(content, str):
                scan.user_said(content)
                continue
            texts = []
            for block in _list(content):
                if not isinstance(block, dict):
                    continue
                kind = block.get("type")
                if kind == "text":
                    text = block.get("text")
                    if isinstance(text, str) and not _is_reminder(text):
                        texts.append(text)
                elif kind == "tool_result":
                    scan.result(block.get("tool_use_id"), block.get("is_error") is True)
            if texts:
                scan.user_said("\n".join(texts))
        elif role == "assistant":
            if isinstance(content, str):
                scan.assistant_said(content)
                continue
            for block in _list(content):
                if isinstance(block, dict):
                    kind = block.get("type")
                    if kind == "text":
                        scan.assistant_said(block.get("text"))
                    elif kind == "tool_use":
                        scan.call(block.get("id"), block.get("name"), block.get("input"))


def read_responses(scan: _Scan, items: list[Any], start: int) -> None:
    """Responses API input items: messages (user, assistant, developer), function_call /
    custom_tool_call / local_shell_call and their outputs (matched by `call_id`)."""
    for item in items[start:]:
        if isinstance(item, str):
            scan.user_said(item)
            continue
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):
            role = item.get("role")
            text = _text_parts(item.get("content"))
            if role == "user":
                scan.user_said(text)
            elif role == "assistant":
                scan.assistant_said(text)
            elif text and "<environment_context>" in text:  # developer / system
                scan.context(text)
        elif kind == "function_call":
            scan.call(item.get("call_id"), item.get("name"), item.get("arguments"))
        elif kind == "custom_tool_call":
            scan.call(item.get("call_id"), item.get("name"), item.get("input"))
        elif kind == "local_shell_call":
            scan.call(item.get("call_id") or item.get("id"), "local_shell", {"action": item.get("action")})
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            scan.result(item.get("call_id"), codex_failed(item.get("output")))


def read_gemini(scan: _Scan, contents: list[Any], start: int) -> None:
    """Gemini contents: user parts (text; functionResponse), model parts (text that is not a
    thought; functionCall with `args`), matched by `id`, else by name in order."""
    for content in contents[start:]:
        if not isinstance(content, dict):
            continue
        parts = _list(content.get("parts"))
        if content.get("role") == "model":
            for part in parts:
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str) and not part.get("thought"):
                    scan.assistant_said(part["text"])
                call = part.get("functionCall")
                if isinstance(call, dict):
                    scan.call(call.get("id"), call.get("name"), call.get("args"))
            continue
        texts = []
        for part in parts:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                if text[:200].lstrip().startswith(_CONTEXT_OPENINGS):
                    scan.context(text)
                else:
                    texts.append(text)
            response = part.get("functionResponse")
            if isinstance(response, dict):
                scan.result(response.get("id"), gemini_failed(response.get("response")), response.get("name"))
        if texts:
            scan.user_said("\n".join(texts))


def read_chat(scan: _Scan, messages: list[Any], start: int) -> None:
    """Chat Completions messages: system (the project, as opencode's `<env>` states it), user,
    assistant (content, tool_calls), tool results (no error flag: failed is not known)."""
    for message in messages[start:]:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user":
            scan.user_said(_text_parts(message.get("content")))
        elif role == "assistant":
            scan.assistant_said(_text_parts(message.get("content")))
            for call in _list(message.get("tool_calls")):
                function = _dict(_dict(call).get("function"))
                scan.call(_dict(call).get("id"), function.get("name"), function.get("arguments"))
        elif role in ("system", "developer"):
            scan.context(_text_parts(message.get("content")))


# By the parser module of analytics/apis.py's table (the shape of the API's request bodies).
READERS: dict[str, Callable[[_Scan, list[Any], int], None]] = {
    "anthropic": read_anthropic,
    "openai_responses": read_responses,
    "gemini": read_gemini,
    "openai_chat": read_chat,
}


def _system_key(system: Any) -> tuple:
    """A cheap key of a system prompt: its parts' lengths and the end of the last one."""
    if isinstance(system, str):
        return (len(system), system[-64:])
    if isinstance(system, dict):
        system = system.get("parts")
    if isinstance(system, list):
        texts = [p.get("text") if isinstance(p, dict) else p for p in system]
        texts = [t for t in texts if isinstance(t, str)]
        return (*(len(t) for t in texts), texts[-1][-64:] if texts else "")
    return ()


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, dict):
        system = system.get("parts")
    return _text_parts(system) or ""
