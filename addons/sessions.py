"""Which assistant session a request belongs to, and which client sent it. Pure: no mitmproxy.

The rules, first match wins (docs/sessions.md explains each and its limits):

1. an explicit label: the ``x-llmsm-session`` header, a ``/s/NAME/`` path label, or the user
   name of an explicit-proxy client;
2. Claude Code: ``X-Claude-Code-Session-Id``, else the session id inside ``metadata.user_id``;
3. Codex: ``session-id``, ``session_id``, ``thread-id``, ``conversation_id`` headers, else the
   body's ``prompt_cache_key``;
4. conversation continuity for clients that send no id: a request whose message history
   extends an earlier request's history continues that request's session.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmsm.addons.providers.base import RequestInfo

LABEL_HEADER = "x-llmsm-session"
CLAUDE_SESSION_HEADER = "x-claude-code-session-id"
CLAUDE_AGENT_HEADER = "x-claude-code-agent-id"
CLAUDE_PARENT_AGENT_HEADER = "x-claude-code-parent-agent-id"
CODEX_SESSION_HEADERS = ("session-id", "session_id", "thread-id", "conversation_id")

# A conversation idle longer than this starts a new session even if its history continues.
CONVERSATION_IDLE_GAP_S = 2 * 3600.0
# An identical single-message request is a retry only this soon after the first one; later it
# is a new session that happens to start the same way.
FIRST_MESSAGE_RETRY_WINDOW_S = 120.0
# How many conversation heads are remembered (LRU); each costs about 200 bytes.
MAX_REMEMBERED_HEADS = 200_000


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
    """Applies the attribution rules. Holds the conversation heads seen so far (in memory)."""

    def __init__(self, idle_gap_s: float = CONVERSATION_IDLE_GAP_S) -> None:
        self.idle_gap_s = idle_gap_s
        # history hash -> (session id, last seen, number of messages)
        self._heads: OrderedDict[str, tuple[str, float, int]] = OrderedDict()

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
        if request.prompt_cache_key:
            return SessionIdentity(_clean(request.prompt_cache_key), "prompt_cache_key")

        if request.messages:
            sid = self._continue_conversation(request, client=client, account=account, provider=provider, now=now)
            return SessionIdentity(sid, "conversation")
        return SessionIdentity(None, "none")

    # -- conversation continuity ----------------------------------------------------------
    def _continue_conversation(
        self, request: RequestInfo, *, client: str | None, account: str | None, provider: str | None, now: float
    ) -> str:
        seed = hashlib.sha256(
            json.dumps([provider, client, account, request.system], default=str).encode()
        ).digest()
        prefix_hashes = list(_history_hashes(seed, request.messages))
        n = len(prefix_hashes)
        session_id = None
        # Longest earlier history that this one extends (or repeats); never the first message
        # alone, except as a quick retry of a one-message request.
        for k in range(n, 0, -1):
            head = self._heads.get(prefix_hashes[k - 1])
            if head is None:
                continue
            sid, last_seen, head_n = head
            if now - last_seen > self.idle_gap_s:
                break
            if k == 1 and not _first_message_continues(n, head_n, now - last_seen):
                break
            session_id = sid
            break
        if session_id is None:
            session_id = "conv-" + prefix_hashes[-1][:16]
            # The same full history a long time later: give it a fresh id.
            if prefix_hashes[-1] in self._heads:
                session_id = "conv-" + hashlib.sha256(f"{prefix_hashes[-1]}:{now}".encode()).hexdigest()[:16]
        self._remember(prefix_hashes[-1], session_id, now, n)
        return session_id

    def _remember(self, head: str, session_id: str, now: float, n: int) -> None:
        self._heads[head] = (session_id, now, n)
        self._heads.move_to_end(head)
        while len(self._heads) > MAX_REMEMBERED_HEADS:
            self._heads.popitem(last=False)


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
        yield h.hex()


# -- client detection ---------------------------------------------------------------------

_CLIENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("claude-code", re.compile(r"^claude-cli/([\w.\-+]+)", re.I)),
    ("codex", re.compile(r"^codex_(?:exec|cli_rs|vscode|[a-z_]+)/([\w.\-+]+)", re.I)),
    ("gemini-cli", re.compile(r"^GeminiCLI/([\w.\-+]+)", re.I)),
    ("anthropic-sdk-python", re.compile(r"^Anthropic/Python ([\w.\-+]+)", re.I)),
    ("anthropic-sdk-typescript", re.compile(r"^Anthropic/JS ([\w.\-+]+)", re.I)),
    ("openai-sdk-python", re.compile(r"^OpenAI/Python ([\w.\-+]+)", re.I)),
    ("openai-sdk-node", re.compile(r"^OpenAI/JS ([\w.\-+]+)", re.I)),
    ("curl", re.compile(r"^curl/([\w.\-+]+)", re.I)),
)


def detect_client(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """(client, version) from the user agent and Codex's ``originator`` header."""
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
