from django.apps import AppConfig


class InsurersConfig(AppConfig):
    name = "insurers"
    default_auto_field = "django.db.models.BigAutoField"
