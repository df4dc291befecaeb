"""Shapes of the insurer webhook API, for the OpenAPI schema (the views check events themselves)."""

from rest_framework import serializers

from insurers.webhook_events import EVENT_TYPES


class WebhookEventSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=128, help_text="unique per insurer; a redelivery reuses it")
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    tracking_id = serializers.CharField(
        max_length=64, help_text="the endorsement's tracking id (a statement's id for statement.available)"
    )
    occurred_at = serializers.DateTimeField(required=False, help_text="ISO 8601 with offset")
    data = serializers.DictField(
        required=False,
        help_text="endorsement.confirmed: insurer_premium (minor units), insurer_member_id, effective_date; "
        "endorsement.rejected: code, reason; endorsement.accepted: insurer_reference; "
        "statement.available: period_start, period_end",
    )


class WebhookBatchSerializer(serializers.Serializer):
    events = WebhookEventSerializer(many=True)


class EventErrorSerializer(serializers.Serializer):
    field = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class WebhookAnswerSerializer(serializers.Serializer):
    event_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["received", "already_received", "refused"])
    flag = serializers.CharField(required=False, help_text="set when stored for ops to look at")
    errors = EventErrorSerializer(many=True, required=False)


class WebhookBatchAnswerSerializer(serializers.Serializer):
    results = WebhookAnswerSerializer(many=True)
    received = serializers.IntegerField()
    already_received = serializers.IntegerField()
    refused = serializers.IntegerField()
