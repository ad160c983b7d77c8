"""The OTLP sink: one span per exchange, OpenTelemetry's GenAI semantic conventions where they
have a name, `llmsm.*` where they have none (the table is in docs/team.md). Spans are exported
with the OTLP/HTTP protobuf exporter, synchronously from the ship loop's thread: a batch counts
as delivered only once the collector accepted it. Trace and span ids are derived from the
event id, so a batch sent again is the same spans again."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from typing import Any

from llmsm.analytics.team.ship import Identity

_OPERATION = {"messages": "chat", "chat_completions": "chat", "responses": "chat", "generate_content": "generate_content",
              "count_tokens": "count_tokens", "embeddings": "embeddings"}


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000_000)


def attributes(row: dict[str, Any], identity: Identity) -> dict[str, Any]:
    """The span's attributes for one event row (None values left out)."""
    prompt = None
    if any(row.get(k) is not None for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens")):
        prompt = sum(int(row.get(k) or 0) for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens"))
    attrs = {
        "gen_ai.operation.name": _OPERATION.get(row.get("api") or "", row.get("api")),
        "gen_ai.conversation.id": row.get("session_id"),
        "gen_ai.provider.name": row.get("provider"),
        "gen_ai.request.model": row.get("requested_model"),
        "gen_ai.response.model": row.get("model"),
        "gen_ai.usage.input_tokens": prompt,  # the whole prompt, as the conventions define it
        "gen_ai.usage.output_tokens": row.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": row.get("cache_read_tokens"),
        "gen_ai.usage.cache_creation.input_tokens": row.get("cache_write_tokens"),
        "gen_ai.usage.reasoning.output_tokens": row.get("reasoning_tokens"),
        "gen_ai.response.id": row.get("message_id"),
        "gen_ai.response.finish_reasons": [row["stop_reason"]] if row.get("stop_reason") else None,
        "error.type": (row.get("error_type") or row.get("outcome")) if row.get("outcome") not in (None, "ok") else None,
        "http.response.status_code": row.get("status_code"),
        "llmsm.event.id": row.get("id"),
        "llmsm.usage.uncached_input_tokens": row.get("input_tokens"),
        "llmsm.usage.cache_write_1h_tokens": row.get("cache_write_1h_tokens"),
        "llmsm.cost_usd": row.get("cost_usd"),
        "llmsm.usage_source": row.get("usage_source"),
        "llmsm.client": row.get("client"),
        "llmsm.client_version": row.get("client_version"),
        "llmsm.label": row.get("label"),
        "llmsm.project": row.get("project"),
        "llmsm.outcome": row.get("outcome"),
        "llmsm.developer": identity.developer,
        "llmsm.api": row.get("api"),
    }
    return {k: v for k, v in attrs.items() if v is not None}


def traces_endpoint(endpoint: str | None) -> str | None:
    """--otlp-endpoint is a base URL like OTEL_EXPORTER_OTLP_ENDPOINT: /v1/traces is added.
    None leaves the exporter to the OTEL_EXPORTER_OTLP_* variables."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class OtlpSink:
    def __init__(self, endpoint: str | None, identity: Identity) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource

        url = traces_endpoint(endpoint)
        self.exporter = OTLPSpanExporter(endpoint=url) if url else OTLPSpanExporter()
        self.target = "otlp:" + (url or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                                 or traces_endpoint(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or "default")
        self.identity = identity
        self.resource = Resource.create({"service.name": "llmsm", "host.name": identity.host, "llmsm.developer": identity.developer})

    def spans(self, rows: list[dict[str, Any]]) -> list:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        out = []
        for r in rows:
            digest = hashlib.sha256(str(r["id"]).encode()).digest()
            ctx = SpanContext(int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1,
                              is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            start = r["started_at"]
            end = r.get("ended_at") or (start + timedelta(milliseconds=r.get("duration_ms") or 0))
            attrs = attributes(r, self.identity)
            failed = r.get("outcome") not in (None, "ok")
            out.append(ReadableSpan(
                name=f"{attrs.get('gen_ai.operation.name', 'llm')} {r.get('requested_model') or r.get('model') or ''}".strip(),
                context=ctx, kind=SpanKind.CLIENT, attributes=attrs, resource=self.resource,
                start_time=_ns(start), end_time=_ns(end),
                status=Status(StatusCode.ERROR, r.get("outcome")) if failed else Status(StatusCode.UNSET),
            ))
        return out

    def send(self, rows: list[dict[str, Any]]) -> int:
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = self.exporter.export(self.spans(rows))
        if result != SpanExportResult.SUCCESS:
            raise ConnectionError(f"the OTLP collector at {self.target[5:]} did not accept {len(rows)} span(s)")
        return len(rows)

    def close(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:
            pass
