"""Platform API views: the OAuth2 token endpoint.

RFC 6749 §2.3.1: a client with a password authenticates with HTTP Basic (the server MUST
support it) or with `client_id` and `client_secret` in the body (form or JSON). Basic's
user and password are each form-urlencoded before base64, so both are decoded. A request
that names two different clients (Basic and the body disagree) is refused: it is not
clear which one asks.
"""

import base64
import binascii
from urllib.parse import unquote_plus

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import authentication, exceptions, permissions, serializers
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.auth import token_issue
from ems.errors import ClientAuthenticationConflict, ErrorDetail
from ems.parsers import StrictJSONParser


class ClientBasicAuthentication(authentication.BaseAuthentication):
    """Reads `Authorization: Basic` into `request.auth = (client_id, client_secret)`.

    It only reads the credentials; `token_issue` checks them. Other schemes are ignored
    here (a token endpoint is not called with a bearer token)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed(
                "Invalid client credentials.", code="invalid_client"
            ) from None
        client_id, colon, client_secret = decoded.partition(":")
        if not colon or not client_id:
            raise exceptions.AuthenticationFailed("Invalid client credentials.", code="invalid_client")
        return (None, (unquote_plus(client_id), unquote_plus(client_secret)))

    def authenticate_header(self, request) -> str:
        # RFC 6749 §5.2: a failed client authentication is a 401 challenging for Basic.
        return 'Basic realm="api"'


class ClientBasicScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the token endpoint's HTTP Basic client authentication."""

    target_class = "ems.api.ClientBasicAuthentication"
    name = "clientBasic"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "client_id and client_secret (RFC 6749 §2.3.1); or send both in the body",
        }


class TokenRequestSerializer(serializers.Serializer):
    grant_type = serializers.ChoiceField(choices=["client_credentials"])
    client_id = serializers.CharField(
        max_length=64, required=False, help_text="Unless the client authenticates with HTTP Basic."
    )
    client_secret = serializers.CharField(
        max_length=256, required=False, help_text="Unless the client authenticates with HTTP Basic."
    )


def client_credentials(*, basic: tuple[str, str] | None, body: dict) -> tuple[str, str]:
    """The one (client_id, client_secret) a token request presents.

    None at all is RFC 6749's `invalid_client` (401); Basic and a body that disagree are
    its `invalid_request` (400)."""
    if basic is None:
        if not body.get("client_id") or not body.get("client_secret"):
            raise exceptions.AuthenticationFailed(
                "No client credentials: authenticate with HTTP Basic, or send client_id and client_secret.",
                code="invalid_client",
            )
        return body["client_id"], body["client_secret"]
    for field, value in zip(("client_id", "client_secret"), basic, strict=True):
        if field in body and body[field] != value:
            raise ClientAuthenticationConflict(
                details=[
                    ErrorDetail(field, "client_authentication_conflict", f"{field} differs from Basic's.")
                ]
            )
    return basic


class TokenView(APIView):
    authentication_classes = [ClientBasicAuthentication]
    permission_classes = [permissions.AllowAny]  # the schema then offers Basic or the body
    parser_classes = [StrictJSONParser, FormParser]

    @extend_schema(
        request=TokenRequestSerializer,
        responses=inline_serializer(
            "TokenResponse",
            {
                "access_token": serializers.CharField(),
                "token_type": serializers.CharField(),
                "expires_in": serializers.IntegerField(),
            },
        ),
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        client_id, client_secret = client_credentials(basic=request.auth, body=serializer.validated_data)
        return Response(token_issue(client_id=client_id, client_secret=client_secret))
