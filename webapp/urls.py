from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def healthz(request: HttpRequest) -> JsonResponse:
    """``GET /healthz``: the web process is up."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api.urls")),
    path("healthz", healthz),
    path("demo/", include("webapp.demo.urls")),
]
