"""The APIs llmsm understands, named once: every other list of APIs derives from `APIS`.

Adding an API is one row here plus its parser module in `addons/providers/`: the routes
(which method and path speak it), the parser registry, the event model's `api` values, and the
sets the health model, the dashboard and the budget guard use (`TURN_APIS`) are all read from
this table. Adding a provider is one row of `PROVIDER_SPECS` (its route, default upstream and
the hosts the explicit proxy intercepts for it). Pure data, cheap to import (no pydantic, no
duckdb), so the status line can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "APIS", "API_NAMES", "ApiSpec", "COUNT_APIS", "PATH_RULES", "PROVIDERS", "PROVIDER_SPECS", "ProviderSpec",
    "TURN_APIS", "spec_for", "sql_list",
]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str  # the route (/NAME/... in base-URL mode, NAME=URL in --upstream) and events.provider
    upstream: str  # where its route goes unless --upstream says otherwise
    # Hosts whose TLS the explicit-proxy mode intercepts, recorded as this provider.
    hosts: tuple[str, ...]


PROVIDER_SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec("anthropic", "https://api.anthropic.com", ("api.anthropic.com",)),
    ProviderSpec("openai", "https://api.openai.com", (
        "api.openai.com",
        "chatgpt.com",  # Codex with a ChatGPT login
    )),
    ProviderSpec("gemini", "https://generativelanguage.googleapis.com", (
        "generativelanguage.googleapis.com",
        "cloudcode-pa.googleapis.com",  # Code Assist (Gemini CLI with a Google login)
    )),
)


@dataclass(frozen=True, slots=True)
class ApiSpec:
    provider: str  # the route / provider name: anthropic | openai | gemini
    api: str  # the value stored in events.api
    # "turn": a generation call that spends tokens (a turn of a session; budgets guard it);
    # "count": a token count, whose answer is a number and never consumption.
    kind: Literal["turn", "count"]
    # The parser module in llmsm.addons.providers: `parser` names its response parser class;
    # its `parse_request` reads the request body (a count_tokens request has the shape of the
    # provider's generation request, so one function serves both).
    module: str
    parser: str
    # (method, regex over the provider's path without the query string); first match wins
    # within a provider, in the order of APIS.
    paths: tuple[tuple[str, str], ...]


APIS: tuple[ApiSpec, ...] = (
    ApiSpec("anthropic", "count_tokens", "count", "anthropic", "AnthropicCountTokensParser",
            (("POST", r"^(/v1)?/messages/count_tokens$"),)),
    ApiSpec("anthropic", "messages", "turn", "anthropic", "AnthropicMessagesParser",
            (("POST", r"^(/v1)?/messages$"),)),
    ApiSpec("openai", "chat_completions", "turn", "openai_chat", "OpenAIChatParser",
            (("POST", r"^(/v1)?/chat/completions$"),)),
    ApiSpec("openai", "responses", "turn", "openai_responses", "OpenAIResponsesParser", (
        ("POST", r"^(/v1)?/responses$"),
        ("POST", r"^/backend-api/codex/responses$"),  # Codex with a ChatGPT login
        ("GET", r"^(/v1)?/responses$"),  # the WebSocket upgrade (Codex)
        ("GET", r"^/backend-api/codex/responses$"),
    )),
    ApiSpec("gemini", "count_tokens", "count", "gemini", "GeminiCountTokensParser", (
        ("POST", r"^(/v1beta|/v1|/v1alpha)?/models/[^/:]+:countTokens$"),
        ("POST", r"^/v1internal:countTokens$"),  # Code Assist (Gemini CLI with a Google login)
    )),
    ApiSpec("gemini", "generate_content", "turn", "gemini", "GeminiParser", (
        ("POST", r"^(/v1beta|/v1|/v1alpha)?/models/[^/:]+:(stream)?[gG]enerateContent$"),
        ("POST", r"^/v1internal:(stream)?[gG]enerateContent$"),
    )),
)

PROVIDERS: tuple[str, ...] = tuple(provider.name for provider in PROVIDER_SPECS)
# Every value events.api takes: the APIs above, and 'other' for anything else that passed.
API_NAMES: tuple[str, ...] = (*dict.fromkeys(spec.api for spec in APIS), "other")
TURN_APIS: frozenset[str] = frozenset(spec.api for spec in APIS if spec.kind == "turn")
COUNT_APIS: frozenset[str] = frozenset(spec.api for spec in APIS if spec.kind == "count")

_BY_KEY = {(spec.provider, spec.api): spec for spec in APIS}
# Compiled once: provider -> [(method, pattern, api)], in table order.
PATH_RULES: dict[str, list[tuple[str, re.Pattern[str], str]]] = {}
for _spec in APIS:
    for _method, _regex in _spec.paths:
        PATH_RULES.setdefault(_spec.provider, []).append((_method, re.compile(_regex), _spec.api))


def spec_for(provider: str | None, api: str | None) -> ApiSpec | None:
    return _BY_KEY.get((provider, api))  # type: ignore[arg-type]


def sql_list(apis: frozenset[str] | tuple[str, ...]) -> str:
    """A set of API names as a SQL list literal: ('messages', 'responses', ...)."""
    return "(" + ", ".join(f"'{name}'" for name in sorted(apis)) + ")"
