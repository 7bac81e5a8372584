from django.urls import path

from minting import apis

urlpatterns = [
    path(
        "api/admin/meters/mint-from-reading", apis.ReadingMintFromReadingApi.as_view(), name="admin-mint-from-reading"
    ),
    path("api/admin/meters/mint-batch", apis.ReadingMintBatchApi.as_view(), name="admin-mint-batch"),
    path("api/admin/meters/unminted", apis.ReadingUnmintedListApi.as_view(), name="admin-unminted"),
    path("api/admin/meters/retry-failed", apis.ReadingRetryFailedApi.as_view(), name="admin-retry-failed"),
    path("api/admin/tokenization/status", apis.TokenizationStatusApi.as_view(), name="admin-tokenization-status"),
    path("api/admin/tokenization/toggle-auto-mint", apis.AutoMintToggleApi.as_view(), name="admin-toggle-auto-mint"),
    path("api/admin/tokenization/trigger-batch", apis.BatchTriggerApi.as_view(), name="admin-trigger-batch"),
    path("api/admin/tokenization/reconcile", apis.BatchReconcileApi.as_view(), name="admin-reconcile"),
]
