"""The gateway addon: thin hooks that route each request, parse it and its response, and turn
the exchange into its event (attributed to a session, priced), left in
`flow.metadata[EVENT_META]` for the addons after it (addons/hooks.py). Also the Responses
WebSocket (Codex) and the upstream timeout.

It is one of llmsm's addons (addons/server.py, `llmsm_addons`): authentication comes before it
(addons/auth.py), the budget guard and the recorder, which writes the events, after it. Usable
two ways: embedded by ``llmsm proxy``, or in a user's own mitmproxy with
``mitmdump -s addons/gateway.py`` (options ``--set llmsm_db=PATH`` etc.), which loads the same set
(`addons` at the bottom).

Every hook runs behind `guarded`: whatever goes wrong in llmsm is logged, and the flow goes
on as if llmsm were not there.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from llmsm.addons import routes
from llmsm.addons.errors import error_body
from llmsm.addons.hooks import EVENT_META, META, PROXY_USER_META, WS_META, guarded
from llmsm.addons.exchange import (
    REQUEST_ID_HEADERS, Exchange, estimate_usage, format_request_hash, header_dict, pick_ratelimit_headers,
    request_hash,
)
from llmsm.addons.providers import new_parser, parse_request
from llmsm.addons.providers._common import parse_json
from llmsm.addons.providers.incremental import MIN_BODY, RequestBodies
from llmsm.addons.server import llmsm_addons
from llmsm.addons.sessions import LABEL_HEADER, SessionAttributor, account_fingerprint, detect_client
from llmsm.addons.tap import MessageTap, StreamTap
from llmsm.analytics.apis import PROVIDERS
from llmsm.analytics.prices import cost_for_event, cost_usd

log = logging.getLogger("llmsm.gateway")

# Request bodies above this are parsed in a worker thread so other flows are not held up.
INLINE_PARSE_LIMIT = 256 * 1024
# Non-stream responses up to this size take mitmproxy's buffered path (cheaper than streaming).
BUFFERED_RESPONSE_LIMIT = 256 * 1024
# Request bodies above this are not parsed at all (no API accepts them; they pass untouched).
MAX_PARSED_REQUEST = 64 * 1024 * 1024
# What the 404 for a path outside the routes suggests: /anthropic/..., /openai/... or /gemini/...
_ROUTE_NAMES = ", ".join(f"/{name}/..." for name in PROVIDERS[:-1]) + f" or /{PROVIDERS[-1]}/..."


class LLMGateway:
    def __init__(self) -> None:
        self.upstreams: dict[str, routes.Upstream] = routes.build_upstreams()
        self.overridden: set[str] = set()  # routes given with --upstream
        self.sessions = SessionAttributor()
        # The recent request bodies, so that a conversation's next request parses only what is
        # new (addons/providers/incremental.py).
        self.bodies = RequestBodies()
        self.keep_bodies = True  # off with llmsm_content (--no-content): no body outlives its flow
        self.upstream_timeout = 0.0  # the llmsm_upstream_timeout option, kept by configure()
        # Where an event finished outside a hook goes (a held side call): the recorder's put.
        self.late_event: Callable[[Any], None] | None = None

    # -- options --------------------------------------------------------------------------
    def load(self, loader) -> None:
        loader.add_option(
            "llmsm_upstream", Sequence[str], [], f"Route override NAME=URL ({', '.join(PROVIDERS)}); repeatable."
        )
        loader.add_option(
            "llmsm_upstream_timeout", float, 600.0,
            "Seconds to wait for the upstream's response headers before answering 502 (0: wait forever).",
        )

    def configure(self, updated) -> None:
        if "llmsm_upstream" in updated:
            try:
                specs = list(ctx.options.llmsm_upstream)
                self.upstreams = routes.build_upstreams(specs)
                self.overridden = {routes.parse_upstream_option(spec)[0] for spec in specs}
            except routes.RouteError as exc:
                raise exceptions.OptionsError(str(exc)) from None
        if "llmsm_upstream_timeout" in updated:
            self.upstream_timeout = ctx.options.llmsm_upstream_timeout
        if "llmsm_content" in updated:  # the digest keeper's option (addons/digest.py)
            self.keep_bodies = bool(ctx.options.llmsm_content)
            if not self.keep_bodies:
                self.bodies.clear()

    def running(self) -> None:
        # genai-prices loads its data on first use (~0.5 s): not on the first request's loop turn.
        threading.Thread(target=_warm_up_prices, name="llmsm-prices", daemon=True).start()

    def done(self) -> None:
        # Side calls still waiting for their turn are written as they stand (before the
        # recorder, which comes later in the chain, closes its writer).
        self.sessions.release_held()

    # -- request --------------------------------------------------------------------------
    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # refused before it got here (addons/auth.py)
            return
        req = flow.request
        headers = header_dict(req.headers.fields)
        if LABEL_HEADER in headers:  # llmsm's own: read for attribution, never forwarded
            del req.headers[LABEL_HEADER]
        now = time.time()
        base_url_mode = isinstance(getattr(flow.client_conn, "proxy_mode", None), ReverseMode)
        routed = routes.route_path(req.path) if base_url_mode else None
        if base_url_mode and routed is None:
            self._answer_unrouted(flow, now, headers)
            return
        host = None
        if routed is not None:
            provider, path, path_label = routed.route, routed.path, routed.label
            upstream = self.upstreams.get(provider)
        else:  # explicit-proxy mode: the client named the real host, which is kept...
            host = req.pretty_host  # (a property that parses the Host header each time)
            provider = routes.KNOWN_API_HOSTS.get(host)
            path, path_label = req.path, None
            # ...unless the user pointed that route elsewhere with --upstream.
            upstream = self.upstreams.get(provider) if provider in self.overridden else None
        if upstream is not None:
            # Straight into the request's data: the scheme/host/port setters each rewrite the
            # Host header, which host_header sets once below anyway.
            req.data.scheme, req.data.host, req.data.port = upstream.scheme.encode(), upstream.host, upstream.port
            req.path = upstream.base_path + path
            req.host_header = upstream.host if upstream.port in (80, 443) else f"{upstream.host}:{upstream.port}"
        upstream_url = upstream.url if upstream is not None else f"{req.scheme}://{host or req.pretty_host}"
        ex = Exchange(
            started_at=now,
            method=req.method,
            path=routes.redact_path(path),
            provider=provider,
            api=routes.classify(provider, req.method, path),
            upstream=upstream_url,
            headers=headers,
            path_label=path_label,
            proxy_user=flow.metadata.get(PROXY_USER_META),
        )
        ex.client, ex.client_version = detect_client(headers)
        ex.long_context = "context-1m" in headers.get("anthropic-beta", "")
        retry = headers.get("x-stainless-retry-count")
        ex.retry_count = int(retry) if retry and retry.isdigit() else None
        query_key = parse_qs(urlsplit(path).query).get("key", [None])[0] if "?" in path else None
        ex.account = account_fingerprint(headers, query_key)
        flow.metadata[META] = ex

    @guarded
    def request(self, flow: http.HTTPFlow):
        ex: Exchange | None = flow.metadata.get(META)
        if ex is None or ex.answered_by_gateway:
            return None
        body = flow.request.raw_content or b""
        ex.request_bytes = len(body)
        if body and len(body) <= MAX_PARSED_REQUEST and ex.provider is not None:
            encoding = ex.headers.get("content-encoding", "identity").strip().lower()
            if encoding in ("", "identity") and len(body) >= MIN_BODY and self.keep_bodies:
                # A conversation's next request: only what its previous one did not have is read.
                scope = (ex.provider, ex.api, ex.account)
                reused = self.bodies.reuse(ex.provider, ex.api, scope, body)
                if reused is not None:
                    ex.request, ex.kept_body = reused.info, reused.kept
                    ex.request_hash = format_request_hash(reused.crc, len(body))
                elif len(body) > INLINE_PARSE_LIMIT:
                    return self._parse_in_thread_then_attribute(flow, ex, body, scope)
                else:
                    self._parse_whole(ex, body, scope)
            else:
                ex.request_hash = request_hash(body)
                # mitmproxy decodes only what is encoded; asking it would look the header up again.
                decoded = body if encoding in ("", "identity") else (flow.request.get_content(strict=False) or b"")
                if len(decoded) > INLINE_PARSE_LIMIT:
                    return self._parse_in_thread_then_attribute(flow, ex, decoded, None)
                ex.request = _parse_request_body(ex.provider, ex.api, decoded)
        self._attribute(flow, ex)
        return None

    def _parse_whole(self, ex: Exchange, body: bytes, scope: tuple | None) -> None:
        """Parse a body from scratch (kept for the conversation's next request when `scope` is
        given: the body is what came on the wire); `None` scope: a decoded body."""
        parsed = self.bodies.parse(ex.provider, ex.api, scope, body) if scope is not None else None
        if parsed is None:
            ex.request = _parse_request_body(ex.provider, ex.api, body)
            if scope is not None:
                ex.request_hash = request_hash(body)
        else:
            ex.request, ex.kept_body = parsed.info, parsed.kept
            ex.request_hash = format_request_hash(parsed.crc, len(body))

    async def _parse_in_thread_then_attribute(
        self, flow: http.HTTPFlow, ex: Exchange, body: bytes, scope: tuple | None
    ) -> None:
        # A big body parsed whole (a long conversation seen for the first time) takes
        # milliseconds: not on the event loop.
        await asyncio.to_thread(self._parse_whole, ex, body, scope)
        self._attribute(flow, ex)

    def _attribute(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        ex.requested_model = ex.request.model or routes.model_from_path(ex.provider, ex.path)
        self._arm_upstream_timeout(flow, ex)
        ex.identity = self._identify(ex, ex)

    def _identify(self, ex: Exchange, origin: Exchange):
        """The session of `ex`, from the request that opened it (`origin`: itself, or for a
        WebSocket message the handshake): its headers as the client sent them (with the label
        header llmsm does not forward), path label, proxy user, client, account and provider."""
        return self.sessions.attribute(
            origin.headers,
            ex.request,
            path_label=origin.path_label,
            proxy_user=origin.proxy_user,
            client=origin.client,
            account=origin.account,
            provider=origin.provider,
            now=ex.started_at,
        )

    # -- response -------------------------------------------------------------------------
    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(META)
        if ex is None or flow.response is None or flow.response.status_code == 101:
            return
        headers = header_dict(flow.response.headers.fields)
        tap = self._install_tap(ex, flow.response, headers)
        if ex.streamed or not _small_body(headers.get("content-length", "")):
            # Streams and large or unsized bodies reach the client as they arrive; the tap
            # reads a copy. A small JSON body is left to mitmproxy's cheaper buffered path
            # and read in `response` (the client waits no longer than for its last byte).
            flow.response.stream = tap

    @guarded
    def response(self, flow: http.HTTPFlow):
        flow.metadata.pop(EVENT_META, None)  # what an earlier hook finished is no news here
        ex: Exchange | None = flow.metadata.pop(META, None)
        if ex is None:
            return None
        if flow.response is not None and flow.response.status_code == 101:
            # A WebSocket upgrade: each response.create on it becomes an exchange of its own.
            flow.metadata[WS_META] = _WebSocketSession(ex)
            return None
        if ex.api != "other" and ex.headers.get("upgrade", "").lower() == "websocket":
            # A WebSocket offer the upstream declined (Codex then falls back to HTTP + SSE):
            # not an API call of the session, so neither a request nor an error of it.
            ex.api = "other"
        if flow.response is not None and not flow.response.stream:
            # A buffered body: a small JSON answer, or one made without an upstream (by llmsm
            # or another addon). The tap reads it whole.
            if ex.tap is None:
                self._install_tap(ex, flow.response, header_dict(flow.response.headers.fields))
            ex.tap(flow.response.raw_content or b"")
            ex.tap(b"")
            ex.tap.first_byte_at = flow.response.timestamp_start or ex.tap.first_byte_at
        return self._finish(flow, ex, failure=None, message=None)

    # -- WebSocket (Codex's Responses transport) -----------------------------------------
    @guarded
    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        flow.metadata.pop(EVENT_META, None)  # the turn an earlier message finished is no news here
        ws = flow.metadata.get(WS_META)
        if ws is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        # mitmproxy keeps every message of the connection; llmsm needs none of them afterwards.
        del flow.websocket.messages[:-1]
        if message.from_client:
            frame = _json_object(message.content)
            if frame.get("type") == "response.create":
                if ws.current is not None:  # a new turn before the last one ended
                    await _settle(self._finish(flow, ws.current, failure="client_aborted", message="superseded"))
                ws.current = self._websocket_exchange(ws, frame, len(message.content))
                ws.opened_by = message
            return
        ex = ws.current
        if ex is not None:
            ex.tap.feed(message.content)
            if ex.tap.done:
                ws.current = None
                await _settle(self._finish(flow, ex, failure=None, message=None))

    @guarded
    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        flow.metadata.pop(EVENT_META, None)
        ws = flow.metadata.pop(WS_META, None)
        if ws is None or ws.current is None:
            return
        by_client = bool(flow.websocket and flow.websocket.closed_by_client)
        await _settle(self._finish(
            flow, ws.current, failure="client_aborted" if by_client else "upstream_aborted", message="WebSocket closed"
        ))

    def _websocket_exchange(self, ws: "_WebSocketSession", frame: dict, size: int) -> Exchange:
        base = ws.handshake
        ex = Exchange(
            started_at=time.time(), method="WS", path=base.path, provider=base.provider, api="responses",
            upstream=base.upstream, client=base.client, client_version=base.client_version, account=base.account,
        )
        ex.request = parse_request(base.provider or "openai", "responses", frame)
        ex.requested_model = ex.request.model
        ex.request_bytes = size
        ex.request_hash = request_hash(json.dumps(frame, sort_keys=True).encode())
        ex.streamed = True
        ex.status_code = 101
        ex.identity = self._identify(ex, base)
        ex.tap = MessageTap(new_parser(ex.provider or "openai", "responses"))
        return ex

    @guarded
    def error(self, flow: http.HTTPFlow):
        flow.metadata.pop(EVENT_META, None)
        ex: Exchange | None = flow.metadata.pop(META, None)
        if ex is None:
            return None
        if ex.timeout_handle is not None:
            ex.timeout_handle.cancel()
        msg = flow.metadata.get("llmsm_timed_out") or (str(flow.error) if flow.error else "connection failed")
        if ex.tap is None and ex.status_code is None:
            failure = "client_aborted" if "client" in msg.lower() else "proxy_error"
        else:
            failure = "client_aborted" if "client" in msg.lower() else "upstream_aborted"
        return self._finish(flow, ex, failure=failure, message=msg)

    def _arm_upstream_timeout(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        timeout = self.upstream_timeout
        if timeout > 0:
            ex.timeout_handle = asyncio.get_running_loop().call_later(timeout, self._upstream_timed_out, flow, timeout)

    @staticmethod
    def _upstream_timed_out(flow: http.HTTPFlow, timeout: float) -> None:
        """No response headers in time: close the upstream connection. mitmproxy then answers
        the client with a 502 (JSON, see errors.py) and the error hook records a proxy_error."""
        try:
            if flow.response is not None or not flow.live:
                return
            flow.metadata["llmsm_timed_out"] = f"the upstream sent no response within {timeout:g} s"
            handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
            if handler is not None and flow.server_conn in handler.transports:
                handler.close_connection(flow.server_conn)
        except Exception:
            log.exception("llmsm: could not end a request that timed out")

    @staticmethod
    def _install_tap(ex: Exchange, resp: http.Response, headers: dict[str, str]) -> StreamTap:
        """`headers`: the response's, as header_dict gives them."""
        if ex.timeout_handle is not None:
            ex.timeout_handle.cancel()
        ex.status_code = resp.status_code
        ex.streamed = "text/event-stream" in headers.get("content-type", "").lower()
        ex.ratelimit = pick_ratelimit_headers(headers)
        ex.request_id = next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None)
        parser = new_parser(ex.provider, ex.api) if ex.provider else None
        ex.tap = StreamTap(
            parser, sse=ex.streamed, content_encoding=headers.get("content-encoding"), status_code=resp.status_code
        )
        return ex.tap

    def _finish(self, flow: http.HTTPFlow, ex: Exchange, *, failure: str | None, message: str | None):
        """Turn the exchange into its event for the addons after this one. Returns an awaitable
        only when a tiktoken estimate is needed (milliseconds over a long prompt: kept off the
        loop); mitmproxy awaits it before it calls the next addon's hook."""
        ended = ex.tap.ended_at if ex.tap is not None and ex.tap.ended_at else time.time()
        result = ex.parse_result()
        if ex.needs_estimate(result):
            return self._finish_with_estimate(flow, ex, ended, failure, message, result)
        self._publish(flow, ex, ex.to_event(ended_at=ended, failure=failure, failure_message=message, result=result))
        return None

    async def _finish_with_estimate(self, flow, ex: Exchange, ended: float, failure, message, result) -> None:
        event = await asyncio.to_thread(
            ex.to_event, ended_at=ended, failure=failure, failure_message=message, estimate=estimate_usage,
            result=result,
        )
        self._publish(flow, ex, event)

    def _publish(self, flow: http.HTTPFlow, ex: Exchange, event) -> None:
        # The event is made (an estimate has read the messages): the conversation's next request
        # may continue the message list of the body kept for this one.
        self.bodies.release(ex.kept_body)
        ex.kept_body = None
        if event.usage_source != "none":
            event.cost_usd = cost_for_event(event)
        # Handed on in this hook: the recorder writes it, the budget guard counts it. A side
        # call's event may wait for the turn it serves (addons/sessions.py); released later, it
        # reaches the recorder through `late_event`.
        in_hook = True

        def hand_on(ev) -> None:
            if in_hook:
                flow.metadata[EVENT_META] = ev
            elif self.late_event is not None:
                self.late_event(ev)

        self.sessions.settle(event, hand_on)
        in_hook = False

    # -- helpers --------------------------------------------------------------------------
    def _answer_unrouted(self, flow: http.HTTPFlow, now: float, headers: dict[str, str]) -> None:
        """Paths outside the routes are answered by llmsm itself (and recorded as 'other')."""
        req = flow.request
        ex = Exchange(started_at=now, method=req.method, path=routes.redact_path(req.path), answered_by_gateway=True)
        ex.client, ex.client_version = detect_client(headers)
        if not headers.get("user-agent", "").startswith("llmsm-"):  # llmsm's own health checks
            flow.metadata[META] = ex
        if req.path.split("?", 1)[0] == "/":
            body = {"llmsm": "gateway", "routes": {name: up.url for name, up in self.upstreams.items()}}
            flow.response = http.Response.make(200, json.dumps(body), {"content-type": "application/json"})
        else:
            message = (
                f"llmsm: no route for {req.path.split('?', 1)[0]!r}; "
                f"use {_ROUTE_NAMES} (optionally after /s/LABEL)"
            )
            flow.response = http.Response.make(404, error_body(404, message), {"content-type": "application/json"})


