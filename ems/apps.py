from django.apps import AppConfig


class EmsConfig(AppConfig):
    name = "ems"
    verbose_name = "EMS platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: these modules load models, which need the app registry.
        from django.db.models.signals import post_migrate

        from ems import login_locks, metrics, tasks
        from ems.roles import roles_sync_after_migrate

        # ems.tasks registers the relay task in every process: `ems.outbox.relay_soon` sends
        # it by name, and a registered task runs as its options say (inline in the tests).
        del tasks
        # its receiver audits the start of every login lockout (axes' user_locked_out)
        del login_locks

        # ops groups get their permissions once every app's permissions exist (ems/roles.py)
        post_migrate.connect(roles_sync_after_migrate, dispatch_uid="ems.roles_sync_after_migrate")

        metrics.install()
