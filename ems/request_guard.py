"""Refuse, at the door, requests no view could answer: a NUL byte in the URL, a compressed body.

PostgreSQL cannot hold a NUL character in text, so a `%00` in a path or a query value
(an id, a filter, a search) would fail deep in a query with a 500. No identifier, filter
or search term of ours contains one: the request is refused before any view runs, for
every door (API, portal, admin). Bodies are read as sent: a `Content-Encoding` other than
`identity` is refused with a message naming it, rather than decoded as text and blamed
on its character set. Under `/api/` the refusal is the error envelope; elsewhere a short
plain-text page.
"""

from urllib.parse import unquote_to_bytes

from django.http import HttpResponse

from ems.api_errors import error_response


def _has_nul(request) -> bool:
    if "\x00" in request.path:
        return True
    query = request.META.get("QUERY_STRING", "")
    return "%00" in query or "\x00" in query or b"\x00" in unquote_to_bytes(query)


def _refuse(request, code: str, message: str, status: int) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(code, message, status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class RequestGuardMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if _has_nul(request):
            return _refuse(
                request,
                "malformed_request",
                "The URL contains a NUL byte (%00); no identifier, filter or search can hold one.",
                400,
            )
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding and encoding != "identity":
            return _refuse(
                request,
                "unsupported_media_type",
                f"Content-Encoding {encoding!r} is not supported: send the body uncompressed.",
                415,
            )
        return self.get_response(request)
