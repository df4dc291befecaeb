"""EMS platform: settings, URLs, ASGI/WSGI, the Celery app and the mechanisms every app uses."""

from .celery import app as celery_app

__all__ = ["celery_app"]
