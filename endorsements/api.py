"""Thin DRF views for endorsements: parse, call one service or selector, render."""

from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.auth import BearerTokenAuthentication, IsEmployerClient, SessionCallerAuthentication
from ems.idempotency import idempotency_key_parameter, idempotent
from ems.pagination import EmsPagination, page_query_parameters, page_response
from ems.parsers import StrictJSONParser
from endorsements import intake, selectors, services
from endorsements.errors import UploadFormatUnknown
from endorsements.pipeline.cancel import endorsement_cancel
from endorsements.serializers import (
    BatchSerializer,
    EndorsementCancelSerializer,
    EndorsementDetailSerializer,
    EndorsementInputSerializer,
    EndorsementListFilterSerializer,
    EndorsementSerializer,
)

_AUTH = [BearerTokenAuthentication, SessionCallerAuthentication]
# One serializer renders every created endorsement: DRF deep-copies a serializer's declared
# fields for each new instance, about a tenth of a web process's CPU per single request.
# Rendering reads the fields only, so threads share it; the body is the same.
_CREATED_BODY = EndorsementSerializer()
_ERROR = OpenApiResponse(description="Error envelope: {error: {code, message, details, request_id}}")
_IDEMPOTENCY_KEY = idempotency_key_parameter()


class EndorsementListCreateView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]
    parser_classes = [StrictJSONParser]

    @extend_schema(
        operation_id="endorsements_list",
        parameters=[EndorsementListFilterSerializer, *page_query_parameters()],
        responses={200: page_response("Endorsement"), 422: _ERROR},
    )
    def get(self, request):
        filters = EndorsementListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        queryset = selectors.endorsement_list(
            caller=request.caller,
            state=data.get("state"),
            type=data.get("type"),
            batch_id=data.get("batch"),
            employee_code=data.get("employee_code"),
            effective_from=data.get("effective_from"),
            effective_to=data.get("effective_to"),
            created_from=data.get("created_from"),
            created_to=data.get("created_to"),
        )
        paginator = EmsPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(EndorsementSerializer(page, many=True).data)

    @extend_schema(
        operation_id="endorsements_create",
        request=EndorsementInputSerializer,
        parameters=[_IDEMPOTENCY_KEY],
        responses={201: EndorsementSerializer, 409: _ERROR, 422: _ERROR},
    )
    @idempotent("endorsements.create")
    def post(self, request):
        endorsement = services.endorsement_submit(
            caller=request.caller,
            data=request.data,
            idempotency_key=getattr(request, "idempotency_key", "") or "",
        )
        body = _CREATED_BODY.to_representation(endorsement)
        location = reverse("endorsements:endorsement-detail", args=[endorsement.tracking_id])
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class EndorsementDetailView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]

    @extend_schema(
        operation_id="endorsements_retrieve", responses={200: EndorsementDetailSerializer, 404: _ERROR}
    )
    def get(self, request, tracking_id: str):
        endorsement = selectors.endorsement_get(caller=request.caller, tracking_id=tracking_id)
        return Response(EndorsementDetailSerializer(endorsement).data)


class EndorsementCancelView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]
    parser_classes = [StrictJSONParser]

    @extend_schema(
        operation_id="endorsements_cancel",
        request=EndorsementCancelSerializer,
        parameters=[_IDEMPOTENCY_KEY],
        responses={200: EndorsementDetailSerializer, 404: _ERROR, 409: _ERROR},
        description=(
            "Cancel an endorsement that has not reached the insurer (RECEIVED, VALIDATED, "
            "ON_HOLD_REVIEW, ON_HOLD_FUNDS, FUND_LOCKED): its hold or parked request is released. "
            "Cancelling a CANCELLED endorsement answers the same and changes nothing. Once sent, "
            "it is refused with 409 `endorsement_not_cancellable` naming the state, and nothing "
            "changes; the way back from an applied change is a new endorsement."
        ),
    )
    @idempotent("endorsements.cancel")
    def post(self, request, tracking_id: str):
        body = EndorsementCancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endorsement_cancel(
            caller=request.caller, tracking_id=tracking_id, reason=body.validated_data.get("reason", "")
        )
        endorsement = selectors.endorsement_get(caller=request.caller, tracking_id=tracking_id)
        return Response(EndorsementDetailSerializer(endorsement).data)


class UploadBodyParser(BaseParser):
    """A raw request body (a JSON array or CSV text) handed over as a stream, never read whole."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {"_stream": stream}


class JsonUploadParser(UploadBodyParser):
    media_type = "application/json"


class CsvUploadParser(UploadBodyParser):
    media_type = "text/csv"


def _upload_stage(_view, request) -> services.StagedUpload:
    """The request's file, stored and checked (outside any transaction: see batch_stage)."""
    content_type = request.content_type or ""
    if content_type.startswith("multipart/"):
        upload = request.FILES.get("file")
        if upload is None:
            raise UploadFormatUnknown("Send the file in the multipart field `file`.")
        file_name = upload.name
        file_format = intake.upload_format(upload.name, upload.content_type, request.data.get("format", ""))
    else:
        upload = request.data.get("_stream") if hasattr(request.data, "get") else None
        file_name = request.query_params.get("file_name", "")
        file_format = "CSV" if content_type.startswith("text/csv") else "JSON"
        if upload is None:
            upload = _EmptyBody()
    return services.batch_stage(
        caller=request.caller, upload=upload, file_name=file_name, file_format=file_format
    )


class BatchCreateView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]
    parser_classes = [MultiPartParser, JsonUploadParser, CsvUploadParser]

    @extend_schema(
        operation_id="endorsements_batch_create",
        request={
            "multipart/form-data": inline_serializer(
                "BatchUpload",
                {
                    "file": serializers.FileField(),
                    "format": serializers.ChoiceField(choices=["CSV", "JSON"], required=False),
                },
            ),
            "application/json": {
                "type": "array",
                "items": {},
                "description": "one object of column: value per row; any other element is a row error",
            },
            "text/csv": {"type": "string"},
        },
        parameters=[_IDEMPOTENCY_KEY],
        responses={202: BatchSerializer, 409: _ERROR, 413: _ERROR, 422: _ERROR},
    )
    @idempotent("endorsements.batch", stage=_upload_stage)
    def post(self, request, staged):
        batch = services.batch_create(caller=request.caller, staged=staged)
        body = BatchSerializer(batch).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["links"]["self"]})


class _EmptyBody:
    def read(self, size: int = -1) -> bytes:
        return b""


class BatchDetailView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]

    @extend_schema(operation_id="endorsements_batch_retrieve", responses={200: BatchSerializer, 404: _ERROR})
    def get(self, request, batch_id: int):
        return Response(BatchSerializer(selectors.batch_get(caller=request.caller, batch_id=batch_id)).data)


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # Only errors reach a renderer here (the report itself streams); keep them JSON.
        return JSONRenderer().render(data)


class BatchErrorsView(APIView):
    authentication_classes = _AUTH
    permission_classes = [IsEmployerClient]
    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(
        operation_id="endorsements_batch_errors",
        responses={(200, "text/csv"): OpenApiTypes.STR, 404: _ERROR},
        description=(
            "The rejected rows as CSV: row_number, the rejected request's tracking_id (empty for a "
            "row that failed its format checks), the file's columns, and `errors`."
        ),
    )
    def get(self, request, batch_id: int):
        batch = selectors.batch_get(caller=request.caller, batch_id=batch_id)
        response = StreamingHttpResponse(
            selectors.batch_error_report_csv(batch=batch), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}-errors.csv"'
        return response
