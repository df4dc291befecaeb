"""The ledger admin: read-only ledger rows, maker-checker actions gated by permissions."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ledger import approvals, services
from ledger.models import Account, Adjustment, Hold, ParkedRequest, TopUp
from tests.factories import AccountFactory, UserFactory
from tests.ledger.conftest import balances, fund, user_with_ledger_permissions

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def act(client, model: str, action: str, ids, note: str = ""):
    return client.post(
        reverse(f"admin:ledger_{model}_changelist"),
        {"action": action, "_selected_action": [str(i) for i in ids], "note": note, "index": 0},
        follow=True,
    )


def test_entries_and_holds_are_read_only_even_for_superusers(superuser_client, account, approver):
    fund(account, 10_000, approver)
    hold = services.hold_place(account_id=account.pk, amount=1_000, reference="R", idempotency_key="h").hold
    entry = account.entries.get()
    for model, row in (("entry", entry), ("hold", hold)):
        assert superuser_client.get(reverse(f"admin:ledger_{model}_changelist")).status_code == 200
        assert superuser_client.get(reverse(f"admin:ledger_{model}_add")).status_code == 403
        change = superuser_client.get(reverse(f"admin:ledger_{model}_change", args=[row.pk]))
        assert change.status_code == 200
        assert b'name="_save"' not in change.content
        assert superuser_client.get(reverse(f"admin:ledger_{model}_delete", args=[row.pk])).status_code == 403
        page = superuser_client.get(reverse(f"admin:ledger_{model}_changelist"))
        assert b'value="delete_selected"' not in page.content


def test_a_finance_approver_approves_a_topup_and_the_maker_cannot(client, account):
    maker = user_with_ledger_permissions("add_topup", "view_topup", "approve_topup", is_staff=True)
    checker = user_with_ledger_permissions("view_topup", "approve_topup", is_staff=True)
    client.force_login(maker)
    response = client.post(
        reverse("admin:ledger_topup_add"),
        {"account": account.pk, "amount": 50_000, "payment_reference": "UTR-9"},
    )
    assert response.status_code == 302
    topup = TopUp.objects.get()
    assert (topup.requested_by, topup.state) == (f"user:{maker.pk}", "PENDING")
    # the maker's own approval is refused with the service's message
    response = act(client, "topup", "approve", [topup.pk])
    assert "maker_cannot_approve" in response.content.decode()
    assert balances(account) == (0, 0, 0)
    # a second person approves
    client.force_login(checker)
    act(client, "topup", "approve", [topup.pk])
    topup.refresh_from_db()
    assert (topup.state, topup.decided_by) == ("APPROVED", checker)
    assert balances(account) == (50_000, 0, 50_000)


def test_the_finance_approver_group_gets_the_approve_permissions(db):
    group = Group.objects.get(name="finance_approver")
    codenames = set(
        group.permissions.filter(content_type__app_label="ledger").values_list("codename", flat=True)
    )
    assert {"approve_topup", "approve_adjustment"} <= codenames


def test_without_the_permission_there_are_no_approve_actions(client, account):
    viewer = user_with_ledger_permissions("view_topup", is_staff=True)
    client.force_login(viewer)
    approvals.account_topup(
        account_id=account.pk, amount=100, payment_reference="U", idempotency_key="k", requested_by="client:x"
    )
    page = client.get(reverse("admin:ledger_topup_changelist"))
    assert page.status_code == 200
    assert b'value="approve"' not in page.content
    topup = TopUp.objects.get()
    act(client, "topup", "approve", [topup.pk])
    topup.refresh_from_db()
    assert topup.state == "PENDING"


def test_reject_uses_the_note_typed_beside_the_actions(client, account):
    checker = user_with_ledger_permissions("view_topup", "approve_topup", is_staff=True)
    client.force_login(checker)
    topup = approvals.account_topup(
        account_id=account.pk, amount=100, payment_reference="U", idempotency_key="k", requested_by="client:x"
    )
    act(client, "topup", "reject", [topup.pk], note="no such transfer")
    topup.refresh_from_db()
    assert (topup.state, topup.decision_note) == ("REJECTED", "no such transfer")


def test_adjustments_are_maker_checker(client, account, approver):
    fund(account, 10_000, approver)
    maker = user_with_ledger_permissions(
        "add_adjustment", "view_adjustment", "approve_adjustment", is_staff=True
    )
    client.force_login(maker)
    client.post(
        reverse("admin:ledger_adjustment_add"), {"account": account.pk, "amount": -2_500, "reason": "fee"}
    )
    adjustment = Adjustment.objects.get()
    assert (adjustment.requested_by, adjustment.state) == (f"user:{maker.pk}", "PENDING")
    act(client, "adjustment", "approve", [adjustment.pk])
    adjustment.refresh_from_db()
    assert adjustment.state == "PENDING"
    client.force_login(user_with_ledger_permissions("view_adjustment", "approve_adjustment", is_staff=True))
    act(client, "adjustment", "approve", [adjustment.pk])
    adjustment.refresh_from_db()
    assert adjustment.state == "APPROVED"
    assert balances(account) == (7_500, 0, 7_500)


def test_a_zero_amount_is_refused_by_the_add_form(client, account):
    maker = user_with_ledger_permissions("add_adjustment", "view_adjustment", is_staff=True)
    client.force_login(maker)
    response = client.post(
        reverse("admin:ledger_adjustment_add"), {"account": account.pk, "amount": 0, "reason": "fee"}
    )
    assert response.status_code == 200
    assert b"amount must not be zero" in response.content
    assert Adjustment.objects.count() == 0


def test_ops_release_a_hold_with_the_release_permission(client, account, approver):
    fund(account, 10_000, approver)
    hold = services.hold_place(account_id=account.pk, amount=4_000, reference="R", idempotency_key="h").hold
    operator = user_with_ledger_permissions("view_hold", "release_hold", is_staff=True)
    client.force_login(operator)
    act(client, "hold", "release", [hold.pk], note="insurer cancelled")
    hold.refresh_from_db()
    assert hold.state == Hold.State.RELEASED
    assert balances(account) == (10_000, 0, 10_000)


def test_the_parked_view_wakes_and_cancels(client, account, approver):
    fund(account, 10_000, approver)
    big = services.hold_place(account_id=account.pk, amount=20_000, reference="BIG", idempotency_key="b")
    small = services.hold_place(account_id=account.pk, amount=2_000, reference="SMALL", idempotency_key="s")
    operator = user_with_ledger_permissions(
        "view_parkedrequest", "view_account", "wake_parked", is_staff=True
    )
    client.force_login(operator)
    page = client.get(reverse("admin:ledger_parkedrequest_changelist") + f"?account__id__exact={account.pk}")
    assert page.status_code == 200
    assert b"BIG" in page.content
    act(client, "parkedrequest", "cancel", [big.parked_request.pk], note="left the company")
    assert dict(ParkedRequest.objects.values_list("reference", "state")) == {
        "BIG": "CANCELLED",
        "SMALL": "PLACED",
    }
    assert small.parked_request.pk


def test_the_account_list_shows_balances_in_constant_queries(superuser_client, approver):
    fund(AccountFactory(), 10_000, approver, key="a")
    with CaptureQueriesContext(connection) as one:
        page = superuser_client.get(reverse("admin:ledger_account_changelist"))
    assert "₹100.00" in page.content.decode()
    for index in range(5):
        account = AccountFactory()
        fund(account, 5_000, approver, key=f"b{index}")
        services.hold_place(account_id=account.pk, amount=9_000, reference="P", idempotency_key="p")
    with CaptureQueriesContext(connection) as six:
        page = superuser_client.get(reverse("admin:ledger_account_changelist"))
    assert "1 waiting (₹90.00)" in page.content.decode()
    assert len(six.captured_queries) == len(one.captured_queries)


def test_ops_open_an_account_and_change_only_its_threshold(superuser_client, employer):
    from tests.factories import InsurerFactory

    insurer = InsurerFactory()
    superuser_client.post(
        reverse("admin:ledger_account_add"),
        {"employer": employer.pk, "insurer": insurer.pk, "currency": "INR", "low_balance_threshold": 5_000},
    )
    account = Account.objects.get(employer=employer)
    assert (account.posted, account.held, account.low_balance_threshold) == (0, 0, 5_000)
    superuser_client.post(
        reverse("admin:ledger_account_change", args=[account.pk]),
        {"low_balance_threshold": 7_000},
    )
    account.refresh_from_db()
    assert account.low_balance_threshold == 7_000
    response = superuser_client.post(
        reverse("admin:ledger_account_change", args=[account.pk]), {"low_balance_threshold": -1}
    )
    assert response.status_code == 200
    account.refresh_from_db()
    assert account.low_balance_threshold == 7_000


def readonly_value(page: str, field: str) -> str:
    """The text a row's page shows for a read-only field."""
    import re

    match = re.search(rf'field-{field}\b.*?<div class="readonly">(.*?)</div>', page, re.S)
    assert match, field
    return match.group(1).strip()


