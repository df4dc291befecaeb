"""ASGI entry point: HTTP through Django's own handler (chunked bodies given a length first,
ems.chunked_bodies), websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ems.settings.base")
django_asgi_app = get_asgi_application()  # sets Django up before the Channels imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from ems.chunked_bodies import chunked_bodies_asgi  # noqa: E402
from ems.garbage_collection import start_up_objects_freeze  # noqa: E402
from ems.websocket_routes import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": chunked_bodies_asgi(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Objects made at start-up (settings, URL resolvers, models) live for the process: out
# of the collector's generations (ems.garbage_collection). The URL resolver is filled
# first (it imports every view module, some 10,000 objects that the first requests would
# otherwise add to each later full collection).
get_resolver().reverse_dict  # noqa: B018
start_up_objects_freeze()
