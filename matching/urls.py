from django.urls import path

from matching import apis, views

urlpatterns = [
    path("api/matching/consumers", apis.ConsumerListApi.as_view(), name="matching-consumers"),
    path("api/matching/consumers/<uuid:consumer_id>/report", apis.ConsumerReportApi.as_view(),
         name="matching-report"),
    path("api/matching/consumers/<uuid:consumer_id>/report.csv", apis.ConsumerReportCsvApi.as_view(),
         name="matching-report-csv"),
    path("matching/consumers/<uuid:consumer_id>/report", views.consumer_report_page, name="matching-report-page"),
]  # fmt: skip
