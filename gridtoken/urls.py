from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gridtoken.exceptions import handler404 as json_not_found
from meters.ratelimit import session_login_limited

admin.site.site_header = admin.site.site_title = "GridToken operations"
admin.site.index_title = "Readings, minting, certificates and accounts"
# The record lists are wide (amounts, times, statuses, flags): at 1,400 px they need the nav sidebar's width.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    # Before the admin's own URLs: the same login view, answering 429 once the username's budget is spent.
    path("admin/login/", session_login_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("meters.urls")),
    path("", include("minting.urls")),
    path("", include("realtime.urls")),
    path("", include("protocols.urls")),
    path("", include("certificates.urls")),
    path("", include("matching.urls")),
    # Last: any other /api/ path is a JSON 404 even with DEBUG=true (Django's debug 404 page is HTML).
    re_path(r"^api/", csrf_exempt(json_not_found)),
]

handler400 = "gridtoken.exceptions.handler400"
handler403 = "gridtoken.exceptions.handler403"
handler404 = "gridtoken.exceptions.handler404"
handler500 = "gridtoken.exceptions.handler500"
