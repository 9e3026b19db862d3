from django.urls import path

from webapp.realtime.consumers import HealthConsumer, NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    path("ws/health/", HealthConsumer.as_asgi()),
]
