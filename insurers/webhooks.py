"""Webhook signatures: `X-EMS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.

The insurer signs the exact bytes it sends; we recompute the HMAC over the same bytes with
each of the insurer's active secrets (primary, and secondary during a rotation) and compare
against every `v1=` in the header in constant time (`hmac.compare_digest`). Several `v1=`
may be sent, so an insurer rotating its secret can sign with both for a while. A timestamp
more than `WEBHOOK_TOLERANCE_SECONDS` (300) from now, either way, is refused: a captured
request cannot be replayed later, and a clock far ahead is as suspect as one far behind.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

from ems.errors import EmsError

SIGNATURE_HEADER = "X-EMS-Signature"
TOLERANCE_SECONDS = 300
_MAX_SIGNATURES = 8  # more `v1=` than any rotation needs is a malformed header


class SignatureError(EmsError):
    status = 401
    code = "signature_invalid"
    message = "The webhook signature does not verify."


class SignatureMissing(SignatureError):
    code = "signature_missing"
    message = f"The {SIGNATURE_HEADER} header is required."


class SignatureMalformed(SignatureError):
    code = "signature_malformed"
    message = f'The {SIGNATURE_HEADER} header must read "t=<unix seconds>,v1=<hex>".'


class SignatureExpired(SignatureError):
    code = "signature_expired"
    message = f"The signature timestamp is more than {TOLERANCE_SECONDS} seconds from now."


def signature_compute(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value an insurer sends: one `v1=` per secret (the sandbox and the tests use it)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={timestamp}", *(f"v1={signature_compute(s, timestamp, body)}" for s in secrets)])


def signature_parse(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise SignatureMissing()
    timestamp, signatures = None, []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureMalformed()
        if name == "t":
            if timestamp is not None or not value.isdigit():
                raise SignatureMalformed()
            timestamp = int(value)
        elif name == "v1":
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
                raise SignatureMalformed()
            signatures.append(value.lower())
        # other schemes (v0, a future v2) are ignored, as the scheme allows
    if timestamp is None or not signatures or len(signatures) > _MAX_SIGNATURES:
        raise SignatureMalformed()
    return timestamp, signatures


def signature_verify(
    *, header: str | None, body: bytes, secrets: Iterable[str], now: float | None = None
) -> int:
    """Return the signed timestamp, or raise a `SignatureError` (401).

    Every candidate is compared (no early exit on the first match), so the time taken does
    not tell which secret or which `v1=` matched."""
    timestamp, signatures = signature_parse(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureExpired()
    matched = False
    for secret in [s for s in secrets if s]:
        expected = signature_compute(secret, timestamp, body)
        for candidate in signatures:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError()
    return timestamp
