"""Ledger test helpers: accounts, a finance approver, funding, and a snapshot for "nothing changed"."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Sum

from ems.models import OutboxEvent
from ledger import approvals, services
from ledger.models import Account, Adjustment, Entry, Hold, ParkedRequest, TopUp
from tests.factories import AccountFactory, UserFactory

APPROVER_CODENAMES = ["approve_topup", "approve_adjustment"]


def user_with_ledger_permissions(*codenames: str, **fields):
    user = UserFactory(**fields)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="ledger", codename__in=codenames)
    )
    return get_user_model().objects.get(pk=user.pk)  # a fresh object: no cached permissions


@pytest.fixture
def account(db):
    return AccountFactory()


@pytest.fixture
def approver(db):
    return user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)


@pytest.fixture
def second_approver(db):
    return user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)


def fund(account: Account, amount: int, approver, *, key: str | None = None) -> TopUp:
    """Top up and approve (the maker is an API client, the checker `approver`)."""
    key = key or f"fund-{amount}-{TopUp.objects.count()}"
    topup = approvals.account_topup(
        account_id=account.pk,
        amount=amount,
        payment_reference=f"UTR-{key}",
        idempotency_key=key,
        requested_by="client:test",
    )
    return approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)


def balances(account: Account) -> tuple[int, int, int]:
    """(posted, held, available) as the database has them."""
    account.refresh_from_db()
    return account.posted, account.held, account.posted - account.held


def invariants_hold(account: Account) -> bool:
    account.refresh_from_db()
    entries = Entry.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or 0
    pending = (
        Hold.objects.filter(account=account, state=Hold.State.PENDING).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    return account.posted == entries and account.held == pending and account.posted >= account.held


def snapshot(account: Account) -> dict:
    """Everything a refused call must leave alone."""
    account.refresh_from_db()
    return {
        "posted": account.posted,
        "held": account.held,
        "entries": list(Entry.objects.filter(account=account).values_list("pk", "amount")),
        "holds": list(Hold.objects.filter(account=account).values_list("pk", "state", "captured_amount")),
        "parked": list(ParkedRequest.objects.filter(account=account).values_list("pk", "state")),
        "topups": list(TopUp.objects.filter(account=account).values_list("pk", "state")),
        "adjustments": list(Adjustment.objects.filter(account=account).values_list("pk", "state")),
        "outbox": OutboxEvent.objects.count(),
    }


def ledger_events(account: Account) -> list[str]:
    """The ledger event types queued for this account, oldest first."""
    return list(
        OutboxEvent.objects.filter(destination="ems.ledger", key=str(account.pk))
        .order_by("id")
        .values_list("payload__type", flat=True)
    )


def place(account: Account, amount: int, key: str, reference: str | None = None, **extra):
    """hold_place with a reference made from the key."""
    return services.hold_place(
        account_id=account.pk,
        amount=amount,
        reference=reference or f"REF-{key}",
        idempotency_key=key,
        **extra,
    )
