"""Codex's Responses-over-WebSocket transport: each response.create is one exchange."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest
from websockets.asyncio.server import serve
from websockets.sync.client import connect

from tests.conftest import Gateway
from tests.upstream import EXPECTED, TEXT_PIECES, OPENAI_RESPONSES_USAGE


class WebSocketUpstream:
    """Answers every response.create with the Responses events, as Codex's server does."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.paths: list[str] = []
        self.creates: list[dict] = []  # every response.create that reached the upstream
        self._ready = threading.Event()
        self._stop: asyncio.Future | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws) -> None:
        self.paths.append(ws.request.path)
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") != "response.create":
                continue
            self.creates.append(frame)
            model = frame.get("model", "gpt-5")
            resp = {"id": "resp_ws", "object": "response", "status": "in_progress", "model": model, "usage": None}
            await ws.send(json.dumps({"type": "response.created", "response": resp}))
            for piece in TEXT_PIECES:
                await ws.send(json.dumps({"type": "response.output_text.delta", "delta": piece}))
            if frame.get("fail"):
                await ws.close()
                return
            done = dict(resp, status="completed", usage=OPENAI_RESPONSES_USAGE)
            await ws.send(json.dumps({"type": "response.completed", "response": done}))

    async def _main(self) -> None:
        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    def start(self) -> "WebSocketUpstream":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.get_loop().call_soon_threadsafe(self._stop.set_result, None)


@pytest.fixture(scope="module")
def ws_upstream():
    up = WebSocketUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def ws_gateway(tmp_path_factory, ws_upstream):
    gw = Gateway(tmp_path_factory.mktemp("ws"), f"http://127.0.0.1:{ws_upstream.port}").start()
    yield gw
    gw.stop()


def _turn(ws, text: str) -> list[dict]:
    """Send one response.create; the events up to its terminal one (or an error event)."""
    ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": [{"role": "user", "content": text}]}))
    events = []
    while not events or events[-1]["type"] not in ("response.completed", "error"):
        events.append(json.loads(ws.recv(timeout=10)))
    return events


def test_responses_over_websocket_are_counted_per_turn(ws_gateway):
    label = "ws-" + uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{ws_gateway.port}/s/{label}/openai/v1/responses"
    with connect(url, additional_headers={"authorization": "Bearer sk-test-ws", "originator": "codex_exec",
                                          "user-agent": "codex_exec/0.169.0 (Linux)"}) as ws:
        for turn in range(2):
            ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": [{"role": "user", "content": f"turn {turn}"}]}))
            events = []
            while True:
                event = json.loads(ws.recv(timeout=10))
                events.append(event)
                if event["type"] == "response.completed":
                    break
            assert "".join(e.get("delta", "") for e in events) == "".join(TEXT_PIECES)
    rows = ws_gateway.wait_rows(2, f"session_id = '{label}'")
    assert len(rows) == 2
    for row in rows:
        assert row["api"] == "responses" and row["outcome"] == "ok" and row["streamed"]
        assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["reasoning_tokens"]) == EXPECTED["openai_responses"]
        assert row["client"] == "codex" and row["client_version"] == "0.169.0"
        assert row["model"] == "gpt-5"


def test_websocket_closed_mid_turn_is_recorded(ws_gateway):
    label = "wsx-" + uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{ws_gateway.port}/s/{label}/openai/v1/responses"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": "x", "fail": True}))
        with pytest.raises(Exception):
            while True:
                ws.recv(timeout=10)
    [row] = ws_gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["outcome"] == "upstream_aborted"
    assert row["usage_source"] == "estimated" and row["output_tokens"] > 0


