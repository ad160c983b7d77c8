"""What every llmsm hook shares: the guard that keeps llmsm's failures out of the traffic, and
the names under which the addons leave things for each other in `flow.metadata`."""

from __future__ import annotations

import functools
import inspect
import logging

log = logging.getLogger("llmsm.hooks")

META = "llmsm"  # the gateway's Exchange for a flow in flight
# The ExchangeEvent the gateway finished in the current hook (response, error, websocket_message,
# websocket_end), for the addons after it in the same hook: the recorder writes it, the budget
# guard counts it. The gateway clears it at the start of each of those hooks, so an event is
# seen once although a WebSocket connection finishes several on one flow. An estimate finished
# in a thread is there too: mitmproxy awaits a hook's awaitable before the next addon's hook.
EVENT_META = "llmsm_event"
WS_META = "llmsm_ws"  # a WebSocket connection's shared attribution
PROXY_USER_META = "llmsm_proxy_user"  # the explicit-proxy user name (addons/auth.py): a session label


def guarded(hook):
    """Run a hook; on any exception log it and let the traffic continue untouched.

    Hooks are plain functions that return an awaitable only when they have something to wait
    for (mitmproxy awaits what a hook returns): an `async def` hook would cost every request a
    coroutine round trip on the event loop."""

    @functools.wraps(hook)
    def wrapper(self, *args):
        try:
            result = hook(self, *args)
        except Exception:
            log.exception("llmsm: %s failed; traffic continues unaffected", hook.__name__)
            return None
        if result is not None and inspect.isawaitable(result):
            return guard_awaitable(result, hook.__name__)
        return result

    return wrapper


async def guard_awaitable(awaitable, name: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("llmsm: %s failed; traffic continues unaffected", name)
