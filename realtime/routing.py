from django.urls import re_path

from realtime.consumers import EventsConsumer

# /ws and /ws/events/ are the documented paths; the forms with and without a trailing slash both work.
websocket_urlpatterns = [
    re_path(r"^ws/?$", EventsConsumer.as_asgi()),
    re_path(r"^ws/events/?$", EventsConsumer.as_asgi()),
]
