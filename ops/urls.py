from django.urls import path

from ops import views

urlpatterns = [
    path("", views.home_view, name="home"),
    path("favicon.ico", views.favicon_view, name="favicon"),
    path("health", views.health_view, name="health"),
    path("ready", views.ready_view, name="ready"),
    path("metrics", views.metrics_view, name="metrics"),
]
