"""Declaring a payment in a real browser: the form, the confirmation, and a reference
declared twice shown beside its field."""

import pytest

from ledger.models import TopUp
from tests.browser.test_portal_account_pages import employer, log_in  # noqa: F401 - employer: the fixture
from tests.factories import AccountFactory, InsurerFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fill(page, *, amount: str, reference: str) -> None:
    page.get_by_label("Amount paid").fill(amount)
    page.get_by_label("Payment reference").fill(reference)
    page.get_by_label("Paid on").fill("2026-01-05")
    page.get_by_label("Proof note").fill("Bank advice sent to finance")
    page.get_by_role("button", name="Declare the payment").click()


def test_hr_declares_a_payment_and_sees_it_pending_and_a_repeat_refused(page, employer):  # noqa: F811
    # given an HR user whose employer has one account
    account = AccountFactory(employer=employer, insurer=InsurerFactory(name="Star Health"))
    log_in(page)
    # when they declare a payment from the portal's menu
    page.get_by_role("link", name="Declare a payment").click()
    fill(page, amount="250000.50", reference="UTR-5521")
    # then the page confirms it, pending approval, and lists it
    page.wait_for_url("**/portal/payments/?declared=*")
    assert (
        "UTR-5521 of ₹250,000.50 is declared and pending approval." in page.get_by_role("status").inner_text()
    )
    row = page.get_by_role("table", name="1 payment declared, newest first").locator("tbody tr")
    assert row.locator("td").evaluate_all("cells => cells.map(cell => cell.textContent.trim())")[2:] == [
        "UTR-5521",
        "₹250,000.50",
        "2026-01-05",
        "Bank advice sent to finance",
        "Pending approval",
    ]
    topup = TopUp.objects.get()
    assert (topup.account_id, topup.amount, topup.state) == (account.pk, 25_000_050, "PENDING")
    # when they declare the same reference again
    fill(page, amount="10", reference="UTR-5521")
    # then the form says so beside the field, and nothing more is declared
    error = page.locator("#id_payment_reference_error")
    assert error.inner_text() == (
        f"Payment reference UTR-5521 is already declared on this account (declaration {topup.pk}). "
        "A payment is declared once; declare it again only if finance rejected it."
    )
    assert page.get_by_role("alert").is_visible()
    assert "is declared and" not in page.content()
    page.screenshot(path="/tmp/portal-payments.png", full_page=True)
    assert TopUp.objects.count() == 1
