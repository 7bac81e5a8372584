"""Placeholder: the realtime work replaces this with token/session authentication for WebSockets."""


def WebSocketAuthMiddleware(inner):  # noqa: N802
    return inner
