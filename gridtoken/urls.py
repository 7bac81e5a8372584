from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("gridtoken.ops.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("meters.urls")),
    path("", include("minting.urls")),
    path("", include("realtime.urls")),
]

handler400 = "gridtoken.exceptions.handler400"
handler403 = "gridtoken.exceptions.handler403"
handler404 = "gridtoken.exceptions.handler404"
handler500 = "gridtoken.exceptions.handler500"
