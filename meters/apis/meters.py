from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from gridtoken.exceptions import ValidationFailed
from meters.apis.base import ApiView, IsFleetKey, IsUserCredential, JsonInputSerializer, WriteApiView
from meters.apis.docs import BODY_ERRORS, PAGINATION, errors
from meters.models import Meter
from meters.selectors import Caller, meter_list, paginate
from meters.services.meters import meter_create, meter_register_for_fleet
from meters.validation import is_wallet_address, parse_wallet

SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
SERIAL_MESSAGE = "1 to 64 characters: letters, digits and . _ : - (starting with a letter or digit)."


class WalletField(serializers.CharField):
    def to_internal_value(self, data):
        return parse_wallet(data, self.field_name)


class PublicKeyField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str) or not is_wallet_address(data):
            raise ValidationFailed(
                "invalid_public_key", "Not a base58 Ed25519 public key (32 bytes).", field=self.field_name
            )
        return data


class MeterOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    serial = serializers.CharField()
    owner_id = serializers.UUIDField()
    wallet_address = serializers.CharField()
    public_key = serializers.CharField(help_text="Empty when the meter has no signing key")
    status = serializers.ChoiceField(choices=Meter.Status.choices)
    meter_type = serializers.CharField()
    location = serializers.CharField()
    zone_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class PageInputSerializer(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, max_value=1_000_000, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=100, default=20)


class MeterListApi(ApiView):
    """GET /api/meters: the caller's meters (a device key sees its own meter only)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Your meters",
        parameters=[PageInputSerializer],
        responses={
            200: inline_serializer("MeterPage", {"data": MeterOutputSerializer(many=True), "pagination": PAGINATION}),
            **errors(400, 401),
        },
    )
    def get(self, request):
        query = PageInputSerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        page = paginate(meter_list(caller=Caller.from_request(request)), **query.validated_data)
        return Response(
            {"data": MeterOutputSerializer(page["items"], many=True).data, "pagination": page["pagination"]}
        )


class MeterCreateApi(WriteApiView):
    """POST /api/meters: register a meter; the answer holds its device API key, shown this once."""

    permission_classes = [IsUserCredential]

    @extend_schema_serializer(component_name="MeterCreateInput")
    class InputSerializer(JsonInputSerializer):
        serial = serializers.RegexField(SERIAL_PATTERN, error_messages={"invalid": SERIAL_MESSAGE})
        wallet_address = WalletField(required=False, allow_null=True)
        public_key = PublicKeyField(required=False, allow_null=True, allow_blank=True)
        meter_type = serializers.CharField(max_length=64, required=False, allow_blank=True)
        location = serializers.CharField(max_length=255, required=False, allow_blank=True)
        zone_id = serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1, required=False, allow_null=True)

    @extend_schema(
        summary="Register a meter; the answer holds its device API key, shown this once",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "MeterCreated",
                {"meter": MeterOutputSerializer(), "api_key": serializers.CharField(help_text="Shown this once")},
            ),
            **errors(
                *BODY_ERRORS,
                403,
                409,
                described={
                    403: "forbidden: registering a meter needs a user's token or session, not an API key.",
                    409: "meter_already_registered: the serial is taken.",
                },
            ),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {key: value for key, value in serializer.validated_data.items() if value is not None}
        meter, api_key = meter_create(owner=request.user, **data)
        return Response(
            {"meter": MeterOutputSerializer(meter).data, "api_key": api_key}, status=status.HTTP_201_CREATED
        )


class MetersApi(MeterListApi, MeterCreateApi):
    """/api/meters: the gateway puts both operations on one path. Each keeps its own class above; this one
    only routes by method and applies that operation's permissions and rate limit."""

    def _operation(self) -> type[ApiView]:
        return MeterCreateApi if self.request.method == "POST" else MeterListApi

    def get_permissions(self):
        return [permission() for permission in self._operation().permission_classes]

    def get_throttles(self):
        return [throttle() for throttle in self._operation().throttle_classes]


REGISTERED = inline_serializer(
    "MeterRegistered",
    {
        "success": serializers.BooleanField(),
        "message": serializers.CharField(),
        "meter_id": serializers.CharField(help_text="The meter's serial"),
        "id": serializers.UUIDField(),
    },
)


class SimulatorMeterRegisterApi(WriteApiView):
    """POST /api/v1/simulator/meters/register: an aggregator (fleet key) registers or re-announces a meter."""

    permission_classes = [IsFleetKey]

    @extend_schema_serializer(component_name="SimulatorMeterRegisterInput")
    class InputSerializer(JsonInputSerializer):
        meter_id = serializers.RegexField(SERIAL_PATTERN, error_messages={"invalid": SERIAL_MESSAGE})
        wallet_address = WalletField()
        meter_type = serializers.CharField(max_length=64, required=False, allow_blank=True, allow_null=True)
        location = serializers.CharField(max_length=255, required=False, allow_blank=True, allow_null=True)
        zone_id = serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1, required=False, allow_null=True)

    @extend_schema(
        summary="Register or re-announce a meter of an aggregator's fleet",
        request=InputSerializer,
        responses={
            201: REGISTERED,
            200: OpenApiResponse(REGISTERED, description="Already registered: wallet, type, location, zone updated."),
            **errors(
                *BODY_ERRORS,
                403,
                409,
                described={
                    403: "forbidden: this operation needs a fleet API key.",
                    409: "meter_already_registered: another account's meter has this serial.",
                },
            ),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        serial = data.pop("meter_id")
        meter, created = meter_register_for_fleet(owner=request.user, serial=serial, **data)
        message = f"Meter {serial} registered." if created else f"Meter {serial} was already registered."
        return Response(
            {"success": True, "message": message, "meter_id": meter.serial, "id": str(meter.id)},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
