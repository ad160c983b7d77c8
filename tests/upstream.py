"""A fake upstream that speaks each provider's wire format (JSON and SSE), with faults.

Tests point the gateway's routes at it with ``--upstream NAME=URL``. Behaviour is chosen per
request by the ``x-fake`` header (it passes through the gateway untouched), a comma list of:

- ``status=N``: answer with that HTTP status and the provider's error JSON
- ``error_event``: a 200 stream that carries an error event after some content
- ``reset_after=N``: send N events, then reset the connection (RST)
- ``hang_after=N``: send N events, then stall until the client goes away
- ``gzip``: gzip the body (Content-Encoding: gzip), streamed as it is produced
- ``bytewise``: send the body one byte per chunk
- ``slow=SECONDS``: pause between events
- ``html``: the error body is an HTML page, not JSON
- ``stall=SECONDS``: wait that long before answering at all (an upstream that hangs)
- ``util=F``, ``reset=EPOCH``: Anthropic's unified 5h utilization and reset (default 0.42, a past reset)

Usage numbers are fixed per provider (the constants below), so tests know the exact answer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_PIECES = ["Hello", " from", " the", " fake", " upstream", "."]
TEXT = "".join(TEXT_PIECES)

ANTHROPIC_USAGE = {"input_tokens": 21, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 42}
OPENAI_CHAT_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 20},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
OPENAI_RESPONSES_USAGE = {
    "input_tokens": 200,
    "input_tokens_details": {"cached_tokens": 50},
    "output_tokens": 60,
    "output_tokens_details": {"reasoning_tokens": 10},
    "total_tokens": 260,
}
GEMINI_USAGE = {
    "promptTokenCount": 300,
    "cachedContentTokenCount": 100,
    "candidatesTokenCount": 40,
    "thoughtsTokenCount": 12,
    "totalTokenCount": 352,
}

# The normalized numbers llmsm must store for each (uncached input, output, cache read, cache write, reasoning).
EXPECTED = {
    "anthropic": (21, 42, 1000, 100, None),
    "openai_chat": (100, 30, 20, 0, 5),
    "openai_responses": (150, 60, 50, 0, 10),
    "gemini": (200, 52, 100, 0, 12),
}


def sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# -- per provider: (JSON body, list of SSE events) --------------------------------------------

def anthropic_messages(body: dict, *, error_event: bool, tool: str | None = None) -> tuple[dict, list[bytes]]:
    """`tool` (the `x-fake: tool_use=NAME` flag): the answer's text is followed by a tool_use
    block calling NAME with `{"active_minutes": 60}` (stop_reason tool_use), streamed as
    input_json_delta pieces the way the API streams a tool's input."""
    model = body.get("model", "claude-sonnet-4-5")
    msg_id = "msg_fake_" + str(abs(hash(json.dumps(body, sort_keys=True))) % 10**8)
    usage = dict(ANTHROPIC_USAGE)
    tool_input = {"active_minutes": 60}
    use = {"type": "tool_use", "id": "toolu_fake_" + msg_id[9:], "name": tool, "input": tool_input} if tool else None
    whole = {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": TEXT}, *([use] if use else [])],
        "stop_reason": "tool_use" if use else "end_turn", "stop_sequence": None,
        "usage": usage,
    }
    start_usage = dict(usage, output_tokens=1)
    events = [sse("message_start", {"type": "message_start", "message": dict(whole, content=[], stop_reason=None, usage=start_usage)})]
    events.append(sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    events.append(sse("ping", {"type": "ping"}))
    for piece in TEXT_PIECES:
        events.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}))
    if error_event:
        events.append(sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        return whole, events
    events.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if use:
        events.append(sse("content_block_start", {"type": "content_block_start", "index": 1,
                                                  "content_block": dict(use, input={})}))
        args = json.dumps(tool_input)
        for piece in (args[:8], args[8:]):
            events.append(sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                      "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(sse("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return whole, events


def anthropic_error(status: int) -> dict:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}, "request_id": "req_fake"}


