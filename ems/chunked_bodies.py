"""Request bodies sent with `Transfer-Encoding: chunked` and no `Content-Length`.

Django's WSGI request reads `CONTENT_LENGTH` bytes of `wsgi.input` and treats a missing
length as an empty body, and DRF takes a request without `CONTENT_LENGTH` for one with no
body under either interface, so a chunked request reached a view as empty (a valid
endorsement answered 422 "action required", a CSV `file_empty`, a 300 MB body 422 instead
of 413). Both wrappers read the de-chunked body — at most one byte more than the largest
body any door accepts, spooled to disk past 1 MiB — and give Django a body of known
length. A body cut at that bound still has a length over every limit, so the view refuses
it with its own 413.

- `chunked_bodies` wraps the WSGI application (granian's WSGI server, `ems.wsgi`);
- `chunked_bodies_asgi` wraps the ASGI application's HTTP side (`ems.asgi`): it replays
  the spooled body to Django's handler and adds the `content-length` header to the scope.
"""

import asyncio
import tempfile

from django.conf import settings

SPOOL_IN_MEMORY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


def largest_body_bytes() -> int:
    return max(settings.UPLOAD_MAX_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.WEBHOOK_MAX_BYTES)


def chunked_bodies(application):
    """A WSGI application that gives chunked bodies a length before `application` sees them."""

    def with_lengths(environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            body, length = _spool(environ["wsgi.input"], largest_body_bytes() + 1)
            environ["wsgi.input"] = body
            environ["CONTENT_LENGTH"] = str(length)
        return application(environ, start_response)

    return with_lengths


def _spool(stream, limit: int):
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - handed to Django
    length = 0
    while length < limit:
        chunk = stream.read(min(_CHUNK, limit - length))
        if not chunk:
            break
        body.write(chunk)
        length += len(chunk)
    body.seek(0)
    return body, length


def chunked_bodies_asgi(application):
    """An ASGI application that gives chunked HTTP bodies a length before `application` sees them."""

    async def with_lengths(scope, receive, send):
        if scope["type"] != "http" or not _chunked_without_length(scope["headers"]):
            return await application(scope, receive, send)
        body, length, whole = await _spool_messages(receive, largest_body_bytes() + 1)
        if body is None:  # the client went away mid-body
            return await application(scope, _disconnected, send)
        headers = [*scope["headers"], (b"content-length", str(length).encode())]
        return await application({**scope, "headers": headers}, _replay(body, length, receive, whole), send)

    return with_lengths


def _chunked_without_length(headers) -> bool:
    names = {name.lower(): value for name, value in headers}
    return b"content-length" not in names and b"chunked" in names.get(b"transfer-encoding", b"").lower()


async def _spool_messages(receive, limit: int):
    """(body file, its length, whether it is the whole body) of `http.request` messages, up to
    `limit` bytes; (None, 0, False) if the client disconnected."""
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - replayed, then closed
    length = 0
    while length < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.close()
            return None, 0, False
        chunk = message.get("body", b"")[: limit - length]
        body.write(chunk)
        length += len(chunk)
        if not message.get("more_body", False):
            body.seek(0)
            return body, length, True
    body.seek(0)
    return body, length, False


async def _disconnected() -> dict:
    return {"type": "http.disconnect"}


def _replay(body, length: int, receive, whole: bool):
    """A `receive` that gives the spooled body, then the client's disconnect. After a body
    cut at the bound it waits instead: the rest of the body is never read."""

    async def replayed() -> dict:
        if not body.closed:
            chunk = body.read(_CHUNK)
            more = body.tell() < length
            if not more:
                body.close()
            return {"type": "http.request", "body": chunk, "more_body": more}
        if whole:
            return await receive()
        await asyncio.Event().wait()  # cancelled when the response is done
        return {"type": "http.disconnect"}

    return replayed
