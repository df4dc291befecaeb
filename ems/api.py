"""Platform API views: the OAuth2 token endpoint.

The client authenticates with its id and secret in the body (form or JSON) or with HTTP
Basic. Failed authentications are counted per client id and per address
(`ems.throttles`); at the limit, the endpoint answers 429 with Retry-After before looking
at the credentials, right or wrong, until the window ends.
"""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, permissions, serializers
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.auth import ClientBasicAuthentication, ClientCredentials, token_issue
from ems.parsers import StrictJSONParser
from ems.throttles import TokenAddressFailureThrottle, TokenClientFailureThrottle


class TokenRequestSerializer(serializers.Serializer):
    grant_type = serializers.ChoiceField(choices=["client_credentials"])
    client_id = serializers.CharField(max_length=64, required=False, help_text="unless sent with HTTP Basic")
    client_secret = serializers.CharField(
        max_length=256, required=False, help_text="unless sent with HTTP Basic"
    )


class TokenView(APIView):
    authentication_classes = [ClientBasicAuthentication]
    permission_classes = [permissions.AllowAny]  # also tells the schema Basic is optional
    throttle_classes = [TokenClientFailureThrottle, TokenAddressFailureThrottle]
    parser_classes = [StrictJSONParser, FormParser]

    def get_authenticate_header(self, request) -> str:
        # RFC 6749 §5.2: a failed client authentication is a 401 with a challenge.
        return 'Bearer realm="api"'

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
        data = serializer.validated_data
        client_id, client_secret = data.get("client_id", ""), data.get("client_secret", "")
        if isinstance(request.auth, ClientCredentials):
            if client_id or client_secret:
                # RFC 6749 §2.3: one way of authenticating per request
                raise serializers.ValidationError(
                    {"client_id": ["Send the client credentials with HTTP Basic or in the body, not both."]}
                )
            client_id, client_secret = request.auth.client_id, request.auth.client_secret
        try:
            if not client_id or not client_secret:
                raise exceptions.AuthenticationFailed("Invalid client credentials.", code="invalid_client")
            return Response(token_issue(client_id=client_id, client_secret=client_secret))
        except exceptions.AuthenticationFailed:
            for throttle in self.get_throttles():
                throttle.failure_record(request)
            raise