def openai_chat(body: dict, *, error_event: bool) -> tuple[dict, list[bytes]]:
    model = body.get("model", "gpt-4o")
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    whole = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": OPENAI_CHAT_USAGE,
    }
    events = [sse(None, dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))]
    for piece in TEXT_PIECES:
        events.append(sse(None, dict(base, choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}])))
    if error_event:
        events.append(sse(None, {"error": {"message": "fake upstream failure", "type": "server_error", "code": "server_error"}}))
        return whole, events
    events.append(sse(None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(sse(None, dict(base, choices=[], usage=OPENAI_CHAT_USAGE)))
    events.append(b"data: [DONE]\n\n")
    return whole, events


def openai_error(status: int) -> dict:
    kind = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded", 500: "server_error"}.get(status, "server_error")
    return {"error": {"message": f"fake {kind}", "type": kind, "param": None, "code": kind}}


def openai_responses(body: dict, *, error_event: bool) -> tuple[dict, list[bytes]]:
    model = body.get("model", "gpt-5")
    resp = {"id": "resp_fake", "object": "response", "created_at": 1700000000, "status": "in_progress", "model": model, "output": [], "usage": None}
    done = dict(resp, status="completed", usage=OPENAI_RESPONSES_USAGE, output=[
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}
    ])
    seq = iter(range(1000))
    events = [sse("response.created", {"type": "response.created", "sequence_number": next(seq), "response": resp})]
    for piece in TEXT_PIECES:
        events.append(sse("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(seq), "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": piece}))
    if error_event:
        events.append(sse("error", {"type": "error", "sequence_number": next(seq), "code": "server_error", "message": "fake upstream failure", "param": None}))
        return done, events
    events.append(sse("response.completed", {"type": "response.completed", "sequence_number": next(seq), "response": done}))
    return done, events


def gemini(body: dict, model: str, *, error_event: bool) -> tuple[dict, list[bytes]]:
    def chunk(text: str, finish: str | None, usage: dict) -> dict:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "gem_fake"}

    whole = chunk(TEXT, "STOP", GEMINI_USAGE)
    events = []
    for i, piece in enumerate(TEXT_PIECES):
        last = i == len(TEXT_PIECES) - 1
        # cumulative, and the prompt count even shrinks mid-stream as in real captures
        usage = GEMINI_USAGE if last else {"promptTokenCount": 310, "candidatesTokenCount": i + 1, "totalTokenCount": 311 + i}
        events.append(sse(None, chunk(piece, "STOP" if last else None, usage)))
        if error_event and i == 2:
            events.append(sse(None, {"error": {"code": 503, "message": "fake overload", "status": "UNAVAILABLE"}}))
            return whole, events
    return whole, events


def gemini_error(status: int) -> dict:
    kind = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
    return {"error": {"code": status, "message": f"fake {kind}", "status": kind}}


# -- the server ---------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FakeUpstream._Server"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._record(b"")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record(b"")
        self._send_json(200, {"object": "list", "data": []}, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        self._record(raw)
        flags = _flags(self.headers.get("x-fake", ""))
        if "stall" in flags:
            deadline = time.time() + float(flags["stall"])
            while time.time() < deadline and not self.server.owner.stopping.is_set():
                time.sleep(0.05)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        path = self.path.split("?", 1)[0]
        status = int(flags.get("status", 200))
        error_event = "error_event" in flags
        extra = {"request-id": "req_upstream_1", "x-request-id": "req_upstream_1"}
        if path.endswith("/messages/count_tokens"):
            return self._send_json(200, {"input_tokens": 1234}, extra, flags)
        if path.endswith(":countTokens"):
            return self._send_json(200, {"totalTokens": 77}, extra, flags)
        if path.endswith("/messages"):
            provider, (whole, events) = "anthropic", anthropic_messages(body, error_event=error_event, tool=flags.get("tool_use"))
            streamed = bool(body.get("stream"))
            extra.update({
                "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "399000",
                "anthropic-ratelimit-unified-5h-utilization": flags.get("util", "0.42"),
                "anthropic-ratelimit-unified-reset": flags.get("reset", "1764000000"),
            })
        elif path.endswith("/chat/completions"):
            provider, (whole, events) = "openai", openai_chat(body, error_event=error_event)
            streamed = bool(body.get("stream"))
            extra.update({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499"})
        elif path.endswith("/responses"):
            provider, (whole, events) = "openai", openai_responses(body, error_event=error_event)
            streamed = bool(body.get("stream"))
            extra.update({"x-codex-primary-used-percent": "12", "x-codex-primary-window-minutes": "300"})
        elif ":generateContent" in path or ":streamGenerateContent" in path:
            model = path.rsplit("/models/", 1)[-1].split(":", 1)[0]
            provider, (whole, events) = "gemini", gemini(body, model, error_event=error_event)
            streamed = ":streamGenerateContent" in path
        else:
            return self._send_json(404, {"error": {"message": f"no such path {path}"}}, extra, flags)
        if status >= 400:
            err = {"anthropic": anthropic_error, "openai": openai_error, "gemini": gemini_error}[provider](status)
            if status == 429:
                extra["retry-after"] = "0"
            if "html" in flags:
                return self._send_raw(status, b"<html><body>413 Request Entity Too Large</body></html>", "text/html", extra, flags)
            return self._send_json(status, err, extra, flags)
        if streamed:
            return self._send_stream(events, extra, flags)
        return self._send_json(200, whole, extra, flags)

    # -- writing --------------------------------------------------------------------------
    def _record(self, raw: bytes) -> None:
        self.server.owner.requests.append({
            "method": self.command, "path": self.path, "headers": dict(self.headers.items()),
            "body": raw if len(raw) <= 1 << 20 else b"",  # big bodies: digest only
            "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
        })

    def _send_json(self, status: int, obj: Any, extra: dict, flags: dict | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), "application/json", extra, flags or {})

    def _send_raw(self, status: int, data: bytes, ctype: str, extra: dict, flags: dict) -> None:
        if "gzip" in flags:
            data = gzip.compress(data, mtime=0)  # deterministic: direct and proxied bodies compare equal
            extra = dict(extra, **{"content-encoding": "gzip"})
        self.send_response(status)
        self.send_header("content-type", ctype)
        for k, v in extra.items():
            self.send_header(k, v)
        if "bytewise" in flags:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(len(data)):
                self._chunk(data[i : i + 1])
            self._chunk(b"")
        else:
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_stream(self, events: list[bytes], extra: dict, flags: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        compressor = None
        if "gzip" in flags:
            compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            self.send_header("content-encoding", "gzip")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        reset_after = int(flags["reset_after"]) if "reset_after" in flags else None
        hang_after = int(flags["hang_after"]) if "hang_after" in flags else None
        slow = float(flags.get("slow", 0))
        for i, event in enumerate(events):
            if reset_after is not None and i >= reset_after:
                return self._reset()
            if hang_after is not None and i >= hang_after:
                return self._hang()
            data = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH) if compressor else event
            if "bytewise" in flags:
                for j in range(len(data)):
                    self._chunk(data[j : j + 1])
            else:
                self._chunk(data)
            if slow:
                time.sleep(slow)
        if compressor is not None:
            self._chunk(compressor.flush())
        self._chunk(b"")

    def _reset(self) -> None:
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _hang(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not self.server.owner.stopping.is_set():
            time.sleep(0.05)
        self.close_connection = True


def _flags(spec: str) -> dict[str, str]:
    out = {}
    for part in spec.split(","):
        part = part.strip()
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


class FakeUpstream:
    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        owner: "FakeUpstream"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # stop() waits for serve_forever to notice: poll every 50 ms, not every 500 ms
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "FakeUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def body_for(self, events: list[bytes]) -> bytes:
        return b"".join(events)
