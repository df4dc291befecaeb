"""One error base for EMS: a stable code, an HTTP status and optional per-field details.

Services raise `EmsError` subclasses; the API renders them with `ems.api_errors` into
`{"error": {"code", "message", "details": [{"field", "code", "message"}], "request_id"}}`.
"""

from dataclasses import dataclass

import psycopg
from django.db import InterfaceError, OperationalError


@dataclass(frozen=True)
class ErrorDetail:
    field: str
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"field": self.field, "code": self.code, "message": self.message}


class EmsError(Exception):
    code = "error"
    status = 400
    message = "The request could not be processed."

    def __init__(self, message: str | None = None, *, details: list[ErrorDetail] | None = None) -> None:
        self.message = message or self.message
        self.details = details or []
        super().__init__(self.message)


class ValidationFailed(EmsError):
    code = "validation_failed"
    status = 422
    message = "The request is invalid."


class NotFound(EmsError):
    code = "not_found"
    status = 404
    message = "Not found."


class PermissionDenied(EmsError):
    code = "permission_denied"
    status = 403
    message = "You do not have permission to do this."


class Conflict(EmsError):
    code = "conflict"
    status = 409
    message = "The request conflicts with the current state."


class IdempotencyKeyReused(EmsError):
    code = "idempotency_key_reused"
    status = 422
    message = "This Idempotency-Key was already used with a different request body."


class IdempotencyInFlight(EmsError):
    code = "idempotency_in_flight"
    status = 409
    message = "A request with this Idempotency-Key is still being processed."


class PayloadTooLarge(EmsError):
    code = "payload_too_large"
    status = 413
    message = "The request body is too large."


# What a dropped or refused database connection raises, through Django's wrappers or from
# psycopg itself (COPY runs on psycopg's cursor): the work can succeed when run again from
# its last commit. Data errors are not in it.
DATABASE_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
