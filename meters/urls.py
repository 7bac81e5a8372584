"""Paths exactly as the gateway's clients use them: no trailing slash, and a POST is never redirected."""

from django.urls import path

from meters.apis.auth import TokenCreateApi
from meters.apis.dead_letters import DeadLetterDetailApi, DeadLetterDiscardApi, DeadLetterListApi, DeadLetterReplayApi
from meters.apis.keys import ApiKeyDeleteApi, ApiKeyRevokeApi, ApiKeysApi
from meters.apis.meters import MetersApi, SimulatorMeterRegisterApi
from meters.apis.readings import (
    MeterReadingCreateApi,
    ReadingBatchCreateApi,
    ReadingListApi,
    ReadingStatsApi,
    ReadingSubmitApi,
)

urlpatterns = [
    path("api/auth/token", TokenCreateApi.as_view(), name="auth-token"),
    path("api/meters", MetersApi.as_view(), name="meters"),  # GET: MeterListApi, POST: MeterCreateApi
    path("api/meters/submit-reading", ReadingSubmitApi.as_view(), name="reading-submit"),
    path("api/meters/my-readings", ReadingListApi.as_view(), name="reading-list"),
    path("api/meters/stats", ReadingStatsApi.as_view(), name="reading-stats"),
    path("api/v1/simulator/meters/register", SimulatorMeterRegisterApi.as_view(), name="simulator-meter-register"),
    # Before the {serial} route, which would otherwise take "batch" for a serial.
    path("api/v1/meters/batch/readings", ReadingBatchCreateApi.as_view(), name="reading-batch"),
    path("api/v1/public/meters/batch/readings", ReadingBatchCreateApi.as_view(), name="reading-batch-public"),
    path("api/v1/meters/<str:serial>/readings", MeterReadingCreateApi.as_view(), name="meter-reading-create"),
    path("api/admin/api-keys", ApiKeysApi.as_view(), name="admin-api-keys"),  # GET: list, POST: issue
    path("api/admin/api-keys/<str:key>", ApiKeyDeleteApi.as_view(), name="admin-api-key"),
    path("api/admin/api-keys/<str:key>/revoke", ApiKeyRevokeApi.as_view(), name="admin-api-key-revoke"),
    path("api/admin/dead-letters", DeadLetterListApi.as_view(), name="admin-dead-letters"),
    path("api/admin/dead-letters/<int:dead_letter_id>", DeadLetterDetailApi.as_view(), name="admin-dead-letter"),
    path(
        "api/admin/dead-letters/<int:dead_letter_id>/replay",
        DeadLetterReplayApi.as_view(),
        name="admin-dead-letter-replay",
    ),
    path(
        "api/admin/dead-letters/<int:dead_letter_id>/discard",
        DeadLetterDiscardApi.as_view(),
        name="admin-dead-letter-discard",
    ),
]
