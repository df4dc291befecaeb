"""The ledger API through its doors: bearer token (API client) and HR session."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from ems.models import OutboxEvent
from ledger import services
from ledger.models import TopUp
from tests.factories import AccountFactory, EmployerFactory, InsurerFactory, hr_user_create
from tests.ledger.conftest import fund

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(employer):
    return AccountFactory(employer=employer, insurer=InsurerFactory(code="acme", name="Acme General"))


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["code"]


def test_balance_lists_the_callers_accounts_only(api, account, approver):
    fund(account, 100_000, approver)
    services.hold_place(account_id=account.pk, amount=30_000, reference="A", idempotency_key="a")
    services.hold_place(account_id=account.pk, amount=90_000, reference="B", idempotency_key="b")
    AccountFactory()  # another employer's
    response = api.get("/api/v1/ledger/balance")
    assert response.status_code == 200
    assert response.json() == {
        "accounts": [
            {
                "account_id": account.pk,
                "insurer_id": account.insurer_id,
                "insurer_code": "acme",
                "insurer_name": "Acme General",
                "currency": "INR",
                "posted": 100_000,
                "held": 30_000,
                "available": 70_000,
                "low_balance_threshold": 0,
                "below_threshold": False,
                "parked_count": 1,
                "parked_amount": 90_000,
            }
        ]
    }


def test_topup_is_202_pending_and_replays_with_the_same_key(api, account):
    body = {"amount": 250_000, "payment_reference": "UTR-77"}
    first = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == 202
    data = first.json()
    assert {k: data[k] for k in ("account_id", "amount", "currency", "payment_reference", "state")} == {
        "account_id": account.pk,
        "amount": 250_000,
        "currency": "INR",
        "payment_reference": "UTR-77",
        "state": "PENDING",
    }
    again = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (202, data, "true")
    changed = api.post(
        "/api/v1/ledger/topup", {**body, "amount": 1}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    assert error_of(changed, 422) == "idempotency_key_reused"
    topup = TopUp.objects.get()
    assert (topup.requested_by, topup.idempotency_key) == (f"client:{api.api_client.client_id}", "key-1")


@pytest.mark.parametrize("amount", [0, -5, 12.5, "abc", True, None, 10**15])
def test_topup_with_a_bad_amount_is_422_and_writes_nothing(api, account, amount):
    response = api.post("/api/v1/ledger/topup", {"amount": amount, "payment_reference": "UTR"}, format="json")
    assert error_of(response, 422) == "amount_invalid"
    assert response.json()["error"]["details"][0]["field"] == "amount"
    assert (TopUp.objects.count(), OutboxEvent.objects.count()) == (0, 0)


def test_topup_on_another_employers_account_is_404(api, account):
    other = AccountFactory()
    response = api.post(
        "/api/v1/ledger/topup",
        {"account_id": other.pk, "amount": 100, "payment_reference": "UTR"},
        format="json",
    )
    assert error_of(response, 404) == "account_not_found"
    assert (TopUp.objects.count(), OutboxEvent.objects.count()) == (0, 0)


def test_topup_must_name_the_account_when_there_are_several(api, account, employer):
    second = AccountFactory(employer=employer)
    response = api.post("/api/v1/ledger/topup", {"amount": 100, "payment_reference": "UTR"}, format="json")
    assert error_of(response, 422) == "account_required"
    response = api.post(
        "/api/v1/ledger/topup",
        {"account_id": second.pk, "amount": 100, "payment_reference": "UTR"},
        format="json",
    )
    assert response.status_code == 202
    assert TopUp.objects.get().account_id == second.pk


def test_topup_without_a_reference_is_422(api, account):
    response = api.post("/api/v1/ledger/topup", {"amount": 100}, format="json")
    assert error_of(response, 422) == "reference_invalid"
    assert TopUp.objects.count() == 0


def test_history_is_newest_first_with_running_balances_and_pages(api, account, approver):
    fund(account, 100_000, approver, key="t1")
    hold = services.hold_place(
        account_id=account.pk, amount=30_000, reference="END-1", idempotency_key="h"
    ).hold
    services.hold_capture(hold_id=hold.pk, idempotency_key="c")
    services.refund_post(account_id=account.pk, amount=5_000, reference="END-0", idempotency_key="r")
    response = api.get("/api/v1/ledger/history?page_size=3")
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["page"], body["page_size"]) == (4, 1, 3)
    assert [(i["type"], i["kind"], i["amount"], i["balance_after"], i["state"]) for i in body["items"]] == [
        ("entry", "REFUND", 5_000, 75_000, ""),
        ("entry", "CAPTURE", -30_000, 70_000, ""),
        ("hold", "HOLD", 30_000, None, "CAPTURED"),
    ]
    assert 'rel="next"' in response["Link"]
    second = api.get(body["links"]["next"]).json()
    assert [(i["kind"], i["balance_after"]) for i in second["items"]] == [("TOPUP", 100_000)]


def test_history_filters_by_kind_account_and_dates(api, account, approver, employer):
    other_account = AccountFactory(employer=employer)
    fund(account, 100_000, approver, key="t1")
    services.refund_post(account_id=other_account.pk, amount=5_000, reference="E", idempotency_key="r")
    by_account = api.get(f"/api/v1/ledger/history?account_id={account.pk}").json()["items"]
    assert [i["kind"] for i in by_account] == ["TOPUP"]
    assert [i["amount"] for i in api.get("/api/v1/ledger/history?kind=REFUND").json()["items"]] == [5_000]
    assert api.get("/api/v1/ledger/history?kind=HOLD").json()["total"] == 0
    assert api.get("/api/v1/ledger/history?date_to=2000-01-01").json()["total"] == 0
    assert api.get("/api/v1/ledger/history?date_from=2000-01-01").json()["total"] == 2
    assert error_of(api.get("/api/v1/ledger/history?kind=BOGUS"), 422) == "validation_failed"
    assert error_of(api.get("/api/v1/ledger/history?date_from=yesterday"), 422) == "validation_failed"
    stranger = AccountFactory()
    assert error_of(api.get(f"/api/v1/ledger/history?account_id={stranger.pk}"), 404) == "account_not_found"


def test_history_never_shows_another_employers_rows(api, account, approver):
    stranger = AccountFactory(employer=EmployerFactory())
    fund(stranger, 100_000, approver)
    assert api.get("/api/v1/ledger/history").json()["total"] == 0


def test_history_query_count_does_not_grow_with_the_page(api, account, approver):
    fund(account, 1_000_000, approver, key="t1")
    for i in range(3):
        services.hold_place(account_id=account.pk, amount=100, reference=f"E{i}", idempotency_key=f"s{i}")
    with CaptureQueriesContext(connection) as few:
        api.get("/api/v1/ledger/history")
    for i in range(30):
        services.hold_place(account_id=account.pk, amount=100, reference=f"F{i}", idempotency_key=f"m{i}")
    with CaptureQueriesContext(connection) as many:
        assert len(api.get("/api/v1/ledger/history").json()["items"]) == 34
    assert len(many.captured_queries) == len(few.captured_queries)


def test_an_hr_user_session_reads_the_same_balance(account, employer):
    user = hr_user_create(employer=employer)
    client = APIClient()
    client.force_login(user)
    response = client.get("/api/v1/ledger/balance")
    assert [a["account_id"] for a in response.json()["accounts"]] == [account.pk]


def test_anonymous_callers_are_401(db):
    assert error_of(APIClient().get("/api/v1/ledger/balance"), 401) == "not_authenticated"
    assert error_of(APIClient().post("/api/v1/ledger/topup", {}), 401) == "not_authenticated"


def test_the_schema_documents_the_ledger_endpoints(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/ledger/balance", "/api/v1/ledger/topup", "/api/v1/ledger/history"} <= set(paths)


def test_a_payment_reference_is_declared_once_unless_rejected(api, account, approver):
    body = {"amount": 250_000, "payment_reference": "UTR-88"}
    first = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert error_of(second, 409) == "payment_reference_declared"
    assert second.json()["error"]["details"][0]["message"] == str(first.json()["id"])
    assert TopUp.objects.count() == 1
    from ledger import approvals

    approvals.topup_decide(topup_id=first.json()["id"], approver=approver, approve=False, note="no")
    third = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert third.status_code == 202


def test_topup_takes_an_optional_payment_date_and_proof_note(api, account):
    body = {
        "amount": 100,
        "payment_reference": "UTR-D",
        "payment_date": "2026-01-05",
        "proof_note": "advice #5",
    }
    response = api.post("/api/v1/ledger/topup", body, format="json", HTTP_IDEMPOTENCY_KEY="key-d")
    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["payment_date"], data["proof_note"], data["decision_note"]) == (
        "2026-01-05",
        "advice #5",
        "",
    )
    topup = TopUp.objects.get()
    assert (str(topup.payment_date), topup.proof_note) == ("2026-01-05", "advice #5")


def test_topup_without_them_answers_as_before_with_null_and_empty(api, account):
    response = api.post("/api/v1/ledger/topup", {"amount": 100, "payment_reference": "UTR-E"}, format="json")
    assert response.status_code == 202
    assert (response.json()["payment_date"], response.json()["proof_note"]) == (None, "")


@pytest.mark.parametrize("payment_date", ["2026-02-30", "05/01/2026", 20260105, "2999-01-01"])
def test_topup_with_a_bad_payment_date_is_422_and_writes_nothing(api, account, payment_date):
    body = {"amount": 100, "payment_reference": "UTR-F", "payment_date": payment_date}
    response = api.post("/api/v1/ledger/topup", body, format="json")
    assert error_of(response, 422) == "payment_date_invalid"
    assert response.json()["error"]["details"][0]["field"] == "payment_date"
    assert TopUp.objects.count() == 0
    assert OutboxEvent.objects.count() == 0
