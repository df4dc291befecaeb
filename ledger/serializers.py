"""Shapes of the ledger API: what it renders, and the documented request bodies.

Amounts are integer minor units (paise/cents) with the account's `currency`.
"""

from rest_framework import serializers

from ems.pagination import NoBlankQuerySerializer
from ledger.selectors import HISTORY_KINDS


class AccountBalanceSerializer(serializers.Serializer):
    account_id = serializers.IntegerField()
    insurer_id = serializers.IntegerField()
    insurer_code = serializers.CharField()
    insurer_name = serializers.CharField()
    currency = serializers.CharField(help_text="ISO 4217 code of every amount of this account, e.g. INR")
    posted = serializers.IntegerField(help_text="sum of its entries (integer minor units of currency)")
    held = serializers.IntegerField(help_text="sum of its pending holds")
    available = serializers.IntegerField(help_text="posted - held; never below zero")
    low_balance_threshold = serializers.IntegerField()
    below_threshold = serializers.BooleanField()
    parked_count = serializers.IntegerField(help_text="requests waiting for funds")
    parked_amount = serializers.IntegerField(help_text="their total amount")


class BalanceResponseSerializer(serializers.Serializer):
    accounts = AccountBalanceSerializer(many=True)


class TopUpRequestSerializer(serializers.Serializer):
    """Documented body of POST topup (validated by the service, so errors carry ledger codes)."""

    account_id = serializers.IntegerField(
        required=False, help_text="needed only when the employer has more than one account"
    )
    amount = serializers.IntegerField(min_value=1, help_text="minor units (paise), an integer")
    payment_reference = serializers.CharField(max_length=100, help_text="the bank transfer's reference (UTR)")
    payment_date = serializers.DateField(
        required=False, allow_null=True, help_text="optional: the day the payment was made (not after today)"
    )
    proof_note = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="optional: where the proof is, for the approver",
    )


class TopUpSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    currency = serializers.CharField(source="account.currency")
    amount = serializers.IntegerField()
    payment_reference = serializers.CharField()
    payment_date = serializers.DateField(allow_null=True)
    proof_note = serializers.CharField()
    state = serializers.CharField()
    decision_note = serializers.CharField(help_text="the approver's note; a rejection's reason")
    created_at = serializers.DateTimeField()


class HistoryQuerySerializer(NoBlankQuerySerializer):
    account_id = serializers.IntegerField(required=False, min_value=1)
    kind = serializers.ChoiceField(choices=HISTORY_KINDS, required=False)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)


class HistoryRowSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["entry", "hold"])
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    currency = serializers.CharField(help_text="ISO 4217 code of the amounts (integer minor units)")
    kind = serializers.ChoiceField(choices=HISTORY_KINDS)
    amount = serializers.IntegerField(help_text="entries: signed (credit > 0); holds: the amount reserved")
    state = serializers.CharField(help_text="holds: PENDING, CAPTURED, RELEASED or EXPIRED; entries: empty")
    captured_amount = serializers.IntegerField(allow_null=True)
    reference = serializers.CharField()
    balance_after = serializers.IntegerField(
        allow_null=True, help_text="entries: the posted balance after this entry (running balance)"
    )
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class HistoryPageSerializer(serializers.Serializer):
    items = HistoryRowSerializer(many=True)
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    total = serializers.IntegerField()
    links = serializers.DictField(child=serializers.CharField(allow_null=True))
