"""Which assistant session a request belongs to, and which client sent it. Pure: no mitmproxy.

The rules, first match wins (docs/sessions.md explains each and its limits):

1. an explicit label: the ``x-llmsm-session`` header, a ``/s/NAME/`` path label, or the user
   name of an explicit-proxy client;
2. Claude Code: ``X-Claude-Code-Session-Id``, else the session id inside ``metadata.user_id``;
3. Codex: ``session-id``, ``session_id``, ``thread-id``, ``conversation_id`` headers, else the
   body's ``prompt_cache_key``; then opencode's ``x-session-id``;
4. conversation continuity for clients that send no id: a request whose message history
   extends an earlier request's history continues that request's session;
5. an assistant's side calls, which serve a turn without continuing its history, join the
   session of that turn: a call that asks for JSON-schema output with no tools (a title, Gemini
   CLI's routing call) joins the turn that shares a text part of its newest user message, seconds
   apart; a fork of a conversation (its history under another system prompt, such as Qwen Code's
   memory extraction) joins the conversation. Where the side call comes first, only its *event*
   waits for the turn (`settle`), never its traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmsm.addons.providers.base import RequestInfo

LABEL_HEADER = "x-llmsm-session"
CLAUDE_SESSION_HEADER = "x-claude-code-session-id"
CLAUDE_AGENT_HEADER = "x-claude-code-agent-id"
CLAUDE_PARENT_AGENT_HEADER = "x-claude-code-parent-agent-id"
CODEX_SESSION_HEADERS = ("session-id", "session_id", "thread-id", "conversation_id")
SESSION_HEADER = "x-session-id"  # opencode's, on every request of a session

# A conversation idle longer than this starts a new session even if its history continues.
CONVERSATION_IDLE_GAP_S = 2 * 3600.0
# An identical single-message request is a retry only this soon after the first one; later it
# is a new session that happens to start the same way.
FIRST_MESSAGE_RETRY_WINDOW_S = 120.0
# How many conversation heads are remembered (LRU); each costs about 200 bytes.
MAX_REMEMBERED_HEADS = 200_000

# Side calls (rule 5). The assistants, whose side calls are known; SDK scripts are left alone.
ASSISTANT_CLIENTS = frozenset({"claude-code", "codex", "gemini-cli", "opencode", "copilot-cli", "qwen-code"})
# A side call and the turn it serves are at most this far apart (Gemini CLI: a second or two).
SIDE_CALL_WINDOW_S = 30.0
# A finished side call's event waits at most this long for the turn it serves to arrive.
SIDE_CALL_HOLD_S = 5.0
# A side call whose event has not come this long after it started is forgotten.
SIDE_CALL_FORGET_S = 3600.0
# A fork of a conversation joins it at most this long after the conversation's last request
# (Qwen Code extracts memories once the turn's answer, however long, has streamed).
FORK_WINDOW_S = 600.0
MAX_RECENT_TURNS = 10_000


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    session_id: str | None
    source: str  # label_header | label_path | label_proxy_user | claude_code_header | ...
    label: str | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None


def _clean(value: str | None, limit: int = 200) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:limit] or None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return _clean(headers.get(name))


class SessionAttributor:
    """Applies the attribution rules. Holds in memory the conversation heads seen so far, the
    recent turns of assistants, and their side calls waiting for the turn they serve."""

    def __init__(self, idle_gap_s: float = CONVERSATION_IDLE_GAP_S) -> None:
        self.idle_gap_s = idle_gap_s
        # history hash -> (session id, last seen, number of messages)
        self._heads: OrderedDict[str, tuple[str, float, int]] = OrderedDict()
        # history hash without the system prompt -> (session id, last seen): an assistant's
        # conversations, which its forks (the history under another system prompt) join
        self._forks: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._turns: deque[_Turn] = deque(maxlen=MAX_RECENT_TURNS)  # assistants' recent user turns
        self._side_calls: dict[str, _SideCall] = {}  # provisional session id -> side call

    def attribute(
        self,
        headers: Mapping[str, str],
        request: RequestInfo,
        *,
        path_label: str | None = None,
        proxy_user: str | None = None,
        client: str | None = None,
        account: str | None = None,
        provider: str | None = None,
        now: float,
    ) -> SessionIdentity:
        agent_id = _header(headers, CLAUDE_AGENT_HEADER)
        parent_agent_id = _header(headers, CLAUDE_PARENT_AGENT_HEADER)

        label, label_source = None, None
        for value, source in (
            (_header(headers, LABEL_HEADER), "label_header"),
            (_clean(path_label), "label_path"),
            (_clean(proxy_user), "label_proxy_user"),
        ):
            if value:
                label, label_source = value, source
                break
        if label is not None:
            return SessionIdentity(label, label_source, label, agent_id, parent_agent_id)

        cc = _header(headers, CLAUDE_SESSION_HEADER)
        if cc:
            return SessionIdentity(cc, "claude_code_header", None, agent_id, parent_agent_id)
        if request.body_session_id:
            return SessionIdentity(request.body_session_id, "claude_code_metadata", None, agent_id, parent_agent_id)
        for name in CODEX_SESSION_HEADERS:
            value = _header(headers, name)
            if value:
                return SessionIdentity(value, "codex_header")
        value = _header(headers, SESSION_HEADER)
        if value:
            return SessionIdentity(value, "session_header")
        if request.prompt_cache_key:
            return SessionIdentity(_clean(request.prompt_cache_key), "prompt_cache_key")

        if request.messages:
            return self._by_conversation(request, scope=(provider, client, account), now=now)
        return SessionIdentity(None, "none")

    # -- conversation continuity ----------------------------------------------------------
    def _by_conversation(self, request: RequestInfo, *, scope: tuple, now: float) -> SessionIdentity:
        assistant = scope[1] in ASSISTANT_CLIENTS
        keys = _text_keys(request.newest_user_parts) if assistant else frozenset()
        if self._turns or self._side_calls:
            self._forget_old(now)
        system, messages = _split_system(request.messages, request.system)
        base_seed = hashlib.sha256(json.dumps(list(scope), default=str).encode()).digest()
        system_seed = hashlib.sha256(json.dumps(system, default=str).encode()).digest()
        bases = list(_history_hashes(base_seed, messages))
        heads = [hashlib.sha256(system_seed + b).hexdigest() for b in bases]
        session_id, source = self._continue_conversation(heads, now), "conversation"
        if session_id is None and assistant:
            session_id = self._fork_of(bases, now)
            source = "side_call" if session_id else source
        if assistant and request.side_call:
            # A side branch, never a conversation of its own: it carries the history it serves,
            # or waits for the turn that shares its text.
            if session_id is not None:
                return SessionIdentity(session_id, "side_call")
            if keys:
                return self._side_call(scope, keys, now)
        if session_id is None:
            session_id = "conv-" + heads[-1][:16]
            # The same full history a long time later: give it a fresh id.
            if heads[-1] in self._heads:
                session_id = "conv-" + hashlib.sha256(f"{heads[-1]}:{now}".encode()).hexdigest()[:16]
        _remember(self._heads, heads[-1], (session_id, now, len(heads)))
        if assistant:
            _remember(self._forks, bases[-1].hex(), (session_id, now))
            if keys:
                self._turns.append(_Turn(scope, keys, session_id, now))
                self._claim_side_calls(scope, keys, session_id, now)
        return SessionIdentity(session_id, source)

    def _continue_conversation(self, heads: list[str], now: float) -> str | None:
        """The session whose longest earlier history this one extends (or repeats); never by
        the first message alone, except as a quick retry of a one-message request."""
        n = len(heads)
        for k in range(n, 0, -1):
            head = self._heads.get(heads[k - 1])
            if head is None:
                continue
            sid, last_seen, head_n = head
            if now - last_seen > self.idle_gap_s:
                return None
            if k == 1 and not _first_message_continues(n, head_n, now - last_seen):
                return None
            return sid
        return None

    def _fork_of(self, bases: list[bytes], now: float) -> str | None:
        """An assistant's conversation whose whole history (two messages at least) this request
        repeats or extends under another system prompt: a fork of it (Qwen Code's memory
        extraction) belongs to its session."""
        for k in range(len(bases), 1, -1):
            fork = self._forks.get(bases[k - 1].hex())
            if fork is not None and now - fork[1] <= FORK_WINDOW_S:
                return fork[0]
        return None

    # -- side calls -------------------------------------------------------------------------
    def _side_call(self, scope: tuple, keys: frozenset[str], now: float) -> SessionIdentity:
        """A side call gets a provisional session of its own: the turn that shares its text and
        comes next (within SIDE_CALL_WINDOW_S) claims it, else the latest such turn before it."""
        before = next((t.session_id for t in reversed(self._turns) if t.scope == scope and t.keys & keys), None)
        provisional = "conv-" + hashlib.sha256(f"{sorted(keys)}:{now}:{next(_side_call_ids)}".encode()).hexdigest()[:16]
        self._side_calls[provisional] = _SideCall(scope, keys, now, before)
        return SessionIdentity(provisional, "conversation")

    def _claim_side_calls(self, scope: tuple, keys: frozenset[str], session_id: str, now: float) -> None:
        for provisional, side in list(self._side_calls.items()):
            waiting = side.session_id is None and now - side.started <= SIDE_CALL_WINDOW_S
            if waiting and side.scope == scope and side.keys & keys:
                side.session_id = session_id
                if side.held is not None:
                    self._release(provisional)

    def settle(self, event: Any, put: Callable[[Any], None]) -> None:
        """Hand a finished event to `put`: at once, unless it is a side call whose turn has not
        come yet; that event is held (never its traffic) until the turn comes, at most
        SIDE_CALL_HOLD_S. Called on the event loop that runs the gateway."""
        side = self._side_calls.get(event.session_id) if self._side_calls else None
        if side is None:
            put(event)
            return
        side.held = (event, put)
        if side.session_id is not None:
            self._release(event.session_id)
            return
        try:
            side.timer = asyncio.get_running_loop().call_later(SIDE_CALL_HOLD_S, self._release, event.session_id)
        except RuntimeError:  # no event loop to wait on: written now
            self._release(event.session_id)

    def release_held(self) -> None:
        """Write every held side call as it stands (the gateway stops)."""
        for provisional in [p for p, side in self._side_calls.items() if side.held is not None]:
            self._release(provisional)

    def _release(self, provisional: str) -> None:
        side = self._side_calls.pop(provisional, None)
        if side is None or side.held is None:
            return
        if side.timer is not None:
            side.timer.cancel()
        event, put = side.held
        session_id = side.session_id or side.before
        if session_id is not None:
            event.session_id, event.session_source = session_id, "side_call"
        put(event)

    def _forget_old(self, now: float) -> None:
        while self._turns and now - self._turns[0].at > SIDE_CALL_WINDOW_S:
            self._turns.popleft()
        for provisional, side in list(self._side_calls.items()):
            if side.held is None and now - side.started > SIDE_CALL_FORGET_S:
                del self._side_calls[provisional]  # its event never came


@dataclass(frozen=True, slots=True)
class _Turn:
    """An assistant's user turn: the text parts of its newest user message, hashed."""

    scope: tuple  # (provider, client, account)
    keys: frozenset[str]
    session_id: str
    at: float


