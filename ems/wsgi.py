"""WSGI entry point: HTTP only (websockets need `ems.asgi:application`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
application = get_wsgi_application()

from ems.chunked_bodies import chunked_bodies  # noqa: E402 - needs the settings configured above

application = chunked_bodies(application)

from django.urls import get_resolver  # noqa: E402

from ems.garbage_collection import start_up_objects_freeze  # noqa: E402

# As in ems.asgi: what start-up made lives for the process, out of the collector's generations.
get_resolver().reverse_dict  # noqa: B018
start_up_objects_freeze()
