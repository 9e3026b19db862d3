"""The ASGI application: Django for HTTP, the Channels relay for WebSocket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.prod")  # fail closed: dev settings by choice

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from webapp.realtime.auth import websocket_stack  # noqa: E402
from webapp.realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)
