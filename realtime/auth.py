"""Who is on the other end of a WebSocket, and may a browser page at this Origin talk to us at all.

The stack, outermost first:

1. Origin: a browser always sends ``Origin``; it must name one of ``ALLOWED_HOSTS`` or be listed in
   ``CORS_ALLOWED_ORIGINS``, else the connection is closed with 4003 before any database work. Clients that
   send no Origin (scripts, devices) cannot be driven by a hostile page, so they pass on to authentication.
2. Credentials: an API token (``?token=<key>`` or the subprotocol pair ``["token", "<key>"]``) wins when
   present, and an invalid one leaves the connection anonymous even if a session cookie is also sent. Without
   a token, the Django session cookie is used (Channels' cookie, session and auth middleware).
3. The consumer decides: anonymous or inactive users are closed with 4001 in ``connect``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

TOKEN_SUBPROTOCOL = "token"
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_RATE_LIMITED = 4008
CLOSE_TRY_AGAIN = 1013  # the server could not subscribe the connection (Redis unreachable): reconnect later


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def offered_token_subprotocol(scope) -> bool:
    return TOKEN_SUBPROTOCOL in scope.get("subprotocols", [])


def token_from_scope(scope) -> str | None:
    """The API token from ``?token=`` or from the subprotocols ``["token", "<key>"]``; None when neither."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    subprotocols = list(scope.get("subprotocols", []))
    if TOKEN_SUBPROTOCOL in subprotocols:
        position = subprotocols.index(TOKEN_SUBPROTOCOL)
        if position + 1 < len(subprotocols):
            return subprotocols[position + 1]
        return ""  # the marker without a key is an invalid token, not a fall-back to the session
    return None


def origin_allowed(origin: str | None) -> bool:
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # includes the opaque "null" origin of sandboxed frames and file:// pages
    if f"{parts.scheme}://{parts.netloc}".lower() in {o.lower().rstrip("/") for o in settings.CORS_ALLOWED_ORIGINS}:
        return True
    domain, _port = split_domain_port(parts.netloc)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


async def refuse(scope, receive, send, code: int) -> None:
    """Accept and close at once with ``code``: a rejected handshake would reach the client as a bare 1006.

    A browser drops a connection whose accept does not echo a subprotocol it offered, so echo ours.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    subprotocol = TOKEN_SUBPROTOCOL if offered_token_subprotocol(scope) else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await send({"type": "websocket.close", "code": code})


@database_sync_to_async
def user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    if not key:
        return AnonymousUser()
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class WebSocketAuthMiddleware:
    """Origin check, then token or session authentication; puts ``user`` and ``auth_method`` in the scope."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        if not origin_allowed(header(scope, b"origin")):
            return await refuse(scope, receive, send, CLOSE_FORBIDDEN_ORIGIN)
        key = token_from_scope(scope)
        if key is None:
            return await self.session_stack(dict(scope, auth_method="session"), receive, send)
        user = await user_for_token(key)
        return await self.inner(dict(scope, user=user, auth_method="token"), receive, send)
