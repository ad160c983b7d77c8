"""`llmsm handoff --summarize`: a model writes the brief from the handoff's facts.

The call goes through the running gateway, under the session label `handoff-<id prefix>`
(`/s/LABEL/anthropic/v1/messages`, `/s/LABEL/openai/v1/chat/completions`,
`/s/LABEL/gemini/v1beta/models/MODEL:generateContent`), so that what it costs is recorded like
any other session. The provider is the session's own; the key comes from the provider's usual
environment variable; the model is the caller's or a small default. The facts sent are the
scrubbed digest (analytics/handoff.py: `handoff_facts`), and the answer is scrubbed again and
cut to the budget.

Every failure is a `SummarizeError` whose message is one line. Standard library only (urllib),
never through the user's HTTP proxy: the gateway is on this machine.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from .handoff import Handoff, fit_text, handoff_facts
from .scrub import scrub

__all__ = ["DEFAULT_MODELS", "KEY_VARIABLES", "SummarizeError", "api_key", "label_for", "summarize"]

DEFAULT_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5-mini", "gemini": "gemini-2.5-flash"}
KEY_VARIABLES = {"anthropic": ("ANTHROPIC_API_KEY",), "openai": ("OPENAI_API_KEY",), "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
TIMEOUT = 120.0  # seconds for the model's answer
THINKING_ROOM = 4000  # output tokens a reasoning model may spend before it writes (cut to the budget after)
TOKEN_HEADER = "x-llmsm-token"  # addons/gateway.py: a gateway started with --auth-token wants it

SYSTEM = (
    "You write handoff briefs: the first message of a fresh AI coding session that continues an earlier one. "
    "Write Markdown, at most {max_tokens} tokens. Lead with the goal the next session must pursue, then what "
    "it needs to pursue it: where the work stands, open todos, files changed, commands or tests that failed and "
    "errors, and the next steps. Be concrete (paths, commands, names); state only what the facts support; "
    "leave out what does not serve the goal. Never include credentials."
)


class SummarizeError(Exception):
    """--summarize failed; str(e) is one line for the user."""


def label_for(session_id: str) -> str:
    """The session label the summary call is recorded under."""
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", session_id)[:8].strip("-.") or "session"
    return f"handoff-{prefix}"


def api_key(provider: str) -> str:
    for name in KEY_VARIABLES.get(provider, ()):
        value = (os.environ.get(name) or "").strip()
        if value:
            return value
    names = " or ".join(KEY_VARIABLES.get(provider, ())) or "a key"
    raise SummarizeError(f"--summarize needs {names} in the environment for a {provider} model")


def _request(provider: str, model: str, key: str, system: str, prompt: str, max_tokens: int) -> tuple[str, dict[str, str], dict]:
    """(path under the route, headers, body) of one generation call."""
    if provider == "anthropic":
        return ("/anthropic/v1/messages",
                {"x-api-key": key, "anthropic-version": "2023-06-01"},
                {"model": model, "max_tokens": max_tokens, "system": system,
                 "messages": [{"role": "user", "content": prompt}]})
    if provider == "openai":
        return ("/openai/v1/chat/completions",
                {"authorization": f"Bearer {key}"},
                {"model": model, "max_completion_tokens": max_tokens + THINKING_ROOM,
                 "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}]})
    if provider == "gemini":
        return (f"/gemini/v1beta/models/{quote(model, safe='')}:generateContent",
                {"x-goog-api-key": key},
                {"systemInstruction": {"parts": [{"text": system}]},
                 "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                 "generationConfig": {"maxOutputTokens": max_tokens + THINKING_ROOM}})
    raise SummarizeError(f"--summarize cannot call a {provider} model")


def _answer(provider: str, body: Any) -> str:
    texts: list[Any] = []
    if provider == "anthropic" and isinstance(body, dict):
        texts = [b.get("text") for b in body.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"]
    elif provider == "openai" and isinstance(body, dict):
        choices = body.get("choices") or [{}]
        texts = [((choices[0] or {}).get("message") or {}).get("content")]
    elif provider == "gemini" and isinstance(body, dict):
        cands = body.get("candidates") or [{}]
        parts = ((cands[0] or {}).get("content") or {}).get("parts") or []
        texts = [p.get("text") for p in parts if isinstance(p, dict) and not p.get("thought")]
    text = "".join(t for t in texts if isinstance(t, str)).strip()
    if not text:
        raise SummarizeError("the model answered without any text")
    return text


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip().splitlines()[0][:200] if raw.strip() else ""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    return ""


def prompt_for(h: Handoff, max_tokens: int) -> tuple[str, str]:
    """(system, user) texts of the summary call."""
    facts = handoff_facts(h)
    goal = h.goal or "(none given: continue the earlier session's work)"
    user = (
        f"Goal of the next session: {goal}\n\n"
        "Facts llmsm recorded from the earlier session's API requests (JSON; secrets already redacted):\n\n"
        + json.dumps(facts, ensure_ascii=False, default=str, indent=1)
        + "\n\nWrite the handoff brief now."
    )
    return SYSTEM.format(max_tokens=max_tokens), scrub(user)


def summarize(h: Handoff, base_url: str, *, max_tokens: int, model: str | None = None,
              timeout: float = TIMEOUT) -> tuple[str, str]:
    """(brief, model): the brief the model wrote for `h`, scrubbed and within `max_tokens`.

    `base_url`: the gateway, e.g. http://127.0.0.1:8787. Raises SummarizeError.
    """
    provider = h.provider
    if provider not in DEFAULT_MODELS:
        raise SummarizeError(f"session {h.session_id} has no provider llmsm can call (recorded: {provider or 'none'})")
    key = api_key(provider)
    model = model or DEFAULT_MODELS[provider]
    system, user = prompt_for(h, max_tokens)
    path, headers, body = _request(provider, model, key, system, user, max_tokens)
    url = f"{base_url.rstrip('/')}/s/{quote(label_for(h.session_id), safe='')}{path}"
    headers = {"content-type": "application/json", "user-agent": "llmsm-handoff", **headers}
    token = (os.environ.get("LLMSM_AUTH_TOKEN") or "").strip()
    if token:
        headers[TOKEN_HEADER] = token
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via the user's proxy
    try:
        with opener.open(request, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc.read() or b"")
        raise SummarizeError(f"the model call failed: HTTP {exc.code}" + (f": {scrub(detail)}" if detail else "")) from None
    except TimeoutError:
        raise SummarizeError(f"the model did not answer within {timeout:.0f} s") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SummarizeError(f"cannot reach the gateway at {base_url}: {reason}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise SummarizeError("the model's answer is not JSON") from None
    return fit_text(scrub(_answer(provider, answer)), max_tokens, h.model), model
