"""Django's ASGI handler with the middleware chain run synchronously, on reused threads.

Two costs of Django's own ASGI handler are avoided, both for a sync project:

- It runs every middleware that can be async on the event loop. `MiddlewareMixin`
  middleware (most of Django's, django-prometheus', corsheaders') then run each
  `process_request` and `process_response` hook through `sync_to_async`, and sync-only
  middleware (WhiteNoise, ours) switch back with `async_to_sync`: some twenty thread
  hand-overs per request, about 3 ms of CPU on the deployed 2-core machine, before the
  view itself runs in a thread anyway. Here the whole chain (middleware and the sync
  views) runs in the request's thread as under WSGI, entered once. Every view in EMS is
  sync; an async view would still work (Django adapts it with `async_to_sync`), only
  without the gain.
- Each request's `ThreadSensitiveContext` made a new thread for the request (and
  another to join it afterwards), so every request paid for starting and stopping two
  threads while holding up the event loop. Here a request borrows one of ASGI_THREADS
  single-thread executors for its whole life and gives it back: all its sync work
  (signals, middleware, view, streaming, `close()`) still runs on one thread, as
  thread-sensitive code and the per-thread database connection need, and a request that
  finds every thread busy waits for one, as it would for a database connection.
- Django hands each request to that thread three times: for the `request_started`
  signal, for the view, and to close the response (`request_finished`, which gives the
  database connection back). Here a response that is not streamed is produced and closed
  in one visit — signal, view, close — and then sent: one hand-over instead of three
  (each is a wake-up of the thread, a context copy and a wait on the event loop; about a
  tenth of a web process's CPU together). A streamed response (the error-report CSV) is
  sent first and closed afterwards, as Django does. A client that disconnects does not
  cancel the view: a sync view runs to the end in its thread anyway.
- Each visit goes straight to the request's executor with a copy of the task's context
  (`run_in_executor`), not through `sync_to_async` and a `ThreadSensitiveContext`: their
  bookkeeping per call (context hand-back, executor look-up, thread-locals) was about
  7% of the web process's instructions per API request (callgrind, docs/decisions.md).
  Nothing in EMS calls `sync_to_async` from inside a request; `async_to_sync` there (a
  websocket push after commit) runs its coroutine on a loop of its own, as it does in a
  Celery worker.
"""

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._thread_count = settings.ASGI_THREADS
        self._free_threads: tuple[asyncio.AbstractEventLoop, asyncio.Queue[ThreadPoolExecutor]] | None = None

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    def _threads(self) -> asyncio.Queue[ThreadPoolExecutor]:
        # Made inside the event loop that uses them: one per server process (tests that
        # run each request in a new loop get new threads for it).
        loop = asyncio.get_running_loop()
        if self._free_threads is None or self._free_threads[0] is not loop:
            free: asyncio.Queue[ThreadPoolExecutor] = asyncio.Queue()
            for number in range(self._thread_count):
                free.put_nowait(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ems-http-{number}"))
            self._free_threads = (loop, free)
        return self._free_threads[1]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        free = self._threads()
        executor = await free.get()
        try:
            await self.handle(scope, receive, send, executor=executor)
        finally:
            free.put_nowait(executor)

    async def handle(self, scope, receive, send, *, executor: ThreadPoolExecutor):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()

        def in_request_thread(function, *args):
            # The request's own thread, with a copy of this task's context (as
            # sync_to_async does, without its per-call bookkeeping). It keeps the
            # thread's database connection until the response is closed.
            return loop.run_in_executor(executor, contextvars.copy_context().run, function, *args)

        try:
            set_script_prefix(get_script_prefix(scope))
            response = await in_request_thread(self._respond, scope, body_file)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while we sent
            finally:
                if response.streaming:
                    await in_request_thread(response.close)
        finally:
            body_file.close()

    def _respond(self, scope, body_file):
        """In the request's thread: started signal, the response, and (unless streamed) its close."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # request_finished: the database connection goes back now
        return response

    async def get_response_async(self, request):
        # Kept for callers of Django's API; `handle` above no longer goes through it.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