@dataclass(slots=True)
class _SideCall:
    scope: tuple
    keys: frozenset[str]
    started: float
    before: str | None  # the session of the latest turn before it that shares its text
    session_id: str | None = None  # the session it joins, once known
    held: tuple[Any, Callable[[Any], None]] | None = None  # its finished event, and where it goes
    timer: Any = None


_side_call_ids = itertools.count()


def _remember(table: OrderedDict, key: str, value: tuple) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_REMEMBERED_HEADS:
        table.popitem(last=False)


def _text_keys(parts: tuple[str, ...]) -> frozenset[str]:
    return frozenset(hashlib.sha256(p.strip().encode("utf-8", "replace")).hexdigest() for p in parts if p.strip())


def _split_system(messages: list[dict[str, Any]], system: str | None) -> tuple[list[Any], list[Any]]:
    """(system prompt, the rest): leading system and developer messages (OpenAI) belong to the
    system prompt, so that a conversation is the same under any of the APIs' ways to send it."""
    k = 0
    while k < len(messages) - 1 and messages[k].get("role") in ("system", "developer"):
        k += 1
    return [system, *(m.get("content") for m in messages[:k])], messages[k:]


def _first_message_continues(n: int, head_n: int, age_s: float) -> bool:
    """A shared first message alone joins two requests only in two cases: a quick retry of a
    one-message request, or the very next turn of one (first message, reply, next message)."""
    if head_n != 1:
        return False
    return (n == 1 and age_s <= FIRST_MESSAGE_RETRY_WINDOW_S) or n == 3


