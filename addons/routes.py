"""Where a request goes and what API it speaks. Pure: no mitmproxy import.

Base-URL mode puts a route prefix in front of the provider's own path:
``http://127.0.0.1:PORT/anthropic/v1/messages`` goes to ``https://api.anthropic.com/v1/messages``.
An optional session label may stand before the route: ``/s/NAME/anthropic/v1/messages``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_UPSTREAMS: dict[str, str] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "gemini": "https://generativelanguage.googleapis.com",
}

# Hosts whose TLS the explicit-proxy mode intercepts, and the route each belongs to.
KNOWN_API_HOSTS: dict[str, str] = {
    "api.anthropic.com": "anthropic",
    "api.openai.com": "openai",
    "chatgpt.com": "openai",
    "generativelanguage.googleapis.com": "gemini",
    "cloudcode-pa.googleapis.com": "gemini",
}


class RouteError(ValueError):
    """A malformed --upstream or route definition (the message is shown to the user as is)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/some/prefix" without a trailing slash

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.base_path}"


def parse_upstream_url(url: str) -> Upstream:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteError(f"not an http(s) URL: {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise RouteError(f"an upstream URL takes no query, fragment or credentials: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RouteError(f"bad port in {url!r}") from None
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def parse_upstream_option(spec: str) -> tuple[str, Upstream]:
    """``NAME=URL`` as given to ``--upstream``."""
    name, sep, url = spec.partition("=")
    name = name.strip().lower()
    if not sep or not name or not url:
        raise RouteError(f"--upstream takes NAME=URL, got {spec!r}")
    if name not in DEFAULT_UPSTREAMS:
        raise RouteError(f"unknown route {name!r} in --upstream (known: {', '.join(DEFAULT_UPSTREAMS)})")
    return name, parse_upstream_url(url)


def build_upstreams(specs: list[str] | tuple[str, ...] = ()) -> dict[str, Upstream]:
    upstreams = {name: parse_upstream_url(url) for name, url in DEFAULT_UPSTREAMS.items()}
    for spec in specs:
        name, upstream = parse_upstream_option(spec)
        upstreams[name] = upstream
    return upstreams


@dataclass(frozen=True, slots=True)
class RoutedPath:
    route: str  # the provider: anthropic | openai | gemini
    path: str  # the provider's path, with the query string
    label: str | None  # a session label given in the path (/s/NAME/...)


_LABEL_PREFIX = re.compile(r"^/s/([^/]+)(/.*)?$")


def route_path(path: str) -> RoutedPath | None:
    """Split a base-URL mode path into route, provider path and optional label; None if no route."""
    label = None
    m = _LABEL_PREFIX.match(path)
    if m:
        label = unquote(m.group(1))[:200] or None
        path = m.group(2) or "/"
    for name in DEFAULT_UPSTREAMS:
        prefix = "/" + name
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?"):
            rest = path[len(prefix):]
            if not rest.startswith("/"):
                rest = "/" + rest
            return RoutedPath(name, rest, label)
    return None


# (method, regex over the path without query) -> api; first match wins.
_API_RULES: dict[str, list[tuple[str, re.Pattern[str], str]]] = {
    "anthropic": [
        ("POST", re.compile(r"^(/v1)?/messages/count_tokens$"), "count_tokens"),
        ("POST", re.compile(r"^(/v1)?/messages$"), "messages"),
    ],
    "openai": [
        ("POST", re.compile(r"^(/v1)?/chat/completions$"), "chat_completions"),
        ("POST", re.compile(r"^(/v1)?/responses$"), "responses"),
        ("POST", re.compile(r"^/backend-api/codex/responses$"), "responses"),
        ("GET", re.compile(r"^(/v1)?/responses$"), "responses"),  # WebSocket upgrade (Codex)
        ("GET", re.compile(r"^/backend-api/codex/responses$"), "responses"),
    ],
    "gemini": [
        ("POST", re.compile(r"^(/v1beta|/v1|/v1alpha)?/models/[^/:]+:countTokens$"), "count_tokens"),
        ("POST", re.compile(r"^(/v1beta|/v1|/v1alpha)?/models/[^/:]+:(stream)?[gG]enerateContent$"), "generate_content"),
        # Code Assist (Gemini CLI with a Google login)
        ("POST", re.compile(r"^/v1internal:countTokens$"), "count_tokens"),
        ("POST", re.compile(r"^/v1internal:(stream)?[gG]enerateContent$"), "generate_content"),
    ],
}


def classify(provider: str | None, method: str, path: str) -> str:
    """The API an exchange speaks: messages, count_tokens, chat_completions, ... or 'other'."""
    if provider is None:
        return "other"
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    for rule_method, pattern, api in _API_RULES.get(provider, ()):
        if method.upper() == rule_method and pattern.match(bare):
            return api
    return "other"


_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")


def model_from_path(provider: str | None, path: str) -> str | None:
    """Gemini names the model in the URL, not the body."""
    if provider == "gemini":
        m = _GEMINI_MODEL.search(path)
        return unquote(m.group(1)) if m else None
    return None


_SECRET_QUERY = re.compile(r"([?&](?:key|api_key|apikey|access_token|token)=)[^&]*", re.IGNORECASE)


def redact_path(path: str) -> str:
    """The path as stored: secrets in the query string (Gemini's ?key=) are replaced."""
    return _SECRET_QUERY.sub(r"\1REDACTED", path)
