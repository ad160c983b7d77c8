"""The gateway's authentication: the `llmsm_auth_token` a client must present, and the proxy user
name that labels an explicit-proxy client's sessions. Modelled on mitmproxy's `proxyauth` addon,
whose Basic-auth parsing it uses.

- With a token set (`llmsm proxy --auth-token`, mandatory off loopback), every request carries it
  in the `x-llmsm-token` header, or as the password of a Basic `Proxy-Authorization` (an
  explicit-proxy client: `HTTPS_PROXY=http://NAME:TOKEN@host:port`). A tunnel whose CONNECT
  carried it is authenticated for every request inside. Otherwise: 401 (407 for a CONNECT).
- The user name of `Proxy-Authorization` (`HTTPS_PROXY=http://NAME@host:port`), given on the
  CONNECT or on a plain-HTTP request, is left in `flow.metadata[PROXY_USER_META]` for the
  gateway: it labels the session.
- The token header and `Proxy-Authorization` are taken off every request: never forwarded.

Runs before the gateway (addons/server.py, `llmsm_addons`): a refused request has its response
set here and goes no further.
"""

from __future__ import annotations

import hmac
import weakref
from urllib.parse import unquote

from mitmproxy import connection, ctx, http
from mitmproxy.addons.proxyauth import parse_http_basic_auth

from llmsm.addons.errors import error_body
from llmsm.addons.hooks import PROXY_USER_META, guarded

TOKEN_HEADER = "x-llmsm-token"
_TOKEN = TOKEN_HEADER.encode()
_PROXY_AUTHORIZATION = b"proxy-authorization"


class GatewayAuth:
    def __init__(self) -> None:
        self.token = b""  # the llmsm_auth_token option; empty: no token asked for
        # Client connections whose CONNECT passed -> the proxy user it named (or None). Weak, as
        # in mitmproxy's proxyauth: an entry goes with its connection, without a hook of ours.
        self._tunnels: weakref.WeakKeyDictionary[connection.Client, str | None] = weakref.WeakKeyDictionary()

    def load(self, loader) -> None:
        loader.add_option(
            "llmsm_auth_token", str, "",
            "When set, every client must present it: header x-llmsm-token, or as the proxy password.",
        )

    def configure(self, updated) -> None:
        if "llmsm_auth_token" in updated:
            self.token = ctx.options.llmsm_auth_token.encode()

    @guarded
    def http_connect(self, flow: http.HTTPFlow) -> None:
        user, password = basic_credentials(flow.request.headers.get("proxy-authorization"))
        if self.token and not self._token_ok(password):
            flow.response = http.Response.make(
                407, error_body(407, "llmsm: proxy authentication required"), {"Proxy-Authenticate": 'Basic realm="llmsm"'}
            )
            return
        self._tunnels[flow.client_conn] = user

    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # One walk over the raw fields for both names: each Headers look-up walks them all.
        token = proxy_authorization = None
        for name, value in flow.request.headers.fields:
            name = name.lower()
            if name == _TOKEN:
                token = value.decode("utf-8", "replace")
            elif name == _PROXY_AUTHORIZATION:
                proxy_authorization = value.decode("utf-8", "replace")
        in_tunnel = bool(self._tunnels) and flow.client_conn in self._tunnels
        user, password = basic_credentials(proxy_authorization)
        if self.token and not in_tunnel and not self._token_ok(token or password):
            flow.response = http.Response.make(
                401, error_body(401, f"llmsm: this gateway needs its token (header {TOKEN_HEADER})"),
                {"content-type": "application/json"},
            )
            return
        if token is not None:
            del flow.request.headers[TOKEN_HEADER]
        if proxy_authorization is not None:
            del flow.request.headers["proxy-authorization"]
        if in_tunnel:
            user = self._tunnels[flow.client_conn] or user
        if user:
            flow.metadata[PROXY_USER_META] = user

    def _token_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.token)


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """(user, password) of a Basic authorization header, each None when absent or empty;
    percent-escapes decoded, as a client may send the user and password of a proxy URL."""
    if not header:
        return None, None
    try:
        _, user, password = parse_http_basic_auth(header)
    except ValueError:
        return None, None
    return unquote(user) or None, unquote(password) or None
