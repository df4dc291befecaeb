"""API shapes for endorsements and batches. Input is checked by `validation.row_parse`, so the
input serializers here describe the body for the OpenAPI schema and parse list filters only."""

from django.urls import reverse
from rest_framework import serializers

from ems.pagination import NoBlankQuerySerializer
from endorsements.models import EndorsementBatch, EndorsementState, EndorsementType, SlaStatus


class EndorsementInputSerializer(serializers.Serializer):
    """One endorsement, as the columns of the upload file (DESIGN.md, "The HR upload file")."""

    action = serializers.ChoiceField(choices=EndorsementType.choices)
    employee_code = serializers.CharField(max_length=64)
    relation = serializers.ChoiceField(choices=["SELF", "SPOUSE", "CHILD", "PARENT", "PARENT_IN_LAW"])
    first_name = serializers.CharField(required=False)
    last_name = serializers.CharField(required=False)
    date_of_birth = serializers.DateField(required=False)
    gender = serializers.ChoiceField(choices=["M", "F", "X"], required=False)
    email = serializers.EmailField(required=False)
    phone = serializers.CharField(required=False, help_text="E.164, e.g. +919812345678")
    date_of_joining = serializers.DateField(required=False)
    event_date = serializers.DateField(required=False)
    effective_date = serializers.DateField()
    policy_number = serializers.CharField()
    plan_code = serializers.CharField(required=False)
    sum_insured = serializers.IntegerField(required=False, help_text="whole currency units")
    resubmits = serializers.CharField(
        required=False,
        max_length=32,
        help_text="the tracking id of your rejected endorsement that this one corrects",
    )


class EndorsementListFilterSerializer(NoBlankQuerySerializer):
    state = serializers.ChoiceField(choices=EndorsementState.choices, required=False)
    type = serializers.ChoiceField(choices=EndorsementType.choices, required=False)
    batch = serializers.IntegerField(required=False, min_value=1)
    employee_code = serializers.CharField(required=False, max_length=64)
    effective_from = serializers.DateField(required=False)
    effective_to = serializers.DateField(required=False)
    created_from = serializers.DateField(required=False)
    created_to = serializers.DateField(required=False)


class ReasonSerializer(serializers.Serializer):
    field = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class TransitionSerializer(serializers.Serializer):
    from_state = serializers.CharField()
    to_state = serializers.CharField()
    actor = serializers.CharField()
    reason = serializers.CharField()
    at = serializers.DateTimeField()


class EndorsementSerializer(serializers.Serializer):
    tracking_id = serializers.CharField()
    type = serializers.CharField()
    state = serializers.CharField()
    source = serializers.CharField()
    employee_code = serializers.SerializerMethodField()
    relation = serializers.SerializerMethodField()
    policy_number = serializers.SerializerMethodField()
    effective_date = serializers.DateField()
    premium_amount = serializers.IntegerField(
        allow_null=True,
        help_text="signed integer minor units of `currency` (paise for INR) including tax: "
        "debit > 0, refund < 0; null until priced",
    )
    tax_amount = serializers.IntegerField(
        allow_null=True, help_text="integer minor units of `currency`, included in premium_amount"
    )
    currency = serializers.SerializerMethodField(
        help_text="ISO 4217 code of premium_amount and tax_amount (the policy's, e.g. INR); null until priced"
    )
    rejection_reasons = ReasonSerializer(many=True)
    superseded_by = serializers.SerializerMethodField()
    linked_to = serializers.SerializerMethodField(
        help_text="a dependant's DELETE made by its employee's: that DELETE's tracking id"
    )
    batch_id = serializers.IntegerField(allow_null=True)
    row_number = serializers.IntegerField(allow_null=True)
    member_data = serializers.JSONField()
    received_at = serializers.DateTimeField()
    validated_at = serializers.DateTimeField(allow_null=True)
    fund_locked_at = serializers.DateTimeField(allow_null=True)
    sent_at = serializers.DateTimeField(allow_null=True)
    confirmed_at = serializers.DateTimeField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)
    insurer_reference = serializers.CharField(
        help_text="the insurer's own reference, once it has the request"
    )
    insurer_premium = serializers.IntegerField(
        allow_null=True, help_text="signed minor units the insurer charged (> 0) or refunded (< 0)"
    )
    discrepancy = serializers.JSONField(
        help_text="where the insurer's answer differs from ours: premium, effective_date, sum_insured "
        "({ours, insurer} each), difference_parked (minor units waiting for funds)"
    )
    sla_deadline = serializers.DateTimeField(
        allow_null=True, help_text="the insurer must confirm by then (set when validated)"
    )
    sla_status = serializers.ChoiceField(
        choices=SlaStatus.choices, help_text='"" within SLA, NEAR (most of the allowance used) or BREACHED'
    )

    def get_employee_code(self, obj) -> str:
        return obj.member_data.get("employee_code", "")

    def get_relation(self, obj) -> str:
        return obj.member_data.get("relation", "")

    def get_policy_number(self, obj) -> str:
        return obj.member_data.get("policy_number", "")

    def get_currency(self, obj) -> str | None:
        if obj.premium_amount is None and obj.tax_amount is None:
            return None
        # the list annotates it (no query per row); one endorsement has its policy joined
        currency = getattr(obj, "policy_currency", None)
        return currency if currency is not None else obj.policy.currency

    def get_superseded_by(self, obj) -> str | None:
        return obj.superseded_by.tracking_id if obj.superseded_by_id else None

    def get_linked_to(self, obj) -> str | None:
        return obj.linked_to.tracking_id if obj.linked_to_id else None


class EndorsementDetailSerializer(EndorsementSerializer):
    transitions = TransitionSerializer(many=True, source="history")
    resubmission_of = serializers.SerializerMethodField()

    def get_resubmission_of(self, obj) -> str | None:
        """The rejected request this one corrects (its tracking id)."""
        return obj.resubmission_of.tracking_id if obj.resubmission_of_id else None


class BatchSerializer(serializers.Serializer):
    batch_id = serializers.IntegerField(source="pk")
    state = serializers.ChoiceField(choices=EndorsementBatch.State.choices)
    file_name = serializers.CharField()
    file_format = serializers.CharField()
    file_bytes = serializers.IntegerField()
    rows_total = serializers.IntegerField()
    accepted_count = serializers.IntegerField()
    rejected_count = serializers.IntegerField()
    duplicate_count = serializers.IntegerField()
    progress = serializers.IntegerField(help_text="0-100")
    failure_code = serializers.CharField()
    failure_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    links = serializers.SerializerMethodField()

    def get_links(self, obj) -> dict:
        return {
            "self": reverse("endorsements:batch-detail", args=[obj.pk]),
            "errors": reverse("endorsements:batch-errors", args=[obj.pk]),
            "endorsements": reverse("endorsements:endorsement-list") + f"?batch={obj.pk}",
        }


class EndorsementCancelSerializer(serializers.Serializer):
    """`POST endorsements/{tracking_id}/cancel`: the body is optional."""

    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="recorded in the history"
    )