def _canonical(message: Any) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), default=str).encode()


def _history_hashes(seed: bytes, messages: list[Any]):
    """h_k = sha256(h_{k-1} || message_k): equal h_k means equal first k messages."""
    h = seed
    for message in messages:
        h = hashlib.sha256(h + _canonical(message)).digest()
        yield h


# -- client detection ---------------------------------------------------------------------

_CLIENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("claude-code", re.compile(r"^claude-cli/([\w.\-+]+)", re.I)),
    ("codex", re.compile(r"^codex_(?:exec|cli_rs|vscode|[a-z_]+)/([\w.\-+]+)", re.I)),
    # GeminiCLI/0.x, and from 0.61 on GeminiCLI-tui/0.61.0/<model>: any suffix before the slash.
    ("gemini-cli", re.compile(r"^GeminiCLI[\w-]*/([\w.\-+]+)", re.I)),
    ("opencode", re.compile(r"^opencode/([\w.\-+]+)", re.I)),
    ("qwen-code", re.compile(r"^QwenCode/([\w.\-+]+)", re.I)),
    ("anthropic-sdk-python", re.compile(r"^Anthropic/Python ([\w.\-+]+)", re.I)),
    ("anthropic-sdk-typescript", re.compile(r"^Anthropic/JS ([\w.\-+]+)", re.I)),
    ("openai-sdk-python", re.compile(r"^OpenAI/Python ([\w.\-+]+)", re.I)),
    ("openai-sdk-node", re.compile(r"^OpenAI/JS ([\w.\-+]+)", re.I)),
    ("curl", re.compile(r"^curl/([\w.\-+]+)", re.I)),
)


