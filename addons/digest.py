"""The digest keeper: fills each turn's `events.digest` with what its request showed that the
session's previous request did not (DIGEST-CONTRACT; the reading is `addons/providers/work.py`,
the bounds and the scrubbing `analytics/digest.py`). It only wires:

- `request` (and, for Codex's WebSocket, `websocket_message` when a `response.create` opened a
  turn), after the gateway attributed the exchange: scan the body's new messages, keep the delta
  with the flow;
- `response`, `error`, `websocket_message`, `websocket_end`, after the gateway finished the event
  and before the recorder writes it (addons/server.py's order): put the delta on the event.

Side calls (a title, a routing call: `RequestInfo.side_call`, or a request the attribution
joined to a session as one) are not the session's turns: they are not scanned; nor is an
assistant's request that offers no tools (its turns always do; a request without them is one of
its own checks, under the session's id). Neither are
requests without a session, token counts, or anything with the option `llmsm_content` off
(`llmsm proxy --no-content`): then no text of the conversation is kept at all.

Failures are logged by type only (never the message: it could quote the conversation), and the
traffic goes on: the event is written without a digest.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http

from llmsm.addons.hooks import EVENT_META, META, WS_META, guarded
from llmsm.addons.providers.work import WorkScanner
from llmsm.addons.sessions import ASSISTANT_CLIENTS
from llmsm.analytics.apis import spec_for

log = logging.getLogger("llmsm.digest")

# (the Exchange scanned, its delta or None) for the exchange in flight on a flow
DIGEST_META = "llmsm_digest"
_TURN_METADATA_HEADER = "x-codex-turn-metadata"


class DigestKeeper:
    def __init__(self) -> None:
        self.scanner = WorkScanner()
        self.content = True

    def load(self, loader) -> None:
        loader.add_option(
            "llmsm_content", bool, True,
            "Keep a short digest of each session's work (project, goal, asks, files, commands, todos, the "
            "assistant's last text; scrubbed of secrets). Off: no text of the conversation is kept at all.",
        )

    def configure(self, updated) -> None:
        if "llmsm_content" in updated:
            self.content = bool(ctx.options.llmsm_content)
            if not self.content:
                self.scanner.clear()

    # -- scan: after the gateway attributed the request ---------------------------------------
    @guarded
    def request(self, flow: http.HTTPFlow) -> None:
        if self.content:
            ex = flow.metadata.get(META)
            if ex is not None and not ex.answered_by_gateway:
                flow.metadata[DIGEST_META] = (ex, self._delta(ex, ex.headers))

    @guarded
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        self._attach(flow)  # the turn the gateway finished in this hook, if it did
        ws = flow.metadata.get(WS_META)
        current = ws.current if ws is not None else None
        if current is None or not self.content:
            return
        pending = flow.metadata.get(DIGEST_META)
        if pending is None or pending[0] is not current:  # a response.create opened this turn
            flow.metadata[DIGEST_META] = (current, self._delta(current, ws.handshake.headers))

    def _delta(self, ex: Any, headers: dict[str, str]) -> dict[str, Any] | None:
        info, identity = ex.request, ex.identity
        spec = spec_for(ex.provider, ex.api)
        if spec is None or spec.kind != "turn" or identity.session_id is None:
            return None
        if info.side_call or identity.source == "side_call":
            return None
        if ex.client in ASSISTANT_CLIENTS and not info.offers_tools:
            return None  # an assistant's own side request (a title, a check of a command, a quota probe)
        try:
            return self.scanner.scan(
                (identity.session_id, identity.agent_id), spec.module, info.items, info.instructions,
                items_are_new=info.items_are_new, user_turns=identity.agent_id is None,
                turn_metadata=headers.get(_TURN_METADATA_HEADER),
            )
        except Exception as exc:  # untrusted data; the type only: a message could quote it
            log.warning("llmsm: the digest of a request could not be read (%s); traffic continues", type(exc).__name__)
            return None

    # -- attach: after the gateway finished the event, before the recorder writes it ----------
    @guarded
    def _attach(self, flow: http.HTTPFlow) -> None:
        event = flow.metadata.get(EVENT_META)
        if event is None:
            return
        pending = flow.metadata.pop(DIGEST_META, None)
        if pending is not None and pending[1] is not None and self.content:
            event.digest = pending[1]

    response = error = websocket_end = _attach
