"""One APIView per operation: validate, call one service or selector, answer JSON."""

from __future__ import annotations

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from certificates import selectors
from certificates.apis.payloads import (
    BUNDLE,
    DEVICE,
    ISSUANCE,
    MOVED,
    bundle_payload,
    device_payload,
    issuance_payload,
    outcome_payload,
)
from certificates.models import CertificateBundle, ProductionDevice
from certificates.services.devices import device_register, device_set_status
from certificates.services.issuance import issuance_decide_held
from certificates.services.lifecycle import bundle_claim, bundle_transfer, bundle_withdraw
from gridtoken.exceptions import ApplicationError
from meters.apis.base import (
    ApiView,
    BoundedDecimalField,
    IsUserCredential,
    JsonInputSerializer,
    StrictBooleanField,
    StrictUUIDField,
    WriteApiView,
)
from meters.apis.docs import BODY_ERRORS, errors
from meters.apis.operator import OperatorApi
from meters.models import Meter, User

ID_PARAMETER = {"type": "string", "format": "uuid"}
REFUSED = (
    "bundle_claimed, bundle_withdrawn, bundle_expired (the range is final), bundle_retired (split: act on its parts)"
)
MAX_WH = 2**62


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (DRF's field also reads "12" and 12.0)."""

    def to_internal_value(self, data) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class DeviceListApi(ApiView):
    """GET /api/certificates/devices: the caller's production devices."""

    permission_classes = [IsUserCredential]

    @extend_schema(
        summary="Your production devices",
        responses={200: inline_serializer("ProductionDeviceList", {"devices": DEVICE.__class__(many=True)}),
                   **errors(401, 403)},
    )  # fmt: skip
    def get(self, request):
        return Response({"devices": [device_payload(d) for d in selectors.device_list(owner=request.user)]})


class DeviceRegisterApi(WriteApiView):
    """POST /api/certificates/devices: register one of the caller's meters as a production device."""

    permission_classes = [IsUserCredential]

    @extend_schema_serializer(component_name="ProductionDeviceRegister")
    class InputSerializer(JsonInputSerializer):
        meter_id = StrictUUIDField()
        name = serializers.CharField(max_length=255)
        technology = serializers.ChoiceField(choices=ProductionDevice.Technology.choices)
        commissioning_date = serializers.DateField()
        grid_zone = serializers.CharField(max_length=64)
        country = serializers.CharField(max_length=64)
        issuer = serializers.CharField(max_length=128)
        capacity_kw = BoundedDecimalField(max_digits=12, decimal_places=3, min_value=0, required=False)
        latitude = BoundedDecimalField(max_digits=9, decimal_places=6, min_value=-90, max_value=90, required=False)
        longitude = BoundedDecimalField(max_digits=9, decimal_places=6, min_value=-180, max_value=180, required=False)
        location = serializers.CharField(max_length=255, required=False, allow_blank=True)
        is_storage = StrictBooleanField(required=False)

    @extend_schema(
        summary="Register one of your meters as a production device",
        description="The device is pending until an operator approves it; nothing is issued before.",
        request=InputSerializer,
        responses={
            201: DEVICE,
            **errors(*BODY_ERRORS, 403, 404, 409, described={409: "device_exists: the meter is a device already."}),
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        meter = Meter.objects.filter(id=fields.pop("meter_id"), owner=request.user).first()
        if meter is None:
            raise ApplicationError("meter_not_found", "no such meter among yours", field="meter_id", status=404)
        device = device_register(meter=meter, **fields)
        return Response(device_payload(device), status=201)


class DevicesApi(DeviceListApi, DeviceRegisterApi):
    """/api/certificates/devices: routes by method to the two operations above."""

    def get_throttles(self):
        return [t() for t in (DeviceRegisterApi if self.request.method == "POST" else DeviceListApi).throttle_classes]


class BundleListApi(ApiView):
    """GET /api/certificates/bundles: the caller's bundles (``?status=active`` for what it can still use)."""

    permission_classes = [IsUserCredential]

    @extend_schema(
        summary="Your certificate bundles",
        description=("With ?status=active: what you can still transfer or claim; active_wh is their total in Wh."),
        parameters=[OpenApiParameter("status", str, enum=list(CertificateBundle.Status.values), required=False)],
        responses={
            200: inline_serializer(
                "CertificateBundleList",
                {"bundles": BUNDLE.__class__(many=True), "active_wh": serializers.IntegerField()},
            ),
            **errors(400, 401, 403),
        },
    )
    def get(self, request):
        status = request.query_params.get("status")
        if status is not None and status not in CertificateBundle.Status.values:  # "?status=" is a bad status too
            raise ApplicationError("validation_error", "unknown status", field="status")
        bundles = selectors.bundle_list(holder=request.user, status=status)
        active = sum(b.quantity_wh for b in CertificateBundle.objects.filter(holder=request.user, status="active"))
        return Response({"bundles": [bundle_payload(b) for b in bundles], "active_wh": active})


class BundleTransferApi(WriteApiView):
    """POST /api/certificates/bundles/{bundle_id}/transfer: the whole bundle or its first quantity_wh Wh."""

    permission_classes = [IsUserCredential]

    @extend_schema_serializer(component_name="CertificateTransferInput")
    class InputSerializer(JsonInputSerializer):
        recipient = serializers.CharField(max_length=150, help_text="the recipient's username")
        quantity_wh = StrictIntegerField(min_value=1, max_value=MAX_WH, required=False)

    @extend_schema(
        summary="Transfer a bundle, or its first quantity_wh Wh, to another user",
        description=(
            "Answers the recipient's bundle and, in remaining, the part you keep (null when all of it moved). "
            "A transfer to yourself is refused: 400 transfer_to_self."
        ),
        parameters=[OpenApiParameter("bundle_id", ID_PARAMETER, OpenApiParameter.PATH)],
        request=InputSerializer,
        responses={200: MOVED, **errors(*BODY_ERRORS, 403, 404, 409, described={409: REFUSED})},
    )
    def post(self, request, bundle_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        recipient = User.objects.filter(username=data.validated_data["recipient"]).first()
        if recipient is None:
            raise ApplicationError("recipient_not_found", "no such user", field="recipient", status=404)
        outcome = bundle_transfer(
            bundle_id=bundle_id, holder=request.user, recipient=recipient,
            quantity_wh=data.validated_data.get("quantity_wh"),
        )  # fmt: skip
        return Response(outcome_payload(outcome))


class BundleClaimApi(WriteApiView):
    """POST /api/certificates/bundles/{bundle_id}/claim: cancel it (or its first quantity_wh Wh) for a
    beneficiary's consumption; final, the certificate tokens are burnt."""

    permission_classes = [IsUserCredential]

    @extend_schema_serializer(component_name="CertificateClaimInput")
    class InputSerializer(JsonInputSerializer):
        beneficiary = serializers.CharField(max_length=255)
        consumption_start = serializers.DateTimeField()
        consumption_end = serializers.DateTimeField()
        quantity_wh = StrictIntegerField(min_value=1, max_value=MAX_WH, required=False)

    @extend_schema(
        summary="Claim (cancel) a bundle, or its first quantity_wh Wh, for a beneficiary",
        description=(
            "Final: the certificates are burnt. Answers the claimed bundle and, in remaining, the part still "
            "active (null when all of it was claimed)."
        ),
        parameters=[OpenApiParameter("bundle_id", ID_PARAMETER, OpenApiParameter.PATH)],
        request=InputSerializer,
        responses={200: MOVED, **errors(*BODY_ERRORS, 403, 404, 409, described={409: REFUSED})},
    )
    def post(self, request, bundle_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(outcome_payload(bundle_claim(bundle_id=bundle_id, holder=request.user, **data.validated_data)))


class DeviceStatusApi(OperatorApi):
    """POST /api/admin/certificates/devices/{device_id}/status: approve or suspend a production device."""

    @extend_schema_serializer(component_name="ProductionDeviceStatusInput")
    class InputSerializer(JsonInputSerializer):
        status = serializers.ChoiceField(choices=["approved", "suspended"])

    @extend_schema(
        summary="Approve or suspend a production device",
        parameters=[OpenApiParameter("device_id", ID_PARAMETER, OpenApiParameter.PATH)],
        request=InputSerializer,
        responses={200: DEVICE, **errors(400, 401, 403, 404, 409, 413, 415,
                                         described={409: "capacity_required: set the meter's capacity_kw first."})},
    )  # fmt: skip
    def post(self, request, device_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        device = device_set_status(device_id=device_id, status=data.validated_data["status"], actor=self.actor())
        return Response(device_payload(ProductionDevice.objects.select_related("meter").get(id=device.id)))


class IssuanceHeldListApi(OperatorApi):
    """GET /api/admin/certificates/held: intervals the capacity check holds, oldest first."""

    @extend_schema(
        summary="Intervals held by the capacity check, oldest first",
        responses={200: inline_serializer("HeldIssuanceList", {"issuances": ISSUANCE.__class__(many=True)}),
                   **errors(401, 403)},
    )  # fmt: skip
    def get(self, request):
        return Response({"issuances": [issuance_payload(i) for i in selectors.issuance_held_list()]})


class IssuanceDecideApi(OperatorApi):
    """POST /api/admin/certificates/issuances/{issuance_id}/decide: issue a held interval, or reject it."""

    @extend_schema_serializer(component_name="HeldIssuanceDecision")
    class InputSerializer(JsonInputSerializer):
        approve = StrictBooleanField()

    @extend_schema(
        summary="Issue a held interval, or reject it",
        parameters=[OpenApiParameter("issuance_id", ID_PARAMETER, OpenApiParameter.PATH)],
        request=InputSerializer,
        responses={200: ISSUANCE, **errors(400, 401, 403, 404, 409, 413, 415,
                                           described={409: "not_held: it was decided already."})},
    )  # fmt: skip
    def post(self, request, issuance_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issuance = issuance_decide_held(issuance_id=issuance_id, approve=data.validated_data["approve"],
                                        actor=self.actor())  # fmt: skip
        return Response(issuance_payload(issuance))


class BundleWithdrawApi(OperatorApi):
    """POST /api/admin/certificates/bundles/{bundle_id}/withdraw: revoke an active bundle, with a reason."""

    @extend_schema_serializer(component_name="CertificateWithdrawInput")
    class InputSerializer(JsonInputSerializer):
        reason = serializers.CharField(max_length=2000)

    @extend_schema(
        summary="Withdraw an active bundle, with a reason",
        description="Final: the certificates are burnt.",
        parameters=[OpenApiParameter("bundle_id", ID_PARAMETER, OpenApiParameter.PATH)],
        request=InputSerializer,
        responses={200: BUNDLE, **errors(400, 401, 403, 404, 409, 413, 415, described={409: REFUSED})},
    )
    def post(self, request, bundle_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        bundle = bundle_withdraw(bundle_id=bundle_id, actor=self.actor(), reason=data.validated_data["reason"])
        return Response(bundle_payload(CertificateBundle.objects.select_related("issuance").get(id=bundle.id)))


VERIFICATION = inline_serializer(
    "CertificateVerification",
    {
        "kind": serializers.ChoiceField(choices=["bundle", "issuance"]),
        "issuance": ISSUANCE,
        "device": serializers.DictField(help_text="the device's attributes at issuance"),
        "bundles": BUNDLE.__class__(many=True, help_text="the issuance's live bundles: its range, once"),
        "transactions": inline_serializer(
            "CertificateTransaction",
            {
                "kind": serializers.CharField(help_text="issue | transfer | burn"),
                "status": serializers.CharField(),
                "amount_wh": serializers.IntegerField(),
                "signature": serializers.CharField(allow_null=True),
                "burn_from": serializers.CharField(allow_null=True),
                "mint_to": serializers.CharField(allow_null=True),
            },
            many=True,
        ),
        "bundle": BUNDLE.__class__(required=False),
        "lineage": serializers.ListField(child=serializers.UUIDField(), required=False),
        "match": serializers.DictField(
            required=False,
            allow_null=True,
            help_text="a bundle claimed by hourly matching: the consumer (beneficiary), the hour and grid zone, "
            "bilateral or pool, and the Wh; null for any other bundle",
        ),
    },
)


class CertificateVerifyApi(ApiView):
    """GET /api/certificates/verify/{lookup_id}: public; a bundle or issuance id -> what it certifies."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Verify a bundle or issuance (public)",
        description=(
            "What it certifies: the issuance, the device's attributes, its live bundles, every chain "
            "transaction and, for a bundle, its lineage."
        ),
        parameters=[OpenApiParameter("lookup_id", ID_PARAMETER, OpenApiParameter.PATH)],
        responses={200: VERIFICATION, **errors(404, described={404: "certificate_not_found"})},
        auth=[],
    )
    def get(self, request, lookup_id):
        body = selectors.certificate_verify(lookup_id=lookup_id)
        if body is None:
            raise ApplicationError("certificate_not_found", "no bundle or issuance with this id", status=404)
        return Response(body)


class CertificateExportApi(ApiView):
    """GET /api/certificates/export: public; live bundles in the FEA granular certificate registry's shape."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="CertificateExportQuery")
    class QuerySerializer(serializers.Serializer):
        device_id = serializers.UUIDField(required=False)
        status = serializers.ChoiceField(choices=list(selectors.LIVE), required=False)
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
        offset = serializers.IntegerField(min_value=0, max_value=10_000_000, default=0)

    @extend_schema(
        summary="Export live bundles in the FEA registry's field names (public)",
        parameters=[QuerySerializer],
        responses={
            200: inline_serializer("FeaExport", {"granular_certificate_bundles": serializers.ListField(
                child=serializers.DictField(), help_text="docs/CERTIFICATES.md lists every field")}),
            **errors(400),
        },
        auth=[],
    )  # fmt: skip
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        try:
            rows = selectors.fea_export(**query.validated_data)
        except DatabaseError as exc:  # pragma: no cover - a bound the serializer misses must not be a 500
            raise ApplicationError("validation_error", "invalid query") from exc
        return Response({"granular_certificate_bundles": rows})
