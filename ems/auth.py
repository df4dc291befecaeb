"""API identities: OAuth2 client credentials and short-lived bearer tokens.

- A client has a `client_id` and a random secret of 256 bits; only the SHA-256 of the
  secret is stored (a high-entropy secret needs no slow hash; see docs/decisions.md).
- `POST /api/v1/auth/token` exchanges them for a bearer token: a signed, timestamped
  value (Django's signing, salted) naming the client; it expires after API_TOKEN_TTL.
  The client authenticates in the body (form or JSON) or with HTTP Basic (RFC 6749
  §2.3.1, `ClientBasicAuthentication`), never both; failures are throttled
  (`ems.throttles`).
- Every request re-reads the client, so revoking it in the admin cuts its tokens off
  at once. That read is one indexed SELECT by the unique `client_id`, written as SQL:
  through the ORM (and the model's ordering, which joins the employer) it cost more CPU
  than any other step of an API write. The token acts for the client's employer only
  (`ems.tenancy`).
"""

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from django.conf import settings
from django.core import signing
from django.db import connection
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from ems.models import ApiClient
from ems.tenancy import Caller, caller_for_client, caller_for_user

TOKEN_SALT = "ems.api.token"


def new_client_credentials() -> tuple[str, str, str]:
    """(client_id, client_secret, secret_hash) for a new client."""
    client_id = f"cli_{secrets.token_hex(12)}"
    client_secret = secrets.token_urlsafe(32)
    return client_id, client_secret, hash_secret(client_secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_issue(*, client_id: str, client_secret: str) -> dict:
    """Client-credentials grant. Raises AuthenticationFailed with one vague message."""
    client = ApiClient.objects.filter(client_id=client_id, is_active=True).first()
    presented = hash_secret(client_secret or "")
    if client is None or not hmac.compare_digest(presented, client.secret_hash):
        raise exceptions.AuthenticationFailed("Invalid client credentials.", code="invalid_client")
    client.last_token_at = timezone.now()
    client.save(update_fields=["last_token_at"])
    ttl = int(settings.API_TOKEN_TTL.total_seconds())
    token = signing.dumps({"cid": client.client_id}, salt=TOKEN_SALT, compress=False)
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}


def token_client(token: str) -> ApiClient:
    """The active client a bearer token names, or AuthenticationFailed."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=settings.API_TOKEN_TTL)
    except signing.SignatureExpired:
        raise exceptions.AuthenticationFailed("The access token has expired.", code="token_expired") from None
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed("The access token is invalid.", code="token_invalid") from None
    client = active_client(str(payload.get("cid", "")))
    if client is None:
        raise exceptions.AuthenticationFailed("The API client has been revoked.", code="client_revoked")
    return client


_ACTIVE_CLIENT_FIELDS = ("id", "employer_id", "client_id")


@functools.cache
def _active_client_sql() -> str:
    meta = ApiClient._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    return (
        f"SELECT {', '.join(column(name) for name in _ACTIVE_CLIENT_FIELDS)} FROM {quote(meta.db_table)} "
        f"WHERE {column('client_id')} = %s AND {column('is_active')} LIMIT 1"
    )


def active_client(client_id: str) -> ApiClient | None:
    """The active client with this id (only its id, employer and client id loaded), or None."""
    with connection.cursor() as cursor:
        cursor.execute(_active_client_sql(), [client_id])
        row = cursor.fetchone()
    if row is None:
        return None
    # The other fields stay deferred: loaded on first access, as `.only()` would.
    return ApiClient.from_db(connection.alias, list(_ACTIVE_CLIENT_FIELDS), row)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed(
                "Authorization must be 'Bearer <token>'.",
                code="authorization_malformed",
            )
        client = token_client(token.strip())
        request.caller = caller_for_client(client)
        return (None, client)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


@dataclass(frozen=True)
class ClientCredentials:
    """A client id and secret presented with HTTP Basic, not yet checked."""

    client_id: str
    client_secret: str


class ClientBasicAuthentication(authentication.BaseAuthentication):
    """HTTP Basic on the token endpoint: `request.auth` becomes the presented credentials.

    Nothing is verified here (`token_issue` does, after the throttles): a malformed header
    is refused, any other scheme is left alone.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed(
                "HTTP Basic credentials must be base64 of 'client_id:client_secret'.", code="invalid_client"
            ) from None
        client_id, colon, client_secret = decoded.partition(":")
        if not colon or not client_id:
            raise exceptions.AuthenticationFailed(
                "HTTP Basic credentials must be base64 of 'client_id:client_secret'.", code="invalid_client"
            )
        # RFC 6749 §2.3.1: each part is form-urlencoded before encoding
        return (None, ClientCredentials(unquote_plus(client_id), unquote_plus(client_secret)))

    def authenticate_header(self, request) -> str:
        return 'Basic realm="token"'


def presented_client_id(request) -> str:
    """The client id a token request names: from HTTP Basic, or from the form or JSON body."""
    if isinstance(request.auth, ClientCredentials):
        return request.auth.client_id
    data = request.data
    client_id = data.get("client_id") if isinstance(data, Mapping) else None
    return client_id[:64] if isinstance(client_id, str) else ""


class SessionCallerAuthentication(authentication.SessionAuthentication):
    """Session login (portal HR users, staff) for API views that also serve the portal."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            request.caller = caller_for_user(result[0])
        return result


class IsEmployerClient(permissions.BasePermission):
    """The caller is an API client or an HR user, i.e. has an employer scope."""

    def has_permission(self, request, view) -> bool:
        caller: Caller | None = getattr(request, "caller", None) or getattr(request._request, "caller", None)
        if caller is None:
            return False
        return caller.employer_id is not None


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the bearer token from POST /api/v1/auth/token."""

    target_class = "ems.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Token from POST /api/v1/auth/token"}


class ClientBasicScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the token endpoint's HTTP Basic client authentication."""

    target_class = "ems.auth.ClientBasicAuthentication"
    name = "clientBasic"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "client_id:client_secret (RFC 6749 §2.3.1), instead of the body's fields",
        }


class SessionCallerScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the portal's session cookie (HR users)."""

    target_class = "ems.auth.SessionCallerAuthentication"
    name = "sessionAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
