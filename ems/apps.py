from django.apps import AppConfig


class EmsConfig(AppConfig):
    name = "ems"
    verbose_name = "EMS platform"
    default_auto_field = "django.db.models.BigAutoField"
