"""Reads with rules: every employer-facing read goes through `ems.tenancy.scoped`.

- `account_balances(caller=...)`: each account in scope with posted, held, available,
  threshold and its parked queue (count, amount), in one query.
- `history(caller=..., ...)`: entries and holds of the accounts in scope, newest first,
  as one queryset of plain rows (a UNION), so the API paginates it in the database.
  Each entry row carries `balance_after` (the running balance, stamped by the database
  as the entry posted); hold rows carry their state and amount and no balance.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import (
    BigIntegerField,
    CharField,
    Count,
    DateTimeField,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from ems.errors import ErrorDetail, ValidationFailed
from ems.tenancy import Caller, scoped
from ledger.errors import AccountNotFound, AccountRequired
from ledger.models import Account, Entry, Hold, ParkedRequest, TopUp

HOLD_KIND = "HOLD"
HISTORY_KINDS = [*Entry.Kind.values, HOLD_KIND]


@dataclass(frozen=True)
class AccountBalance:
    account_id: int
    employer_id: int
    insurer_id: int
    insurer_code: str
    insurer_name: str
    currency: str
    posted: int
    held: int
    available: int
    low_balance_threshold: int
    below_threshold: bool
    parked_count: int
    parked_amount: int


def accounts_annotated(queryset: QuerySet | None = None) -> QuerySet:
    """Accounts with `available`, `parked_count` and `parked_amount` computed in the database."""
    queryset = Account.objects.all() if queryset is None else queryset
    parked = ParkedRequest.objects.filter(account=OuterRef("pk"), state=ParkedRequest.State.PARKED)
    parked_count = parked.order_by().values("account").annotate(n=Count("pk")).values("n")
    parked_amount = parked.order_by().values("account").annotate(total=Sum("amount")).values("total")
    return queryset.select_related("insurer", "employer").annotate(
        available_amount=F("posted") - F("held"),
        parked_count=Coalesce(Subquery(parked_count, output_field=IntegerField()), 0),
        parked_amount=Coalesce(Subquery(parked_amount, output_field=BigIntegerField()), 0),
    )


def account_balances(*, caller: Caller) -> list[AccountBalance]:
    accounts = accounts_annotated(scoped(Account.objects.all(), caller)).order_by("insurer__code", "pk")
    return [
        AccountBalance(
            account_id=a.pk,
            employer_id=a.employer_id,
            insurer_id=a.insurer_id,
            insurer_code=a.insurer.code,
            insurer_name=a.insurer.name,
            currency=a.currency,
            posted=a.posted,
            held=a.held,
            available=a.available_amount,
            low_balance_threshold=a.low_balance_threshold,
            below_threshold=a.available_amount < a.low_balance_threshold,
            parked_count=a.parked_count,
            parked_amount=a.parked_amount,
        )
        for a in accounts
    ]


def account_for_caller(*, caller: Caller, account_id: int | None) -> Account:
    """The caller's account with this id (404 for another employer's), or their only account."""
    if account_id is not None and (isinstance(account_id, bool) or not isinstance(account_id, int)):
        raise ValidationFailed(
            details=[ErrorDetail("account_id", "invalid", "account_id must be an integer")]
        )
    accounts = scoped(Account.objects.all(), caller)
    if account_id is None:
        only = list(accounts.order_by("pk")[:2])
        if len(only) == 1:
            return only[0]
        if not only:
            raise AccountNotFound("The employer has no account yet.")
        raise AccountRequired()
    account = accounts.filter(pk=account_id).first()
    if account is None:
        raise AccountNotFound()
    return account


def history(
    *,
    caller: Caller,
    account_id: int | None = None,
    kind: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet:
    """Entries and holds, newest first, as rows (dicts) with the same columns.

    Columns: row_type ("entry"/"hold"), row_id, account_id, currency, kind (entry kind or
    "HOLD"), amount (signed for entries; the reserved amount for holds), state (holds),
    captured_amount (captured holds), reference, balance_after (entries), created_at,
    resolved_at and expires_at (holds).
    """
    if kind is not None and kind not in HISTORY_KINDS:
        raise ValidationFailed(
            details=[ErrorDetail("kind", "invalid_choice", f"kind must be one of {', '.join(HISTORY_KINDS)}")]
        )
    if date_from and date_to and date_from > date_to:
        raise ValidationFailed(details=[ErrorDetail("date_from", "invalid", "date_from is after date_to")])
    if account_id is not None:
        account_for_caller(caller=caller, account_id=account_id)
    window = Q()
    if date_from is not None:
        window &= Q(created_at__gte=_day_start(date_from))
    if date_to is not None:
        window &= Q(created_at__lt=_day_start(date_to + timedelta(days=1)))
    if account_id is not None:
        window &= Q(account_id=account_id)

    rows = []
    if kind != HOLD_KIND:
        entries = scoped(Entry.objects.all(), caller, employer_field="account__employer_id").filter(window)
        if kind is not None:
            entries = entries.filter(kind=kind)
        rows.append(
            entries.annotate(
                row_type=Value("entry", output_field=CharField()),
                row_id=F("id"),
                row_account_id=F("account_id"),
                row_currency=F("account__currency"),
                row_kind=F("kind"),
                row_amount=F("amount"),
                row_state=Value("", output_field=CharField()),
                row_captured_amount=Value(None, output_field=BigIntegerField()),
                row_reference=F("reference"),
                row_balance_after=F("balance_after"),
                row_created_at=F("created_at"),
                row_resolved_at=Value(None, output_field=DateTimeField()),
                row_expires_at=Value(None, output_field=DateTimeField()),
            )
            .values(*_COLUMNS)
            .order_by()
        )
    if kind is None or kind == HOLD_KIND:
        holds = scoped(Hold.objects.all(), caller, employer_field="account__employer_id").filter(window)
        rows.append(
            holds.annotate(
                row_type=Value("hold", output_field=CharField()),
                row_id=F("id"),
                row_account_id=F("account_id"),
                row_currency=F("account__currency"),
                row_kind=Value(HOLD_KIND, output_field=CharField()),
                row_amount=F("amount"),
                row_state=F("state"),
                row_captured_amount=F("captured_amount"),
                row_reference=F("reference"),
                row_balance_after=Value(None, output_field=BigIntegerField()),
                row_created_at=F("created_at"),
                row_resolved_at=F("resolved_at"),
                row_expires_at=F("expires_at"),
            )
            .values(*_COLUMNS)
            .order_by()
        )
    combined = rows[0] if len(rows) == 1 else rows[0].union(rows[1], all=True)
    return combined.order_by("-row_created_at", "-row_id")


_COLUMNS = [
    "row_type",
    "row_id",
    "row_account_id",
    "row_currency",
    "row_kind",
    "row_amount",
    "row_state",
    "row_captured_amount",
    "row_reference",
    "row_balance_after",
    "row_created_at",
    "row_resolved_at",
    "row_expires_at",
]


def history_row(row: dict) -> dict:
    """A history row with its plain names."""
    return {name.removeprefix("row_"): value for name, value in row.items()}


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def topups(*, caller: Caller, account_id: int | None = None, state: str | None = None) -> QuerySet[TopUp]:
    """The payments the caller's employer declared (top-ups), newest first, each with its
    account and insurer: pending until a finance approver decides, then approved or
    rejected with the approver's note."""
    rows = scoped(TopUp.objects.all(), caller, employer_field="account__employer_id")
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    if state is not None:
        rows = rows.filter(state=state)
    return rows.select_related("account__insurer").order_by("-created_at", "-id")


def accounts_with_parked() -> list[int]:
    """Accounts whose queue has waiting requests (for the periodic sweep)."""
    return list(
        ParkedRequest.objects.filter(state=ParkedRequest.State.PARKED)
        .order_by("account_id")
        .values_list("account_id", flat=True)
        .distinct()
    )
