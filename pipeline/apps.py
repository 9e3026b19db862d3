from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "notiflow pipeline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Validate the settings, the delivery methods and the event catalogue at start-up."""
        from delivery.registry import methods
        from pipeline import publishing
        from pipeline.catalogue import catalogue
        from pipeline.conf import notiflow_settings
        from pipeline.deadletters import dead_letter_recorded

        dead_letter_recorded.connect(publishing.dead_letter_announce, dispatch_uid="notiflow.dead_letter_announce")

        notiflow_settings.user_settings  # noqa: B018 - raises on unknown keys
        methods.validate()
        catalogue.validate()
