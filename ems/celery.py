"""The Celery application. Tasks live in each app's `tasks.py` and take ids only."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")

app = Celery("ems")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _reset_clients_after_fork(**_kwargs) -> None:
    # Kafka producers and Mongo clients hold sockets and threads: never share them
    # across a fork. Each worker process builds its own on first use. (Imported here:
    # `import ems` loads this module in every process, before Django is set up.)
    from ems import clients

    clients.reset()


@worker_process_init.connect
def _freeze_start_up_objects(**_kwargs) -> None:
    # Imported here, like ems.clients above.
    from ems.garbage_collection import start_up_objects_freeze

    start_up_objects_freeze()
