"""Every API error in one envelope, whoever raised it.

- `exception_handler` renders DRF exceptions and `EmsError`s.
- `ApiNotFoundMiddleware` turns Django's own 404/405/500 and oversized bodies under
  `/api/` into the envelope too, so an API client never sees an HTML page.
"""

import structlog
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from ems.errors import EmsError, ErrorDetail
from ems.request_id import current_request_id

log = structlog.get_logger(__name__)

_DRF_CODES = {
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.Throttled: "throttled",
    drf_exceptions.ValidationError: "validation_failed",
}


def envelope(code: str, message: str, details: list[dict] | None = None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or [],
            "request_id": current_request_id(),
        }
    }


def _flatten(data, prefix: str = "") -> list[dict]:
    """DRF validation errors (nested dicts/lists of ErrorDetail) as field details."""
    details: list[dict] = []
    if isinstance(data, dict):
        for key, value in data.items():
            field = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                field = prefix
            details.extend(_flatten(value, field))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if isinstance(value, dict | list):
                details.extend(_flatten(value, f"{prefix}[{index}]"))
            else:
                details.extend(_flatten(value, prefix))
    else:
        details.append(
            {
                "field": prefix,
                "code": getattr(data, "code", "invalid"),
                "message": str(data),
            }
        )
    return details


def exception_handler(exc, context):
    headers = {}
    if isinstance(exc, EmsError):
        body = envelope(exc.code, exc.message, [d.as_dict() for d in exc.details])
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(envelope("payload_too_large", "The request body is too large."), status=413)
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a real bug: the middleware turns it into a 500 envelope
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), exc.default_code)
    if isinstance(exc, drf_exceptions.ValidationError):
        body = envelope(code, "The request is invalid.", _flatten(exc.detail))
        status = 422
    else:
        body = envelope(code, str(exc.detail))
        status = exc.status_code
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response(body, status=status, headers=headers)


def error_response(
    code: str, message: str, status: int, details: list[ErrorDetail] | None = None
) -> JsonResponse:
    return JsonResponse(envelope(code, message, [d.as_dict() for d in details or []]), status=status)


class ApiNotFoundMiddleware:
    """JSON for Django-level errors under /api/, and a body-size guard (413)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        limit = _body_limit(request.path)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response("malformed_request", "Invalid Content-Length header.", 400)
        if length > limit:
            return error_response(
                "payload_too_large",
                f"The request body is larger than the limit of {limit} bytes.",
                413,
            )
        response = self.get_response(request)
        if response.status_code in (404, 405) and not _is_json(response):
            if response.status_code == 404:
                return error_response("not_found", f"No API route matches {request.path}.", 404)
            refusal = error_response("method_not_allowed", f'Method "{request.method}" not allowed.', 405)
            if response.has_header("Allow"):
                refusal["Allow"] = response["Allow"]  # RFC 9110 §15.5.6
            return refusal
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, RequestDataTooBig):
            return error_response("payload_too_large", "The request body is too large.", 413)
        log.exception("api.unhandled_error", path=request.path)
        return error_response("internal_error", "An unexpected error occurred; it has been logged.", 500)


def _body_limit(path: str) -> int:
    if path.rstrip("/").endswith("/batch"):
        return settings.UPLOAD_MAX_BYTES
    if path.startswith("/api/v1/webhooks/"):
        return settings.WEBHOOK_MAX_BYTES  # the view also counts what it reads
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
