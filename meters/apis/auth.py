from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from meters.apis.base import ApiView, JsonInputSerializer
from meters.apis.docs import errors
from meters.services.tokens import user_token_obtain


class TokenCreateApi(ApiView):
    """POST /api/auth/token: username and password in, the user's API token out."""

    authentication_classes = []  # a stale Authorization header must not block logging in
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="TokenCreateInput")
    class InputSerializer(JsonInputSerializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=1024, trim_whitespace=False)

    @extend_schema(
        summary="Exchange a username and password for an API token",
        description="Send the token as Authorization: Bearer <token>.",
        request=InputSerializer,
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField(), "user_id": serializers.UUIDField()}),
            **errors(
                400,
                401,
                413,
                415,
                429,
                described={
                    401: "invalid_credentials: wrong username or password, or an inactive user.",
                    429: "rate_limited: too many login attempts for this username; see Retry-After.",
                },
            ),
        },
        auth=[],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = user_token_obtain(**serializer.validated_data, request=request._request)
        return Response({"token": token.key, "user_id": str(token.user_id)})
