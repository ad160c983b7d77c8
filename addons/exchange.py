"""One exchange in flight, and the event it becomes. Pure: no mitmproxy import.

The gateway's hooks fill an `Exchange` from the flow as it passes (request, response headers,
the stream tap) and call `to_event()` once it is over, however it ended.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from llmsm.addons.providers.base import ParseResult, RequestInfo
from llmsm.addons.sessions import SessionIdentity
from llmsm.analytics.apis import TURN_APIS
from llmsm.analytics.events import ExchangeEvent, Usage

# Response headers kept (as JSON) for quota windows; matched by lower-case prefix.
RATELIMIT_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "x-codex-", "retry-after")
REQUEST_ID_HEADERS = ("request-id", "x-request-id")


def request_hash(body: bytes) -> str:
    """CRC-32 and length of the body (16 hex digits): the same request sent again has the same
    hash. Enough to tell a retry among a session's recent turns, and 3x cheaper than SHA-256 on
    the 100+ KB body every assistant turn sends."""
    return format_request_hash(zlib.crc32(body), len(body))


def format_request_hash(crc: int, size: int) -> str:
    """`request_hash` from the body's CRC-32 and length (addons/providers/incremental.py
    continues the CRC of the body a request repeats)."""
    return f"{crc:08x}{size & 0xFFFFFFFF:08x}"


def header_dict(fields: Any) -> dict[str, str]:
    """A message's headers as one plain dict, from its raw (name, value) byte pairs (mitmproxy's
    `Headers.fields`): lower-case names, a repeated header's values joined with ", " as
    mitmproxy's own lookup joins them. mitmproxy's `Headers` walks every field on each lookup;
    the hooks look up about twenty names per request, so one walk up front is far cheaper."""
    out: dict[str, str] = {}
    for name, value in fields:
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "replace")  # nothing undecodable may reach an event
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def pick_ratelimit_headers(headers: dict[str, str]) -> dict[str, str] | None:
    """Rate-limit and quota headers of a response (names lower-case, as from header_dict)."""
    kept = {name: value for name, value in headers.items() if name.startswith(RATELIMIT_PREFIXES)}
    return kept or None


@dataclass
class Exchange:
    started_at: float  # epoch seconds
    method: str
    path: str  # the provider's path as stored (secrets in the query redacted)
    provider: str | None = None
    api: str = "other"
    upstream: str | None = None
    # The request's headers (header_dict), for attribution; in memory only, never in the event.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    path_label: str | None = None  # /s/LABEL/ in the path
    proxy_user: str | None = None  # explicit-proxy user name
    client: str | None = None
    client_version: str | None = None
    account: str | None = None
    identity: SessionIdentity = field(default_factory=lambda: SessionIdentity(None, "none"))
    request: RequestInfo = field(default_factory=RequestInfo)
    # What addons/providers/incremental.py kept of the body (its `Parsed.kept`), released once the
    # event is made: `request`'s message list is that body's until then.
    kept_body: Any = field(default=None, repr=False)
    requested_model: str | None = None
    request_bytes: int = 0
    request_hash: str | None = None
    retry_count: int | None = None
    long_context: bool = False
    # response side
    status_code: int | None = None
    streamed: bool = False
    request_id: str | None = None
    ratelimit: dict[str, str] | None = None
    tap: Any = None  # a StreamTap once the response headers arrived
    answered_by_gateway: bool = False
    timeout_handle: Any = None  # the upstream-timeout timer until response headers arrive

    # -- the result -----------------------------------------------------------------------
    def parse_result(self) -> ParseResult:
        return self.tap.result() if self.tap is not None else ParseResult()

    def needs_estimate(self, result: ParseResult) -> bool:
        """Estimate only generation calls that got an answer the provider did not count."""
        if self.api not in TURN_APIS or self.status_code is None or self.status_code >= 400:
            return False
        return result.usage is None or (self.streamed and not result.complete)

    def to_event(
        self,
        *,
        ended_at: float,
        failure: str | None = None,
        failure_message: str | None = None,
        estimate: Any = None,
        result: ParseResult | None = None,
    ) -> ExchangeEvent:
        """`failure` is None for a finished response, else client_aborted / upstream_aborted /
        proxy_error. `estimate` is a callable (Exchange, ParseResult) -> Usage used when the
        provider reported nothing (see needs_estimate). `result` saves parsing again when the
        caller already has it."""
        if result is None:
            result = self.parse_result()
        usage, usage_source = None, "none"
        if result.usage is not None and not result.usage.is_empty():
            usage, usage_source = result.usage, "reported"
        if estimate is not None and self.needs_estimate(result):
            try:
                usage, usage_source = estimate(self, result), "estimated"
            except Exception:  # an estimate is a nicety; the row is kept without it
                pass
        outcome, error_type, error_message = self._outcome(result, failure, failure_message)
        tap = self.tap
        # Validated in one call from a dict (keyword arguments and setting fields afterwards one
        # by one each cost more: this runs on the event loop for every exchange).
        return ExchangeEvent.model_validate(dict(
            started_at=_ts(self.started_at),
            ended_at=_ts(ended_at),
            session_id=self.identity.session_id,
            session_source=self.identity.source,
            label=self.identity.label,
            agent_id=self.identity.agent_id,
            parent_agent_id=self.identity.parent_agent_id,
            client=self.client,
            client_version=self.client_version,
            account=self.account,
            provider=self.provider,
            api=self.api,
            method=self.method,
            path=self.path,
            upstream=self.upstream,
            requested_model=self.requested_model,
            model=result.model or self.requested_model,
            streamed=self.streamed,
            status_code=self.status_code,
            outcome=outcome,
            error_type=error_type,
            error_message=error_message,
            stop_reason=result.stop_reason,
            request_id=self.request_id,
            message_id=result.message_id,
            input_tokens=usage.input_tokens if usage is not None else None,
            output_tokens=usage.output_tokens if usage is not None else None,
            cache_read_tokens=usage.cache_read_tokens if usage is not None else None,
            cache_write_tokens=usage.cache_write_tokens if usage is not None else None,
            cache_write_1h_tokens=usage.cache_write_1h_tokens if usage is not None else None,
            reasoning_tokens=usage.reasoning_tokens if usage is not None else None,
            usage_source=usage_source,
            counted_tokens=result.counted_tokens,
            usage_raw=result.usage_raw,
            duration_ms=round((ended_at - self.started_at) * 1000, 3),
            ttft_ms=(
                round((tap.first_byte_at - self.started_at) * 1000, 3)
                if tap is not None and tap.first_byte_at is not None
                else None
            ),
            request_bytes=self.request_bytes,
            response_bytes=tap.response_bytes if tap is not None else None,
            message_count=self.request.message_count,
            tool_errors=self.request.tool_errors,
            request_hash=self.request_hash,
            retry_count=self.retry_count,
            long_context=self.long_context or None,
            cache_ttl=self.request.cache_ttl,
            ratelimit=self.ratelimit,
        ))

    def _outcome(
        self, result: ParseResult, failure: str | None, message: str | None
    ) -> tuple[str, str | None, str | None]:
        """(outcome, error_type, error_message) of the exchange."""
        status = self.status_code
        if status is not None and status >= 400:
            outcome, error_type = "http_error", result.error_type or f"http_{status}"
            message = result.error_message or (self.tap.json_text if self.tap is not None else None)
        elif result.stream_error:
            outcome, error_type, message = "stream_error", result.error_type or "stream_error", result.error_message
        elif failure is not None and not (result.complete and status is not None):
            # A terminal event that arrived before the hang-up makes the exchange complete
            # (Codex closes its connection right after response.completed).
            outcome, error_type = failure, failure
        else:
            return "ok", None, None
        return outcome, error_type, message[:1000] if message else message


def estimate_usage(exchange: Exchange, result: ParseResult) -> Usage:
    """tiktoken counts of what passed: the request's messages and the text that came back.
    Reported parts (e.g. Anthropic's input from message_start in a cut stream) are kept."""
    from llmsm.analytics.tokens import count_chat_input, count_text

    model = result.model or exchange.requested_model
    reported = result.usage or Usage()
    input_tokens = reported.input_tokens
    if input_tokens is None:
        input_tokens = count_chat_input(exchange.request.messages, model, system=exchange.request.system)
    output_tokens = max(reported.output_tokens or 0, count_text(result.output_text, model))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=reported.cache_read_tokens,
        cache_write_tokens=reported.cache_write_tokens,
        cache_write_1h_tokens=reported.cache_write_1h_tokens,
        reasoning_tokens=reported.reasoning_tokens,
    )


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
