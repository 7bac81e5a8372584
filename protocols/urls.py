"""GridTokenX's aggregator-bridge paths, exactly as its devices post them (no trailing slash)."""

from django.urls import path

from protocols.apis import BridgeIngestApi, BridgeIngestBatchApi

urlpatterns = [
    path("v1/private-network/ingest", BridgeIngestApi.as_view(), name="bridge-ingest"),
    path("v1/private-network/ingest/batch", BridgeIngestBatchApi.as_view(), name="bridge-ingest-batch"),
]