def detect_client(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """(client, version) from the user agent and Codex's ``originator`` header."""
    # GitHub Copilot CLI with its own key sends its bundled SDK's user agent; its own marks are
    # these headers.
    if "x-initiator" in headers or "x-interaction-type" in headers:
        return "copilot-cli", None
    ua = (headers.get("user-agent") or "").strip()
    for name, pattern in _CLIENT_PATTERNS:
        m = pattern.search(ua)
        if m:
            return name, m.group(1)
    originator = (headers.get("originator") or "").lower()
    if originator.startswith("codex"):
        return "codex", None
    if headers.get("x-app") == "cli" or headers.get(CLAUDE_SESSION_HEADER):
        return "claude-code", None
    # The SDKs also say who they are in x-stainless-* headers, whatever the user agent.
    lang = (headers.get("x-stainless-lang") or "").lower()
    version = headers.get("x-stainless-package-version")
    if lang:
        is_anthropic = "anthropic-version" in headers
        sdk = "anthropic" if is_anthropic else "openai"
        suffix = {"python": "python", "js": "typescript" if is_anthropic else "node"}.get(lang)
        if suffix:
            return f"{sdk}-sdk-{suffix}", version
    return "unknown", None


def account_fingerprint(headers: Mapping[str, str], query_key: str | None = None) -> str | None:
    """A short, one-way fingerprint of the credential, so sessions can be told apart by account
    without ever storing the key. ChatGPT-login Codex sends its account id, which is not secret."""
    account_id = headers.get("chatgpt-account-id")
    if account_id:
        return "acct:" + account_id.strip()[:64]
    secret = headers.get("x-api-key") or headers.get("x-goog-api-key") or query_key
    if not secret:
        auth = headers.get("authorization") or ""
        scheme, _, value = auth.partition(" ")
        secret = value.strip() if scheme.lower() == "bearer" else auth.strip()
    if not secret:
        return None
    return "key:" + hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]
