"""Request bodies sent with `Transfer-Encoding: chunked` and no `Content-Length`, under WSGI.

Django's WSGI request reads `CONTENT_LENGTH` bytes of `wsgi.input` and treats a missing
length as an empty body, so a chunked request would reach a view as empty (a valid
webhook answered 401, a CSV `file_empty`). The server (granian) hands the application the
de-chunked stream; this wrapper reads it — at most one byte more than the largest body any
door accepts, spooled to disk past 1 MiB — and gives Django a stream of known length.
A body cut at that bound still has a length over every limit, so the view refuses it
with its own 413. ASGI needs none of this: Django's ASGI handler reads the whole body.
"""

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
