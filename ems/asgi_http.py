"""Django's ASGI handler with the middleware chain run synchronously, in one thread hop.

Django's own ASGI handler runs every middleware that can be async on the event loop.
That is slower, not faster, for a sync project: `MiddlewareMixin` middleware (most of
Django's, django-prometheus', corsheaders') then run each `process_request` and
`process_response` hook through `sync_to_async`, and sync-only middleware (WhiteNoise,
ours) switch back with `async_to_sync`: some twenty thread hand-overs per request,
about 3 ms of CPU on the deployed 2-core machine, before the view itself runs in a
thread anyway. Here the whole chain (middleware and the sync views) runs in the
request's thread as under WSGI, entered once. Every view in EMS is sync; an async view
would still work (Django adapts it with `async_to_sync`), only without the gain.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        # The request's ThreadSensitiveContext gives it its own thread, so its database
        # connection (checked out of the pool) stays with it until the response is closed.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
