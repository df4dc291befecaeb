"""Platform API views: the OAuth2 token endpoint."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.auth import token_issue
from ems.parsers import StrictJSONParser


class TokenRequestSerializer(serializers.Serializer):
    grant_type = serializers.ChoiceField(choices=["client_credentials"])
    client_id = serializers.CharField(max_length=64)
    client_secret = serializers.CharField(max_length=256)


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
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
        auth=[],
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return Response(token_issue(client_id=data["client_id"], client_secret=data["client_secret"]))
