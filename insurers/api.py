"""The insurer webhook API (`/api/v1/webhooks/insurers/<insurer_id>/notify` and `batch-notify`).

No bearer token or session: an insurer proves itself by the HMAC signature of the raw body
(`insurers.webhooks`). Order of checks: the insurer exists (404), the body fits
`WEBHOOK_MAX_BYTES` read from the stream itself, whatever Content-Length claims (413), the
signature verifies (401), the body is JSON (400), the event is well formed (422). Only then
is anything stored (`insurers.webhook_events`).
"""

import json

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.errors import EmsError, ErrorDetail, NotFound, PayloadTooLarge, ValidationFailed
from ems.parsers import json_shape_problem
from ems.request_id import current_request_id
from insurers.models import Insurer
from insurers.serializers import (
    WebhookAnswerSerializer,
    WebhookBatchAnswerSerializer,
    WebhookBatchSerializer,
    WebhookEventSerializer,
)
from insurers.webhook_events import ALREADY_RECEIVED, RECEIVED, REFUSED, webhook_events_receive
from insurers.webhooks import SIGNATURE_HEADER, signature_verify


class MalformedBody(EmsError):
    code = "malformed_request"
    status = 400
    message = "The body is not valid UTF-8 JSON."


class UnknownEventType(EmsError):
    code = "unknown_event_type"
    status = 422
    message = "The event type is not one EMS knows; nothing was stored."


_SIGNATURE = OpenApiParameter(
    SIGNATURE_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=True,
    description='t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> (several v1 during rotation)',
)
_ERRORS = {
    400: OpenApiResponse(description="body is not JSON"),
    401: OpenApiResponse(description="signature missing, malformed, stale or not matching"),
    404: OpenApiResponse(description="no such insurer"),
    413: OpenApiResponse(description="body over WEBHOOK_MAX_BYTES"),
    422: OpenApiResponse(description="event malformed or of an unknown type; nothing stored"),
}


class InsurerWebhookView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    parser_classes = [JSONParser]  # for the schema; the raw body is read and verified first

    def verified(self, request, insurer_id: int) -> tuple[Insurer, object, dict]:
        insurer = (
            Insurer.objects.filter(pk=insurer_id, is_active=True)
            .only("pk", "webhook_secret_primary", "webhook_secret_secondary")
            .first()
        )
        if insurer is None:
            raise NotFound("No such insurer.")
        limit = settings.WEBHOOK_MAX_BYTES
        body = request.read(limit + 1)  # bounded: Content-Length may lie or be absent
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
        timestamp = signature_verify(
            header=request.headers.get(SIGNATURE_HEADER),
            body=body,
            secrets=(insurer.webhook_secret_primary, insurer.webhook_secret_secondary),
        )
        try:
            text = body.decode("utf-8")
            parsed = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise MalformedBody() from error
        if json_shape_problem(parsed, settings.API_JSON_MAX_DEPTH):
            raise MalformedBody()
        headers = {
            "signature_t": timestamp,
            "request_id": current_request_id(),
            "user_agent": request.headers.get("User-Agent", "")[:200],
        }
        return insurer, (parsed, text), headers


class NotifyView(InsurerWebhookView):
    @extend_schema(
        operation_id="webhooks_insurer_notify",
        summary="An insurer reports one event (signed)",
        auth=[],
        parameters=[_SIGNATURE],
        request=WebhookEventSerializer,
        responses={202: WebhookAnswerSerializer, 200: WebhookAnswerSerializer, **_ERRORS},
    )
    def post(self, request, insurer_id: int):
        insurer, (event, text), headers = self.verified(request, insurer_id)
        (answer,) = webhook_events_receive(insurer=insurer, events=[event], bodies=[text], headers=headers)
        if answer.status == REFUSED:
            details = [ErrorDetail(p.field, p.code, p.message) for p in answer.problems]
            if any(p.code == UnknownEventType.code for p in answer.problems):
                raise UnknownEventType(details=details)
            raise ValidationFailed("The event is invalid; nothing was stored.", details=details)
        return Response(answer.as_dict(), status=202 if answer.status == RECEIVED else 200)


class BatchNotifyView(InsurerWebhookView):
    @extend_schema(
        operation_id="webhooks_insurer_batch_notify",
        summary="An insurer reports up to WEBHOOK_BATCH_MAX_EVENTS events in one signed call",
        description="Each event is answered in `results`, in order: received (stored now), "
        "already_received (its event_id was stored before) or refused (with errors; not stored). "
        "The other events of a batch are stored even when some are refused.",
        auth=[],
        parameters=[_SIGNATURE],
        request=WebhookBatchSerializer,
        responses={200: WebhookBatchAnswerSerializer, **_ERRORS},
    )
    def post(self, request, insurer_id: int):
        insurer, (batch, _text), headers = self.verified(request, insurer_id)
        events = batch.get("events") if isinstance(batch, dict) else None
        if not isinstance(events, list) or not events:
            raise ValidationFailed(
                details=[ErrorDetail("events", "required", "events must be a non-empty list of events.")]
            )
        limit = settings.WEBHOOK_BATCH_MAX_EVENTS
        if len(events) > limit:
            raise ValidationFailed(
                details=[ErrorDetail("events", "too_many", f"At most {limit} events per call.")]
            )
        bodies = [json.dumps(event, separators=(",", ":"), ensure_ascii=False) for event in events]
        answers = webhook_events_receive(insurer=insurer, events=events, bodies=bodies, headers=headers)
        counts = dict.fromkeys((RECEIVED, ALREADY_RECEIVED, REFUSED), 0)
        for answer in answers:
            counts[answer.status] += 1
        return Response({"results": [answer.as_dict() for answer in answers], **counts})
