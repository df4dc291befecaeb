"""The portal's "Declare a payment" page: a pending top-up for finance, shown as it stands
on the page and in the EA history until approved or rejected (with the reason)."""

import datetime

import pytest
from django.utils import timezone

from ems.models import OutboxEvent
from ledger import approvals
from ledger.models import Entry, TopUp
from tests.factories import AccountFactory, EmployerFactory, InsurerFactory, hr_user_create
from tests.ledger.conftest import user_with_ledger_permissions

pytestmark = pytest.mark.django_db


@pytest.fixture
def hr(client):
    employer = EmployerFactory()
    user = hr_user_create(employer=employer)
    client.force_login(user)
    client.employer = employer
    client.user = user
    return client


@pytest.fixture
def account(hr):
    return AccountFactory(employer=hr.employer, insurer=InsurerFactory(name="Star Health"))


@pytest.fixture
def approver(db):
    return user_with_ledger_permissions("approve_topup", is_staff=True)


def declare(hr, account, **fields):
    body = {
        "account_id": account.pk,
        "amount": "250000.50",
        "payment_reference": "UTR-7781",
        "payment_date": (timezone.localdate() - datetime.timedelta(days=1)).isoformat(),
        "proof_note": "Bank advice emailed to finance@",
        "idempotency_key": "form-1",
    }
    body.update(fields)
    return hr.post("/portal/payments/", body)


def test_the_page_has_the_form_with_labelled_fields(hr, account):
    response = hr.get("/portal/payments/")
    html = response.content.decode()
    assert response.status_code == 200
    for label, name in [
        ("Account", "account_id"),
        ("Amount paid", "amount"),
        ("Payment reference", "payment_reference"),
        ("Paid on", "payment_date"),
        ("Proof note", "proof_note"),
    ]:
        assert f'<label for="id_{name}">{label}</label>' in html
    assert 'name="idempotency_key"' in html
    assert f'<option value="{account.pk}" selected>Star Health (INR)</option>' in html
    assert "No payments declared yet." in html
    assert 'href="/portal/payments/" aria-current="page"' in html


def test_a_declared_payment_is_a_pending_topup_that_moves_no_money(hr, account):
    # when HR declares a payment
    response = declare(hr, account)
    # then it is a PENDING top-up of the amount in paise, with HR as the maker
    topup = TopUp.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/portal/payments/?declared={topup.pk}"
    assert (topup.account_id, topup.amount, topup.payment_reference, topup.state) == (
        account.pk,
        25_000_050,
        "UTR-7781",
        "PENDING",
    )
    assert (topup.payment_date, topup.proof_note, topup.requested_by) == (
        timezone.localdate() - datetime.timedelta(days=1),
        "Bank advice emailed to finance@",
        f"user:{hr.user.pk}",
    )
    assert topup.idempotency_key == "portal:form-1"
    assert Entry.objects.count() == 0
    account.refresh_from_db()
    assert account.posted == 0
    # and the page confirms it and lists it as pending approval
    html = hr.get(response["Location"]).content.decode()
    assert "<strong>pending approval</strong>" in html
    assert "₹250,000.50" in html
    assert '<td class="state-pending">Pending approval</td>' in html


def test_submitting_the_same_form_twice_declares_once(hr, account):
    declare(hr, account)
    again = declare(hr, account)
    assert again.status_code == 302
    assert TopUp.objects.count() == 1


def test_a_payment_reference_declared_before_is_a_clear_form_error(hr, account):
    # given a declaration of UTR-7781
    declare(hr, account)
    first = TopUp.objects.get()
    events = OutboxEvent.objects.count()
    # when the same reference is declared again from a fresh form
    response = declare(hr, account, idempotency_key="form-2", amount="10")
    # then the form says so beside the reference, and nothing more is written
    html = response.content.decode()
    assert response.status_code == 409
    message = (
        f"Payment reference UTR-7781 is already declared on this account (declaration {first.pk}). "
        "A payment is declared once; declare it again only if finance rejected it."
    )
    assert f'<ul class="field-errors" id="id_payment_reference_error"><li>{message}</li></ul>' in html
    assert f'<a href="#id_payment_reference">Payment reference: {message}</a>' in html
    assert TopUp.objects.count() == 1
    assert OutboxEvent.objects.count() == events


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"amount": "0"}, "amount", "Ensure this value is greater than or equal to 0.01."),
        ({"amount": "10.005"}, "amount", "Ensure that there are no more than 2 decimal places."),
        ({"payment_reference": ""}, "payment_reference", "This field is required."),
        (
            {"payment_date": (timezone.localdate() + datetime.timedelta(days=1)).isoformat()},
            "payment_date",
            "The payment date cannot be after today.",
        ),
        (
            {"proof_note": "x" * 501},
            "proof_note",
            "Ensure this value has at most 500 characters (it has 501).",
        ),
    ],
)
def test_a_bad_field_is_explained_and_nothing_is_declared(hr, account, fields, field, message):
    response = declare(hr, account, **fields)
    assert response.status_code == 400
    assert f'id="id_{field}_error"><li>{message}</li>' in response.content.decode()
    assert TopUp.objects.count() == 0


def test_another_employers_account_cannot_be_chosen(hr, account):
    other = AccountFactory(employer=EmployerFactory())
    response = declare(hr, other)
    assert response.status_code == 400
    assert TopUp.objects.count() == 0


def test_without_an_account_there_is_nothing_to_declare_to(hr):
    html = hr.get("/portal/payments/").content.decode()
    assert "Your employer has no Endorsement Account yet." in html
    assert 'name="amount"' not in html


def test_the_history_shows_the_declaration_pending_then_rejected_with_the_reason(hr, account, approver):
    # given a declared payment
    declare(hr, account)
    topup = TopUp.objects.get()
    html = hr.get("/portal/history/").content.decode()
    assert '<caption id="declared-caption">Your latest declared payments</caption>' in html
    assert f'<tr data-topup-id="{topup.pk}">' in html
    assert '<td class="state-pending">Pending approval</td>' in html
    # when finance rejects it with a reason
    approvals.topup_decide(
        topup_id=topup.pk, approver=approver, approve=False, note="No such credit on the statement"
    )
    # then the history says so, with the reason, and no entry was posted
    html = hr.get("/portal/history/").content.decode()
    assert '<td class="state-rejected">Rejected: No such credit on the statement</td>' in html
    assert Entry.objects.count() == 0


def test_an_approved_declaration_shows_approved_and_its_topup_entry(hr, account, approver):
    declare(hr, account)
    topup = TopUp.objects.get()
    approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
    html = hr.get("/portal/payments/").content.decode()
    assert '<td class="state-approved">Approved <span class="muted">' in html
    history = hr.get("/portal/history/").content.decode()
    assert "<td>TOPUP</td>" in history
    assert "<code>UTR-7781</code>" in history


def test_only_this_employers_declarations_are_listed(hr, account, django_assert_max_num_queries):
    other = AccountFactory(employer=EmployerFactory())
    TopUp.objects.create(
        account=other, amount=5, payment_reference="UTR-OTHER", idempotency_key="o", requested_by="user:0"
    )
    for n in range(3):
        declare(hr, account, payment_reference=f"UTR-{n}", idempotency_key=f"form-{n}")
    with django_assert_max_num_queries(8):
        html = hr.get("/portal/payments/").content.decode()
    assert "UTR-OTHER" not in html
    assert '<caption id="declared-caption">3 payments declared, newest first</caption>' in html
    assert html.index("UTR-2") < html.index("UTR-1") < html.index("UTR-0")
