from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "webapp.gallery"
    label = "gallery"
    verbose_name = "demo gallery"
    default_auto_field = "django.db.models.BigAutoField"
