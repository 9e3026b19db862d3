from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "webapp.demo"
    label = "demo"
    verbose_name = "demo inbox page"
    default_auto_field = "django.db.models.BigAutoField"
