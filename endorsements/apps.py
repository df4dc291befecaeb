from django.apps import AppConfig


class EndorsementsConfig(AppConfig):
    name = "endorsements"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The pipeline's stages hook into the state machine, the ledger and the gateway here.
        from endorsements.pipeline import wiring

        wiring.connect()
