"""User tokens for the REST API (DRF authtoken), obtained with a username and password."""

from __future__ import annotations

from django.contrib.auth import authenticate
from rest_framework.authtoken.models import Token

from gridtoken.exceptions import NotAuthenticated
from meters.ratelimit import check_login_allowed


def user_token_obtain(*, username: str, password: str, request=None) -> Token:
    """The user's token (created on first use); 401 invalid_credentials for a wrong or inactive login,
    429 after ``RATE_LIMIT_LOGIN_PER_MIN`` attempts for one username within a minute."""
    check_login_allowed(username=username)
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise NotAuthenticated("invalid_credentials", "Unable to log in with the provided credentials.")
    token, _ = Token.objects.get_or_create(user=user)
    return token
