"""Placeholder: the ingestion work replaces these with API-key and bearer-token authentication."""

from rest_framework.authentication import BaseAuthentication, TokenAuthentication


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        return None


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"
