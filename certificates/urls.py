from django.urls import path

from certificates.apis import views

urlpatterns = [
    path("api/certificates/devices", views.DevicesApi.as_view(), name="certificate-devices"),
    path("api/certificates/bundles", views.BundleListApi.as_view(), name="certificate-bundles"),
    path("api/certificates/bundles/<uuid:bundle_id>/transfer", views.BundleTransferApi.as_view(),
         name="certificate-transfer"),
    path("api/certificates/bundles/<uuid:bundle_id>/claim", views.BundleClaimApi.as_view(), name="certificate-claim"),
    path("api/certificates/verify/<uuid:lookup_id>", views.CertificateVerifyApi.as_view(), name="certificate-verify"),
    path("api/certificates/export", views.CertificateExportApi.as_view(), name="certificate-export"),
    path("api/admin/certificates/devices/<uuid:device_id>/status", views.DeviceStatusApi.as_view(),
         name="admin-certificate-device-status"),
    path("api/admin/certificates/held", views.IssuanceHeldListApi.as_view(), name="admin-certificate-held"),
    path("api/admin/certificates/issuances/<uuid:issuance_id>/decide", views.IssuanceDecideApi.as_view(),
         name="admin-certificate-decide"),
    path("api/admin/certificates/bundles/<uuid:bundle_id>/withdraw", views.BundleWithdrawApi.as_view(),
         name="admin-certificate-withdraw"),
]  # fmt: skip
