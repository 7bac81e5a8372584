from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from meters.apis.base import ApiView
from meters.services.tokens import user_token_obtain


class TokenCreateApi(ApiView):
    """POST /api/auth/token: username and password in, the user's API token out."""

    authentication_classes = []  # a stale Authorization header must not block logging in
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="TokenCreateInput")
    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=1024, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer("Token", {"token": serializers.CharField(), "user_id": serializers.UUIDField()}),
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = user_token_obtain(**serializer.validated_data, request=request._request)
        return Response({"token": token.key, "user_id": str(token.user_id)})
