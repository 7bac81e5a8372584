"""The operator endpoints' base: staff only, authenticated by a user token or an admin session (never a device
key), and the error answers every operator endpoint documents. minting, certificates and the meters key and
dead-letter endpoints build on it."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from meters.apis.base import ApiView
from meters.apis.docs import errors
from meters.authentication import BearerTokenAuthentication

# Every operator endpoint: 401 without credentials, 403 for a user who is not staff.
OPERATOR_ERRORS = (401, 403)
# Operator bodies go through the project's one parser (meters.parsers): malformed JSON, a repeated key or a failed
# field is 400, a body past the size limit 413, another media type 415.
OPERATOR_BODY_ERRORS = (400, *OPERATOR_ERRORS, 413, 415)
OPERATOR_DESCRIBED = {403: "forbidden: operators (is_staff) only."}


def operator_errors(*statuses: int, described: dict[int, str] | None = None):
    return errors(*statuses, described=OPERATOR_DESCRIBED | (described or {}))


class IsOperator(BasePermission):
    message = "Operators only."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class OperatorApi(ApiView):
    # Bearer first: an anonymous request then gets a 401 with WWW-Authenticate, not a 403.
    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [IsOperator]

    def actor(self) -> str:
        return self.request.user.get_username()
