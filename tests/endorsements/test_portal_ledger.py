"""The portal's Endorsement Account pages: balances and the paginated history."""

import pytest
from django.contrib.auth.models import Permission

from ledger import approvals, services
from tests.factories import AccountFactory, EmployerFactory, InsurerFactory, UserFactory, hr_user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def hr(client):
    employer = EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    client.employer = employer
    return client


@pytest.fixture
def approver():
    user = UserFactory(is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="ledger", codename="approve_topup")
    )
    return type(user).objects.get(pk=user.pk)


def fund(account, amount: int, approver, key: str) -> None:
    topup = approvals.account_topup(
        account_id=account.pk,
        amount=amount,
        payment_reference=f"UTR-{key}",
        idempotency_key=key,
        requested_by="user:1",
    )
    approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)


@pytest.fixture
def account(hr, approver):
    """₹5,000.00 topped up, ₹1,200.50 held for one endorsement, ₹300.00 captured for another."""
    account = AccountFactory(employer=hr.employer, insurer=InsurerFactory(name="Star Health"))
    fund(account, 500_000, approver, "t1")
    services.hold_place(account_id=account.pk, amount=120_050, reference="END-01HOLD", idempotency_key="h1")
    captured = services.hold_place(
        account_id=account.pk, amount=30_000, reference="END-02CAPT", idempotency_key="h2"
    )
    services.hold_capture(hold_id=captured.hold.pk, idempotency_key="c2")
    return account


def test_the_balance_page_shows_each_account_in_rupees(hr, account):
    other = AccountFactory(employer=EmployerFactory(), insurer=InsurerFactory(name="Other Insurer"))
    response = hr.get("/portal/balance/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'<a href="/portal/history/?account_id={account.pk}">Star Health (INR)</a>' in html
    assert '<td class="num">4,700.00</td>' in html  # posted: 5,000 - 300 captured
    assert '<td class="num">1,200.50</td>' in html  # held
    assert "<strong>3,499.50</strong>" in html  # available
    assert "Other Insurer" not in html and f"account_id={other.pk}" not in html
    assert "Below the alert level" not in html


def test_an_account_below_its_threshold_is_flagged(hr, account):
    services.account_update(account_id=account.pk, low_balance_threshold=400_000, actor="user:ops")
    html = hr.get("/portal/balance/").content.decode()
    assert '<tr class="low">' in html
    assert "Below the alert level" in html


def test_an_employer_without_an_account_is_told_so(hr):
    assert "Your employer has no Endorsement Account yet." in hr.get("/portal/balance/").content.decode()
    assert "Your employer has no Endorsement Account yet." in hr.get("/portal/history/").content.decode()


def test_the_history_lists_entries_and_holds_newest_first(hr, account):
    response = hr.get("/portal/history/")
    html = response.content.decode()
    assert response.status_code == 200
    rows = response.context["page"].object_list
    assert [(row["kind"], row["amount"], row["balance_after"]) for row in rows] == [
        ("CAPTURE", -30_000, 470_000),
        ("HOLD", 30_000, None),
        ("HOLD", 120_050, None),
        ("TOPUP", 500_000, 500_000),
    ]
    assert "CAPTURED: 300.00 captured" in html
    assert '<a href="/portal/endorsements/END-01HOLD/"><code>END-01HOLD</code></a>' in html
    assert '<td class="num amount-negative">-300.00</td>' in html
    assert '<td class="num">4,700.00</td>' in html


def test_the_history_filters_by_kind_and_account(hr, account):
    holds = hr.get("/portal/history/", {"kind": "HOLD", "account_id": account.pk}).context["page"]
    assert [row["reference"] for row in holds] == ["END-02CAPT", "END-01HOLD"]
    topups = hr.get("/portal/history/", {"kind": "TOPUP"}).context["page"]
    assert [row["amount"] for row in topups] == [500_000]


def test_another_employers_account_cannot_be_chosen(hr, account):
    other = AccountFactory(employer=EmployerFactory())
    response = hr.get("/portal/history/", {"account_id": other.pk})
    assert response.status_code == 200
    assert response.context["page"] is None
    assert "Select a valid choice." in response.content.decode()


def test_the_history_is_paginated_with_bounded_queries(
    hr, account, approver, settings, django_assert_max_num_queries
):
    settings.PORTAL_PAGE_SIZE = 3
    for number in range(6):
        fund(account, 1_000 + number, approver, f"more{number}")
    # session, user, membership+employer, accounts, count, page, the latest declared payments
    with django_assert_max_num_queries(7):
        response = hr.get("/portal/history/", {"page": 2})
    html = response.content.decode()
    assert "10 lines, newest first, page 2 of 4" in html
    assert '<a href="?page=3" rel="next">Next</a>' in html
