"""Where a request goes and what API it speaks. Pure: no mitmproxy import.

Base-URL mode puts a route prefix in front of the provider's own path:
``http://127.0.0.1:PORT/anthropic/v1/messages`` goes to ``https://api.anthropic.com/v1/messages``.
An optional session label may stand before the route: ``/s/NAME/anthropic/v1/messages``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from llmsm.analytics.apis import PATH_RULES, PROVIDER_SPECS

# From the provider table (analytics/apis.py): each route's default upstream, and the hosts
# whose TLS the explicit-proxy mode intercepts with the route each belongs to.
DEFAULT_UPSTREAMS: dict[str, str] = {provider.name: provider.upstream for provider in PROVIDER_SPECS}
KNOWN_API_HOSTS: dict[str, str] = {host: provider.name for provider in PROVIDER_SPECS for host in provider.hosts}


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


def classify(provider: str | None, method: str, path: str) -> str:
    """The API an exchange speaks (the first of its provider's paths in analytics/apis.py that
    matches), or 'other'."""
    if provider is None:
        return "other"
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    for rule_method, pattern, api in PATH_RULES.get(provider, ()):
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