def test_declined_websocket_offer_is_not_an_api_error(gateway):
    """Codex offers a WebSocket first; an upstream without one answers 4xx and Codex falls back."""
    import httpx

    label = "wsno-" + uuid.uuid4().hex[:6]
    r = httpx.get(f"{gateway.url}/s/{label}/openai/v1/responses", timeout=10, headers={
        "connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "originator": "codex_exec"})
    assert r.status_code != 101
    [row] = gateway.wait_rows(1, f"session_id = '{label}'")
    assert row["api"] == "other"
    [s] = gateway.query(f"SELECT requests, errors FROM sessions WHERE session_id = '{label}'")
    assert (s["requests"], s["errors"]) == (0, 0)


def test_a_turn_over_budget_is_refused_on_the_websocket(ws_gateway, ws_upstream):
    """The response.create is not forwarded; Codex gets an error event it reads as the HTTP
    refusal; the row is a refused request (status 402, no usage, nothing estimated)."""
    label = "wsb-" + uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{ws_gateway.port}/s/{label}/openai/v1/responses"
    mine = lambda: [f for f in ws_upstream.creates if label in json.dumps(f)]  # noqa: E731
    with connect(url, additional_headers={"originator": "codex_exec"}) as ws:
        assert _turn(ws, label)[-1]["type"] == "response.completed"
        ws_gateway.wait_rows(1, f"session_id = '{label}'")
        budget_id = ws_gateway.cli("budget", "set", "--label", label, "--tokens", "10").stdout.split()[1]
        try:
            completed = 1
            deadline = time.monotonic() + 10  # the guard reloads within about a second
            while (events := _turn(ws, label))[-1]["type"] != "error":
                completed += 1
                assert time.monotonic() < deadline, "the budget was not applied"
                time.sleep(0.2)
            [again] = _turn(ws, label)  # the next turn on the same connection: refused at once
        finally:
            ws_gateway.cli("budget", "rm", budget_id)
    [error] = events
    assert again["type"] == "error" and again["error"]["code"] == error["error"]["code"] == "llmsm_budget_exceeded"
    assert len(mine()) == completed  # the refused turns never reached the upstream
    assert error["status"] == 402 and error["headers"]["x-should-retry"] == "false"  # Codex: see refusal_status
    assert error["error"]["type"] == "insufficient_quota" and f"label '{label}'" in error["error"]["message"]
    rows = ws_gateway.wait_rows(2, f"session_id = '{label}' AND status_code = 402")
    assert len(rows) == 2
    for row in rows:
        assert (row["outcome"], row["api"], row["error_type"]) == ("http_error", "responses", "insufficient_quota")
        assert (row["usage_source"], row["input_tokens"], row["output_tokens"]) == ("none", None, None)


def test_each_finished_turn_is_handed_on_once(tmp_path):
    """What the recorder and the budget guard count on (addons/hooks.py, EVENT_META): a WebSocket
    connection finishes several events on one flow, and an addon after the gateway sees each in
    the hook that finished it, never again in a later one. llmsm's addons in mitmproxy's own test
    master, with a flow played through them as mitmproxy replays one (eventsequence)."""
    from mitmproxy import eventsequence, hooks
    from mitmproxy.test import taddons, tflow
    from mitmproxy.websocket import WebSocketMessage
    from wsproto.frame_protocol import Opcode

    from llmsm.addons.hooks import EVENT_META
    from llmsm.addons.server import llmsm_addons
    from llmsm.analytics import store

    class Probe:  # an addon after llmsm's: what it is handed, hook by hook
        def __init__(self) -> None:
            self.seen: list[str] = []

        def _look(self, flow) -> None:
            event = flow.metadata.get(EVENT_META)
            if event is not None:
                self.seen.append(event.id)

        response = error = websocket_message = websocket_end = _look

    flow = tflow.twebsocketflow(messages=False)
    flow.request.host = flow.request.host_header = "api.openai.com"
    flow.request.path = "/v1/responses"
    text = lambda frame: WebSocketMessage(Opcode.TEXT, False, json.dumps(frame).encode())  # noqa: E731
    done = {"id": "resp_ws", "status": "completed", "model": "gpt-5", "usage": OPENAI_RESPONSES_USAGE}
    for turn in range(3):
        create = {"type": "response.create", "model": "gpt-5", "input": f"turn {turn}"}
        flow.websocket.messages += [
            WebSocketMessage(Opcode.TEXT, True, json.dumps(create).encode()),
            text({"type": "response.created", "response": dict(done, status="in_progress", usage=None)}),
            *(text({"type": "response.output_text.delta", "delta": piece}) for piece in TEXT_PIECES),
            text({"type": "response.completed", "response": done}),
        ]
    switched, flow.response = flow.response, None  # live: no response when the request hooks run
    db = tmp_path / "ws.duckdb"
    probe = Probe()

    async def play() -> None:
        with taddons.context(*llmsm_addons(), probe) as tctx:
            tctx.options.update(llmsm_db=str(db))
            await tctx.master.addons.trigger_event(hooks.RunningHook())
            for hook in eventsequence.iterate(flow):
                await tctx.master.addons.handle_lifecycle(hook)
                if hook.name == "request":
                    flow.response = switched  # the upstream's 101
            await tctx.master.addons.trigger_event(hooks.DoneHook())  # the recorder flushes

    asyncio.run(play())
    assert len(probe.seen) == len(set(probe.seen)) == 3
    con = store.open_for_query(db)
    try:
        rows = con.execute("SELECT id, api, outcome, input_tokens FROM events ORDER BY started_at").fetchall()
    finally:
        con.close()
    assert [row[0] for row in rows] == probe.seen
    assert {(api, outcome) for _, api, outcome, _ in rows} == {("responses", "ok")}
    assert all(row[3] == EXPECTED["openai_responses"][0] for row in rows)
