from django.apps import AppConfig


class EmsConfig(AppConfig):
    name = "ems"
    verbose_name = "EMS platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from ems.roles import roles_sync_after_migrate

        # ops groups get their permissions once every app's permissions exist (ems/roles.py)
        post_migrate.connect(roles_sync_after_migrate, dispatch_uid="ems.roles_sync_after_migrate")

        from ems import metrics

        metrics.install()
