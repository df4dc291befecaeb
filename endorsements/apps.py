from django.apps import AppConfig


class EndorsementsConfig(AppConfig):
    name = "endorsements"
    default_auto_field = "django.db.models.BigAutoField"
