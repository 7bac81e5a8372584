from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.static import serve

from meters.ratelimit import session_login_limited
from realtime import views

app_name = "realtime"

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard", views.dashboard),
    path("dashboard/readings.json", views.readings_json, name="readings"),
    path("dashboard/balance.json", views.balance_json, name="balance"),
    path("dashboard/stats.json", views.stats_json, name="stats"),
    path("dashboard/energy.json", views.energy_json, name="energy"),
    path("dashboard/fleet.json", views.fleet_json, name="fleet"),
    # The page's JS and CSS, served straight from the app so uvicorn needs no collectstatic step.
    path("dashboard/assets/<path:path>", serve, {"document_root": views.ASSETS_DIR}, name="asset"),
    path(
        "login",
        session_login_limited(
            auth_views.LoginView.as_view(
                template_name="realtime/login.html",
                authentication_form=views.DashboardLoginForm,
                next_page="/dashboard/",
                redirect_authenticated_user=True,
            )
        ),
        name="login",
    ),
    path("logout", auth_views.LogoutView.as_view(next_page=views.LOGIN_URL), name="logout"),
]
