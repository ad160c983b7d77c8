"""Errors that llmsm itself answers, in a shape every provider's SDK understands.

When the upstream cannot be reached, mitmproxy answers the client with an HTML page; an SDK
then shows "<html>...". llmsm answers with one JSON object that reads as an error to the
Anthropic SDK (`type`/`error.type`/`error.message`), the OpenAI SDK (`error.message`,
`error.type`, `error.code`) and Gemini clients (`error.code`, `error.status`, `error.message`).
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("llmsm.errors")

_STATUS_WORDS = {
    400: ("invalid_request_error", "INVALID_ARGUMENT"),
    404: ("not_found_error", "NOT_FOUND"),
    413: ("request_too_large", "INVALID_ARGUMENT"),
    429: ("rate_limit_error", "RESOURCE_EXHAUSTED"),
    502: ("api_error", "UNAVAILABLE"),
    504: ("timeout_error", "DEADLINE_EXCEEDED"),
}


def error_body(status: int, message: str) -> bytes:
    kind, google_status = _STATUS_WORDS.get(status, ("api_error", "INTERNAL"))
    body = {
        "type": "error",
        "error": {"type": kind, "code": status, "status": google_status, "message": message},
    }
    return json.dumps(body).encode()


def _make_error_response(status_code: int, message: str = "") -> bytes:
    from mitmproxy import http, version
    from mitmproxy.net.http import http1

    text = f"llmsm: {message}" if message else "llmsm: the upstream could not be reached"
    resp = http.Response.make(
        status_code,
        error_body(status_code, text),
        {"Server": f"llmsm (mitmproxy {version.VERSION})", "Connection": "close", "Content-Type": "application/json"},
    )
    return http1.assemble_response(resp)


def install_json_error_pages() -> None:
    """Make mitmproxy's own error answers (upstream refused, unresolvable, reset) JSON.

    mitmproxy builds them in one module-level function of its HTTP/1 layer; llmsm replaces that
    function in its own process only (`llmsm proxy`), never in a user's mitmproxy."""
    try:
        from mitmproxy.proxy.layers.http import _http1

        if callable(getattr(_http1, "make_error_response", None)):
            _http1.make_error_response = _make_error_response
    except ImportError:  # a future mitmproxy moved it: keep its HTML pages
        log.debug("mitmproxy's error pages were left as they are")
