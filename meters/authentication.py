"""DRF authentication: device/fleet API keys and user tokens.

- ``X-API-Key: gtk_...`` or ``Authorization: Bearer gtk_...``: an API key (``request.auth`` is an
  ``ApiKeyPrincipal``, ``request.user`` the key's owner).
- ``Authorization: Bearer <token>`` or ``Authorization: Token <token>``: a user's DRF token.

A bad credential is a 401 with ``WWW-Authenticate: Bearer realm="api"``; no credential at all is a 401 from
the permission check on views that need one.
"""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from meters.services.api_keys import InvalidApiKey, api_key_authenticate, looks_like_api_key

WWW_AUTHENTICATE = 'Bearer realm="api"'


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        raw_key = request.META.get("HTTP_X_API_KEY")
        if raw_key is None:
            scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not looks_like_api_key(value):
                return None
            raw_key = value
        raw_key = raw_key.strip()
        if not raw_key:
            raise AuthenticationFailed("The X-API-Key header is empty.")
        try:
            return api_key_authenticate(raw_key=raw_key)
        except InvalidApiKey as error:
            raise AuthenticationFailed(error.message) from None

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE


class BearerTokenAuthentication(TokenAuthentication):
    """DRF's token authentication under either keyword, ``Bearer`` or ``Token``."""

    keyword = "Bearer"
    keywords = (b"bearer", b"token")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in self.keywords:
            return None
        if len(auth) != 2:
            raise AuthenticationFailed("The Authorization header must be '<scheme> <token>'.")
        if looks_like_api_key(auth[1].decode("latin-1")):
            return None  # an API key: ApiKeyAuthentication's business
        try:
            token = auth[1].decode()
        except UnicodeError:
            raise AuthenticationFailed("The token contains invalid characters.") from None
        return self.authenticate_credentials(token)

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE
