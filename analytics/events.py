"""The event model: one `ExchangeEvent` per API exchange that passed the gateway.

Every column of the `events` table (see `migrations.py` and docs/schema.md) is a field here, in
the same order, so that the writer can append a row straight from a model.
"""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from .apis import API_NAMES, PROVIDERS

# The values come from the table of APIs (analytics/apis.py); Literal[tuple] is Literal[*tuple].
Provider = Literal[PROVIDERS]  # type: ignore[valid-type]
Api = Literal[API_NAMES]  # type: ignore[valid-type]
Outcome = Literal["ok", "http_error", "stream_error", "client_aborted", "upstream_aborted", "proxy_error"]
UsageSource = Literal["reported", "estimated", "none", "transcript"]


class Usage(BaseModel):
    """Normalized token usage of one exchange, the same meaning for every provider.

    `input_tokens` is the *uncached* input; the whole prompt is
    input + cache_read + cache_write. `reasoning_tokens` is a subset of `output_tokens`.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None  # the part of cache_write written with a 1 h TTL
    reasoning_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.cache_read_tokens or 0) + (self.cache_write_tokens or 0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + (self.output_tokens or 0)

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens)
        )


# Event ids: 20 random hex digits per process, then a counter. As unique as uuid4 for our
# purpose, without a getrandom() system call per event (slow on some VMs: ~30 us).
_ID_PREFIX = uuid.uuid4().hex[:20]
_id_counter = itertools.count()


def new_event_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def _reseed_ids() -> None:  # a forked child must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = uuid.uuid4().hex[:20]


os.register_at_fork(after_in_child=_reseed_ids)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ExchangeEvent(BaseModel):
    """One API exchange: request, response (or failure) and its exact usage."""

    id: str = Field(default_factory=new_event_id)
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None

    # who: session attribution (addons/sessions.py) and client detection
    session_id: str | None = None
    session_source: str | None = None
    label: str | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None
    client: str | None = None
    client_version: str | None = None
    account: str | None = None  # fingerprint of the API key or the account id, never the key

    # what: the exchange
    provider: Provider | None = None
    api: Api = "other"
    method: str = "GET"
    path: str = "/"
    upstream: str | None = None
    requested_model: str | None = None
    model: str | None = None
    streamed: bool = False
    status_code: int | None = None
    outcome: Outcome = "ok"
    error_type: str | None = None
    error_message: str | None = None
    stop_reason: str | None = None
    request_id: str | None = None
    message_id: str | None = None

    # usage (normalized; see Usage)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    counted_tokens: int | None = None  # count_tokens answers: a count, not consumption
    usage_source: UsageSource = "none"
    usage_raw: dict[str, Any] | list[Any] | None = None
    cost_usd: float | None = None

    # timing and size
    ttft_ms: float | None = None
    duration_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None

    # request facts that health scoring needs (no content is stored)
    message_count: int | None = None
    tool_errors: int | None = None  # failed tool results in the newest turn of the request
    request_hash: str | None = None  # hash of the request body: the same request again = a retry
    retry_count: int | None = None  # x-stainless-retry-count and the like
    long_context: bool | None = None  # Anthropic context-1m beta requested
    cache_ttl: str | None = None  # '5m' or '1h' where the request set cache_control

    ratelimit: dict[str, str] | None = None  # the response's rate-limit headers
    digest: dict[str, Any] | None = None  # what this request showed beyond the previous one (analytics/digest.py)

    def usage(self) -> Usage:
        return Usage(**{name: getattr(self, name) for name in Usage.model_fields})


EVENT_COLUMNS: tuple[str, ...] = tuple(ExchangeEvent.model_fields)
JSON_COLUMNS = frozenset({"usage_raw", "ratelimit", "digest"})
