from django.urls import path
from rest_framework.authentication import BasicAuthentication, SessionAuthentication

from webapp.api import views

urlpatterns = [
    path("notifications/", views.NotificationListView.as_view(), name="notification-list"),
    path("notifications/unread-count/", views.UnreadCountView.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", views.MarkAllReadView.as_view(), name="notification-read-all"),
    path("notifications/<int:notification_id>/read/", views.MarkReadView.as_view(), name="notification-read"),
    path("ws-ticket/", views.TicketView.as_view(), name="ws-ticket"),
    path(
        "token/",
        views.TokenView.as_view(authentication_classes=[SessionAuthentication, BasicAuthentication]),
        name="token",
    ),
]