class _WebSocketSession:
    """What a WebSocket connection's exchanges share: the handshake's attribution."""

    def __init__(self, handshake: Exchange) -> None:
        self.handshake = handshake
        self.current: Exchange | None = None  # the turn in progress
        self.opened_by: Any = None  # the client's response.create message that opened `current`


def _json_object(raw: bytes) -> dict:
    try:
        value = parse_json(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _warm_up_prices() -> None:
    try:
        cost_usd(provider="anthropic", model="claude-sonnet-4-5", input_tokens=1, output_tokens=1)
    except Exception:
        pass
    # Hundreds of thousands of long-lived objects (price data, mitmproxy, DuckDB) would otherwise
    # be traversed by every full garbage collection, which the per-request garbage triggers.
    gc.freeze()


async def _settle(pending) -> None:
    if pending is not None:
        await pending


def _small_body(content_length: str) -> bool:
    """A response whose Content-Length says it is small enough to buffer."""
    return content_length.isdigit() and int(content_length) <= BUFFERED_RESPONSE_LIMIT


def _parse_request_body(provider: str, api: str, raw: bytes):
    try:
        body: Any = parse_json(raw)
    except ValueError:
        from llmsm.addons.providers.base import RequestInfo

        return RequestInfo()
    return parse_request(provider, api, body if isinstance(body, dict) else {})


# `mitmdump -s addons/gateway.py`: llmsm's whole set of addons, as `llmsm proxy` loads it.
addons = llmsm_addons()
