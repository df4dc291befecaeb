"""The ledger API (`/api/v1/ledger/`): thin views over ledger.selectors and ledger.approvals.

Callers: an employer's API client (bearer token) or its HR user (portal session). Every
read is scoped to the caller's employer by the selectors; another employer's account is
a 404, exactly like a missing one.
"""

import re
import uuid
from datetime import date

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.auth import BearerTokenAuthentication, IsEmployerClient, SessionCallerAuthentication
from ems.errors import ErrorDetail, ValidationFailed
from ems.idempotency import idempotency_key_parameter, idempotent
from ems.pagination import EmsPagination, page_query_parameters
from ems.parsers import StrictJSONParser
from ledger import approvals, selectors
from ledger.serializers import (
    BalanceResponseSerializer,
    HistoryPageSerializer,
    HistoryQuerySerializer,
    HistoryRowSerializer,
    TopUpRequestSerializer,
    TopUpSerializer,
)

_DIGITS = re.compile(r"^[0-9]{1,19}$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class LedgerView(APIView):
    authentication_classes = [BearerTokenAuthentication, SessionCallerAuthentication]
    permission_classes = [IsEmployerClient]


def _integer(value):
    """Form posts send strings: accept plain digits; anything else goes to the service as is."""
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    return value


def _date(value):
    """JSON has no dates: an ISO `YYYY-MM-DD` string becomes one; anything else goes to the service as is."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


class BalanceView(LedgerView):
    @extend_schema(
        operation_id="ledger_balance",
        summary="Balances of the caller's accounts",
        responses=BalanceResponseSerializer,
    )
    def get(self, request):
        balances = selectors.account_balances(caller=request.caller)
        return Response({"accounts": BalanceResponseSerializer({"accounts": balances}).data["accounts"]})


class TopUpView(LedgerView):
    parser_classes = [StrictJSONParser]  # a JSON object; a form's strings are not amounts

    @extend_schema(
        operation_id="ledger_topup",
        summary="Report a payment to the insurer: a pending top-up for a finance approver",
        request=TopUpRequestSerializer,
        responses={202: TopUpSerializer},
        parameters=[idempotency_key_parameter()],
    )
    @idempotent("ledger.topup")
    def post(self, request):
        data = request.data
        if not hasattr(data, "get"):
            raise ValidationFailed(
                "The body must be a JSON object of field: value.",
                details=[ErrorDetail("", "not_an_object", "The body must be a JSON object.")],
            )
        account_id = _integer(data.get("account_id"))
        account = selectors.account_for_caller(caller=request.caller, account_id=account_id)
        topup = approvals.account_topup(
            account_id=account.pk,
            amount=_integer(data.get("amount")),
            payment_reference=data.get("payment_reference"),
            payment_date=_date(data.get("payment_date")),
            proof_note=data.get("proof_note", ""),
            idempotency_key=getattr(request, "idempotency_key", None) or f"api:{uuid.uuid4()}",
            requested_by=request.caller.principal,
        )
        return Response(TopUpSerializer(topup).data, status=status.HTTP_202_ACCEPTED)


class HistoryView(LedgerView):
    @extend_schema(
        operation_id="ledger_history",
        summary="Entries and holds, newest first, with the running balance on each entry",
        parameters=[
            HistoryQuerySerializer,
            *page_query_parameters(),
        ],
        responses=HistoryPageSerializer,
    )
    def get(self, request):
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.history(caller=request.caller, **query.validated_data)
        paginator = EmsPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        items = HistoryRowSerializer([selectors.history_row(row) for row in page], many=True).data
        return paginator.get_paginated_response(items)
