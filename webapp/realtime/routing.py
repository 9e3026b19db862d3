from django.urls import path, re_path

from webapp.realtime.consumers import HealthConsumer, NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    # The seeds' per-user path: accepted only when it names the authenticated user (else 4403).
    re_path(r"^ws/notifications/(?P<user_id>[^/]{1,64})/$", NotificationConsumer.as_asgi()),
    path("ws/health/", HealthConsumer.as_asgi()),
]