def test_a_rows_page_shows_amounts_as_money_and_times_in_the_zone_named(superuser_client, account, approver):
    # given a decided ₹100,000 top-up, its entry and a hold (amounts in paise)
    topup = fund(account, 10_000_000, approver, key="big")
    hold = services.hold_place(account_id=account.pk, amount=250_050, reference="R", idempotency_key="h").hold
    TopUp.objects.filter(pk=topup.pk).update(created_at="2026-12-02T12:35:09Z")
    entry = account.entries.get()
    # when finance opens each row's page
    pages = {
        name: superuser_client.get(reverse(f"admin:ledger_{name}_change", args=[row.pk])).content.decode()
        for name, row in (("topup", topup), ("entry", entry), ("hold", hold), ("account", account))
    }
    # then each amount is in rupees with two decimals, never bare paise
    assert readonly_value(pages["topup"], "amount_money") == "₹100,000.00"
    assert readonly_value(pages["entry"], "amount_money") == "₹100,000.00"
    assert readonly_value(pages["entry"], "balance_after_money") == "₹100,000.00"
    assert readonly_value(pages["hold"], "amount_money") == "₹2,500.50"
    assert readonly_value(pages["hold"], "captured_amount_money") == "—"
    assert readonly_value(pages["account"], "posted_money") == "₹100,000.00"
    assert readonly_value(pages["account"], "held_money") == "₹2,500.50"
    assert "10000000" not in pages["topup"] and "10000000" not in pages["entry"]
    # and a time is the project's zone's, named
    assert readonly_value(pages["topup"], "created_at") == "2026-12-02 18:05:09 IST"
    # while the threshold, which ops may change, stays an input in minor units
    assert 'name="low_balance_threshold"' in pages["account"]


def test_a_viewer_sees_an_accounts_threshold_as_money(client, account):
    Account.objects.filter(pk=account.pk).update(low_balance_threshold=500_000)
    client.force_login(user_with_ledger_permissions("view_account", is_staff=True))

    page = client.get(reverse("admin:ledger_account_change", args=[account.pk])).content.decode()

    assert readonly_value(page, "low_balance_threshold_money") == "₹5,000.00"
