"""Endorsements and Endorsement Account pages in a real browser: links, filters, keyboard."""

import datetime

import pytest
from django.contrib.auth.models import Permission

from endorsements.models import EndorsementRequest, EndorsementTransition
from ledger import approvals, services
from tests.factories import AccountFactory, EmployerFactory, InsurerFactory, UserFactory, hr_user_create

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-Word-123"


@pytest.fixture
def employer():
    employer = EmployerFactory(name="Acme Textiles")
    hr_user_create(employer=employer, username="asha")
    return employer


def log_in(page) -> None:
    page.goto("/portal/login/")
    page.get_by_label("Username").fill("asha")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")


def test_an_endorsement_is_found_by_filter_and_its_timeline_opens(page, employer):
    # given two endorsements, one rejected with its history
    for code, state in (("E1", "VALIDATED"), ("E2", "REJECTED")):
        endorsement = EndorsementRequest.objects.create(
            employer=employer,
            type="ADD",
            source="CSV",
            state=state,
            member_data={"employee_code": code, "relation": "SELF", "first_name": "Asha", "last_name": "Rao"},
            effective_date=datetime.date(2026, 5, 1),
            premium_amount=708_000 if state == "VALIDATED" else None,
            content_hash=f"hash-{code}",
        )
        EndorsementTransition.objects.create(endorsement=endorsement, to_state="RECEIVED", actor="user:1")
        EndorsementTransition.objects.create(
            endorsement=endorsement, from_state="RECEIVED", to_state=state, actor="system:validation"
        )
    log_in(page)
    # when the HR user filters the list to rejected ones and opens the result
    page.get_by_role("link", name="Endorsements").click()
    page.get_by_label("State").select_option("REJECTED")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/portal/endorsements/?state=REJECTED*")
    results = page.get_by_role("table", name="1 endorsement")
    assert results.locator("tbody tr").count() == 1
    results.get_by_role("link").first.click()
    # then the timeline lists each state in order
    page.wait_for_url("**/portal/endorsements/END-*/")
    steps = page.locator(".timeline strong").all_text_contents()
    assert steps == ["RECEIVED", "REJECTED"]
    page.screenshot(path="/tmp/portal-endorsement.png", full_page=True)


def test_the_balance_links_to_the_accounts_history(page, employer):
    approver = UserFactory(is_staff=True)
    approver.user_permissions.add(Permission.objects.get(codename="approve_topup"))
    approver = type(approver).objects.get(pk=approver.pk)
    account = AccountFactory(employer=employer, insurer=InsurerFactory(name="Star Health"))
    topup = approvals.account_topup(
        account_id=account.pk,
        amount=500_000,
        payment_reference="UTR-1",
        idempotency_key="t1",
        requested_by="user:1",
    )
    approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
    services.hold_place(account_id=account.pk, amount=120_050, reference="END-01HOLD", idempotency_key="h1")
    log_in(page)
    page.get_by_role("link", name="EA balance").click()
    assert page.get_by_role("row", name="Star Health (INR)").locator("strong").text_content() == "3,799.50"
    page.screenshot(path="/tmp/portal-balance.png", full_page=True)
    page.get_by_role("link", name="Star Health (INR)").click()
    page.wait_for_url(f"**/portal/history/?account_id={account.pk}")
    assert page.get_by_label("Account").input_value() == str(account.pk)
    history = page.get_by_role("table", name="2 lines, newest first")
    assert history.locator("tbody tr td:nth-child(3)").all_text_contents() == ["HOLD", "TOPUP"]
    page.screenshot(path="/tmp/portal-history.png", full_page=True)
