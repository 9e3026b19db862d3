"""The demo inbox page (``/demo/``): sign in as a demo user and watch notifications arrive live."""

from django.urls import path

from webapp.demo import views

app_name = "demo"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("sign-in/", views.sign_in, name="sign-in"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("events/<slug:kind>/", views.event_trigger, name="event"),
    path("critiques/", views.critique_post, name="critique"),
]
