"""`Idempotency-Key` for POST endpoints, per caller and endpoint.

The first request with a key claims it (a row committed at once, IN_FLIGHT). The view
then runs inside one transaction together with storing its response, so either both
the effect and the stored response commit, or neither does. A repeat with the same body
replays the stored response (header `Idempotent-Replayed: true`); with a different body
it is refused (422); while the first is still running it is refused (409). A claim left
IN_FLIGHT by a crashed process (its transaction rolled back) is taken over after
IDEMPOTENCY_STALE_SECONDS, which is safe because nothing of it committed.

The fingerprint is taken before the view runs, so it must leave the body readable: a
multipart upload is hashed from its parsed parts (rewound after); a small raw body of known
size from `request.body`; a larger one is read in pieces into a spooled copy (memory, then
disk) that then stands in for the request's stream — a raw batch upload of
UPLOAD_MAX_BYTES is never held in memory whole.
"""

import functools
import hashlib
import tempfile
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.response import Response

from ems.errors import IdempotencyInFlight, IdempotencyKeyReused, ValidationFailed
from ems.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_PIECE = 64 * 1024


def request_fingerprint(request) -> str:
    """SHA-256 of what the caller sent: path and query, then the raw body or the parts of
    a multipart upload (each file's field, name and bytes)."""
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.get_full_path().encode())
    content_type = request.content_type or ""
    if content_type.startswith("multipart/"):
        for name in sorted(request.data.keys()):
            if name in request.FILES:
                for upload in request.FILES.getlist(name):
                    digest.update(f"{name}={upload.name}\n".encode())
                    for chunk in upload.chunks():
                        digest.update(chunk)
                    upload.seek(0)
            else:
                digest.update(f"{name}={request.data.getlist(name)}".encode())
    else:
        _raw_body_hash(request, digest)
    return digest.hexdigest()


def _raw_body_hash(request, digest) -> None:
    """Feed the raw body to `digest`. A large one (or one of unknown size) is read piece by
    piece while copied to a spooled file, which then takes the place of the body's stream,
    unread, for the view's parser.

    (`request.body` would hold the whole body in memory, and refuses one above
    DATA_UPLOAD_MAX_MEMORY_SIZE, which a raw batch upload may well be.)"""
    http_request = request._request
    try:
        length = int(http_request.META.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if 0 <= length <= (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0):
        # A small body of known size (every single-endorsement POST): Django reads it once
        # and serves the parser from that copy.
        digest.update(http_request.body)
        return
    # Not closed here: it outlives this call as the request's stream, freed with the request.
    copy = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, dir=settings.FILE_UPLOAD_TEMP_DIR
    )
    for piece in iter(functools.partial(http_request.read, _PIECE), b""):
        digest.update(piece)
        copy.write(piece)
    copy.seek(0)
    http_request._stream = copy
    http_request._read_started = False


@functools.cache
def _claim_sql() -> str:
    quote = connection.ops.quote_name
    table = quote(IdempotencyRecord._meta.db_table)
    columns = ", ".join(quote(c) for c in ("caller", "scope", "key", "request_hash", "state", "created_at"))
    conflict = ", ".join(quote(c) for c in ("caller", "scope", "key"))
    return (
        f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {quote('id')}"
    )


def _claim(caller: str, scope: str, key: str, fingerprint: str) -> int | Response:
    """The id of the new IN_FLIGHT record (or of a stale one taken over), else the answer.

    The claim is one statement (`ON CONFLICT DO NOTHING`), committed at once in
    autocommit: a transaction around it would cost two more round trips per request."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.IDEMPOTENCY_STALE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(), [caller, scope, key, fingerprint, IdempotencyRecord.State.IN_FLIGHT, now]
        )
        claimed = cursor.fetchone()
    if claimed is not None:
        return claimed[0]
    record = IdempotencyRecord.objects.get(caller=caller, scope=scope, key=key)
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    if record.state == IdempotencyRecord.State.DONE:
        headers = {"Idempotent-Replayed": "true"}
        if record.response_location:
            headers["Location"] = record.response_location
        return Response(record.response_body, status=record.response_status, headers=headers)
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk,
        state=IdempotencyRecord.State.IN_FLIGHT,
        created_at__lt=stale_before,
    ).update(created_at=timezone.now())
    if not taken:
        raise IdempotencyInFlight()
    return record.pk


@functools.cache
def _store_sql() -> str:
    quote = connection.ops.quote_name
    return (
        f"UPDATE {quote(IdempotencyRecord._meta.db_table)} SET {quote('state')} = %s, "
        f"{quote('response_status')} = %s, {quote('response_body')} = %s, {quote('response_location')} = %s"
        f" WHERE {quote('id')} = %s"
    )


def _store(record_id: int, response: Response) -> None:
    """Mark the claim DONE with the response to replay: one UPDATE by primary key, as SQL
    (on the API's hot path the ORM's query building cost more than the statement)."""
    body = IdempotencyRecord._meta.get_field("response_body").get_db_prep_save(response.data, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            _store_sql(),
            [
                IdempotencyRecord.State.DONE,
                response.status_code,
                body,
                response.get("Location", "")[:500],
                record_id,
            ],
        )


def idempotent(scope: str, *, stage=None):
    """Decorate an APIView method. Requests without the header run as usual.

    With `stage(view, request)`, its result is passed to the method as `staged=`: the stage
    runs after the key is claimed and outside the transaction that holds the method and the
    stored response, for slow work with no database writes (a batch upload's file is copied
    and checked there). A stage that fails frees the key, as the method failing does."""

    def staged(self, request, kwargs: dict) -> dict:
        return kwargs if stage is None else {**kwargs, "staged": stage(self, request)}

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                return method(self, request, *args, **staged(self, request, kwargs))
            if not key.strip(" \t") or len(key) > MAX_KEY_LENGTH:
                raise ValidationFailed(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.")
            fingerprint = request_fingerprint(request)
            claimed = _claim(request.caller.principal, scope, key, fingerprint)
            if isinstance(claimed, Response):
                return claimed
            request.idempotency_key = key
            try:
                kwargs = staged(self, request, kwargs)
                with transaction.atomic():
                    response = method(self, request, *args, **kwargs)
                    if response.status_code >= 500:
                        raise _DoNotStore(response)
                    _store(claimed, response)
                return response
            except _DoNotStore as failed:
                IdempotencyRecord.objects.filter(pk=claimed).delete()
                return failed.response
            except BaseException:
                # The effect rolled back: free the key so the caller can retry.
                IdempotencyRecord.objects.filter(pk=claimed).delete()
                raise

        return wrapper

    return decorate


class _DoNotStore(Exception):
    def __init__(self, response) -> None:
        self.response = response


def idempotency_key_parameter():
    """The `Idempotency-Key` header as the schema states it: what `idempotent` accepts."""
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(
        HEADER,
        {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": r"[^ \t]"},
        OpenApiParameter.HEADER,
        description="repeats with the same body replay the first response; a different body is 422",
    )
