"""`POST /api/v1/endorsements/` (services.endorsement_submit) and the reads beside it."""

import datetime
import hashlib
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from ems.models import IdempotencyRecord, OutboxEvent
from endorsements.models import EndorsementBatch, EndorsementRequest, EndorsementTransition
from endorsements.serializers import EndorsementSerializer
from tests.factories import EmployerFactory, api_client_create

URL = "/api/v1/endorsements/"


def post(api, body, capture, **headers):
    with capture(execute=True):
        return api.post(URL, body, format="json", **headers)


def nothing_written():
    assert EndorsementRequest.objects.count() == 0
    assert EndorsementTransition.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_a_valid_addition_is_received_then_validated_with_its_premium(
    api, book, django_capture_on_commit_callbacks
):
    # given a new joiner aged 46 on a ₹18,000 (36-65, 5 lakh) rate, effective today,
    # with 245 of the policy's 365 days left
    row = book.add_row(date_of_birth="1980-01-01")
    # when
    response = post(api, row, django_capture_on_commit_callbacks)
    # then the answer is RECEIVED with a tracking id
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "RECEIVED"
    assert body["tracking_id"].startswith("END-") and len(body["tracking_id"]) == 30
    assert response["Location"] == f"{URL}{body['tracking_id']}"
    # and after commit it is VALIDATED: 1,800,000 × 245 / 365 = 1,208,219.18 -> 1,208,219;
    # tax 217,479.42 -> 217,479; total 1,425,698
    request = EndorsementRequest.objects.get()
    assert request.state == "VALIDATED"
    assert request.premium_amount == 1_425_698
    assert request.tax_amount == 217_479
    assert request.policy_id == book.policy.pk
    assert request.member_key == "E1001|SELF"
    assert list(request.transitions.values_list("from_state", "to_state")) == [
        ("", "RECEIVED"),
        ("RECEIVED", "VALIDATED"),
    ]
    events = list(
        OutboxEvent.objects.filter(destination="ems.endorsements")
        .order_by("id")
        .values_list("key", "payload")
    )
    assert [(key, payload["type"]) for key, payload in events] == [
        (request.tracking_id, "endorsement.received"),
        (request.tracking_id, "endorsement.validated"),
    ]
    assert events[1][1]["data"]["premium_amount"] == 1_425_698
    assert OutboxEvent.objects.filter(destination="audit_logs").count() == 2


def test_the_detail_shows_the_full_state_history(api, book, django_capture_on_commit_callbacks):
    tracking_id = post(api, book.add_row(), django_capture_on_commit_callbacks).json()["tracking_id"]
    response = api.get(f"{URL}{tracking_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "VALIDATED"
    assert [(t["from_state"], t["to_state"], t["actor"]) for t in body["transitions"]] == [
        ("", "RECEIVED", f"client:{api.api_client.client_id}"),
        ("RECEIVED", "VALIDATED", "system:validation"),
    ]


def test_the_same_idempotency_key_and_body_replays_the_first_answer(
    api, book, django_capture_on_commit_callbacks
):
    row = book.add_row()
    first = post(api, row, django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(api, row, django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again["Location"] == first["Location"] == f"/api/v1/endorsements/{first.json()['tracking_id']}"
    assert EndorsementRequest.objects.count() == 1
    assert EndorsementRequest.objects.get().idempotency_key == "k-1"


def test_the_same_idempotency_key_with_another_body_is_refused(api, book, django_capture_on_commit_callbacks):
    post(api, book.add_row(), django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-2")
    outbox = OutboxEvent.objects.count()
    response = post(
        api, book.add_row(employee_code="E2"), django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-2"
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert EndorsementRequest.objects.count() == 1
    assert OutboxEvent.objects.count() == outbox


def test_a_key_still_in_flight_is_refused_with_409(api, book, django_capture_on_commit_callbacks):
    # given the same body is being processed under this key right now
    row = book.add_row()
    digest = hashlib.sha256(b"POST" + URL.encode() + JSONRenderer().render(row)).hexdigest()
    IdempotencyRecord.objects.create(
        caller=f"client:{api.api_client.client_id}",
        scope="endorsements.create",
        key="k-3",
        request_hash=digest,
    )
    # when it is sent again
    response = post(api, row, django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-3")
    # then
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_flight"
    nothing_written()


def test_a_bad_body_is_refused_field_by_field_and_nothing_is_written(
    api, book, django_capture_on_commit_callbacks
):
    row = book.add_row(date_of_birth="31/02/2026", sum_insured="-5", phone="12345", salary="x")
    response = post(api, row, django_capture_on_commit_callbacks)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "endorsement_invalid"
    assert error["details"] == [
        {
            "field": "date_of_birth",
            "code": "date_format",
            "message": "'31/02/2026' is not a date in the form YYYY-MM-DD.",
        },
        {
            "field": "phone",
            "code": "phone_invalid",
            "message": "Use the E.164 form: + then 7 to 15 digits, e.g. +919812345678.",
        },
        {"field": "sum_insured", "code": "sum_insured_not_positive", "message": "Must be more than zero."},
        {"field": "salary", "code": "column_unknown", "message": "Unknown column 'salary'."},
    ]
    nothing_written()


@pytest.mark.parametrize("body", [[{"action": "ADD"}], "ADD", 5])
def test_a_body_that_is_not_an_object_is_refused(api, book, django_capture_on_commit_callbacks, body):
    response = post(api, body, django_capture_on_commit_callbacks)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "endorsement_invalid"
    assert response.json()["error"]["message"] == "The body must be a JSON object of column: value."
    nothing_written()


def test_nested_junk_in_a_body_is_refused(api, book, django_capture_on_commit_callbacks):
    response = post(
        api, book.add_row(first_name={"$gt": ""}, last_name=["Rao"]), django_capture_on_commit_callbacks
    )
    assert response.status_code == 422
    assert [(d["field"], d["code"]) for d in response.json()["error"]["details"]] == [
        ("first_name", "value_not_scalar"),
        ("last_name", "value_not_scalar"),
    ]
    nothing_written()


def test_unpaired_surrogates_in_a_body_are_refused_by_name(api, book, django_capture_on_commit_callbacks):
    # JSON may escape a lone surrogate ("\\ud800"): not text, and not storable as jsonb
    body = json.dumps({**book.add_row(last_name="Rao\ud800"), "x\udce9": "1"})  # ASCII, escaped
    assert "\\ud800" in body
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, body, content_type="application/json")
    assert response.status_code == 422
    assert [(d["field"], d["code"]) for d in response.json()["error"]["details"]] == [
        ("last_name", "encoding_invalid"),
        ("x\ufffd", "column_unknown"),
    ]
    nothing_written()


def test_without_a_token_nothing_is_accepted(book, django_capture_on_commit_callbacks):
    response = post(APIClient(), book.add_row(), django_capture_on_commit_callbacks)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    nothing_written()


def other_employer_api():
    client, secret = api_client_create(employer=EmployerFactory())
    http = APIClient()
    token = http.post(
        "/api/v1/auth/token",
        {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
        format="json",
    ).json()["access_token"]
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return http


def test_a_token_of_another_employer_sees_nothing_and_cannot_use_this_policy(
    api, book, django_capture_on_commit_callbacks
):
    tracking_id = post(api, book.add_row(), django_capture_on_commit_callbacks).json()["tracking_id"]
    other = other_employer_api()
    assert other.get(f"{URL}{tracking_id}").status_code == 404
    assert other.get(f"{URL}{tracking_id}").json()["error"]["code"] == "endorsement_not_found"
    assert other.get(URL).json()["total"] == 0
    # the other employer naming this employer's policy gets a rejection, not this policy
    other_id = post(other, book.add_row(), django_capture_on_commit_callbacks).json()["tracking_id"]
    rejected = EndorsementRequest.objects.get(tracking_id=other_id)
    assert rejected.state == "REJECTED"
    assert rejected.policy_id is None
    assert rejected.rejection_reasons == [
        {
            "field": "policy_number",
            "code": "policy_not_found",
            "message": "No active policy GHP-2026-001 at this employer.",
        }
    ]


def test_the_list_is_paginated_filtered_and_costs_a_fixed_number_of_queries(
    api, book, django_capture_on_commit_callbacks
):
    for n in range(3):
        post(api, book.add_row(employee_code=f"E{n}"), django_capture_on_commit_callbacks)
    post(api, book.add_row(employee_code="E9", plan_code="NOPE"), django_capture_on_commit_callbacks)
    with CaptureQueriesContext(connection) as queries:
        response = api.get(URL, {"page_size": 2})
    body = response.json()
    assert response.status_code == 200
    assert body["total"] == 4 and body["page_size"] == 2 and len(body["items"]) == 2
    assert 'rel="next"' in response["Link"]
    few = len(queries)
    with CaptureQueriesContext(connection) as queries:
        api.get(URL, {"page_size": 4})
    assert len(queries) == few
    assert [i["employee_code"] for i in api.get(URL, {"state": "REJECTED"}).json()["items"]] == ["E9"]
    assert [i["employee_code"] for i in api.get(URL, {"employee_code": "E1"}).json()["items"]] == ["E1"]
    today = book.today.isoformat()
    assert api.get(URL, {"effective_from": today, "effective_to": today, "type": "ADD"}).json()["total"] == 4
    tomorrow = (book.today + datetime.timedelta(days=1)).isoformat()
    assert api.get(URL, {"created_from": tomorrow}).json()["total"] == 0
    bad = api.get(URL, {"state": "NOPE", "effective_from": "31/02/2026"})
    assert bad.status_code == 422
    assert sorted(d["field"] for d in bad.json()["error"]["details"]) == ["effective_from", "state"]


def test_the_created_body_is_the_endorsement_as_a_fresh_serializer_renders_it(api, book):
    # given two additions answered by the view's one shared serializer (still RECEIVED:
    # validation waits for a commit that this test's transaction never makes)
    first = api.post(URL, book.add_row(), format="json")
    second = api.post(URL, book.add_row(employee_code="E1002"), format="json")
    # then each body is exactly what a serializer made for that endorsement renders
    for response in (first, second):
        assert response.status_code == 201
        stored = EndorsementRequest.objects.get(tracking_id=response.json()["tracking_id"])
        assert stored.state == "RECEIVED"
        assert response.json() == EndorsementSerializer(stored).data


def test_the_row_its_policy_history_event_and_audit_record_are_written_in_one_statement(api, book):
    # given a valid addition naming its policy in lower case
    row = book.add_row(policy_number=book.policy.number.lower())
    # when it is submitted (validation is left for later: no on-commit callbacks run)
    with CaptureQueriesContext(connection) as queries:
        response = api.post(URL, row, format="json")
    # then one statement wrote the row with its policy, the history record and the outbox rows
    assert response.status_code == 201
    writes = [q["sql"] for q in queries if "endorsements_endorsementrequest" in q["sql"]]
    assert len(writes) == 1 and writes[0].startswith("WITH first_row AS (INSERT INTO")
    request = EndorsementRequest.objects.get(tracking_id=response.json()["tracking_id"])
    assert request.policy_id == book.policy.pk
    [(to_state, actor)] = request.transitions.values_list("to_state", "actor")
    assert to_state == "RECEIVED" and actor.startswith("client:")
    destinations = sorted(OutboxEvent.objects.values_list("destination", flat=True))
    assert destinations == ["audit_logs", "ems.endorsements"]


def test_an_unknown_policy_number_is_received_without_a_policy_then_rejected(
    api, book, django_capture_on_commit_callbacks
):
    response = post(api, book.add_row(policy_number="NOPE-1"), django_capture_on_commit_callbacks)
    assert response.status_code == 201
    request = EndorsementRequest.objects.get()
    assert request.state == "REJECTED"
    assert [reason["code"] for reason in request.rejection_reasons] == ["policy_not_found"]


def listed(api, **filters) -> list[str]:
    """The employee codes the list shows for these filters, newest first."""
    response = api.get(URL, filters)
    assert response.status_code == 200, response.content
    return [item["employee_code"] for item in response.json()["items"]]


def test_each_list_filter_leaves_out_the_rows_it_does_not_match(
    api, book, django_capture_on_commit_callbacks
):
    # given additions effective today (E1), yesterday (E2) and tomorrow (E3), and a deletion
    # effective today (D1); E1 and D1 came in batch one, E2 in batch two, E3 alone; E2 was
    # received yesterday, the rest today
    yesterday, tomorrow = book.today - datetime.timedelta(days=1), book.today + datetime.timedelta(days=1)
    today = book.today.isoformat()
    book.covered_member(code="D1")
    for code, effective in (("E1", book.today), ("E2", yesterday), ("E3", tomorrow)):
        post(
            api,
            book.add_row(employee_code=code, effective_date=effective.isoformat()),
            django_capture_on_commit_callbacks,
        )
    deletion = {
        "action": "DELETE",
        "employee_code": "D1",
        "relation": "SELF",
        "policy_number": book.policy.number,
    }
    post(api, {**deletion, "effective_date": today}, django_capture_on_commit_callbacks)
    one, two = (
        EndorsementBatch.objects.create(employer=book.employer, source="API", file_format="CSV")
        for _ in range(2)
    )
    requests = EndorsementRequest.objects.all()
    requests.filter(member_data__employee_code__in=["E1", "D1"]).update(batch=one)
    requests.filter(member_data__employee_code="E2").update(
        batch=two, received_at=timezone.make_aware(datetime.datetime.combine(yesterday, datetime.time(12)))
    )
    # then unfiltered, all four are listed, newest first
    assert listed(api) == ["D1", "E3", "E1", "E2"]
    # and each filter leaves out what it does not match
    assert listed(api, type="ADD") == ["E3", "E1", "E2"]
    assert listed(api, type="DELETE") == ["D1"]
    assert listed(api, batch=one.pk) == ["D1", "E1"]
    assert listed(api, batch=two.pk) == ["E2"]
    assert listed(api, effective_from=today) == ["D1", "E3", "E1"]
    assert listed(api, effective_to=today) == ["D1", "E1", "E2"]
    assert listed(api, effective_from=today, effective_to=today, type="ADD") == ["E1"]
    assert listed(api, created_from=today) == ["D1", "E3", "E1"]
    assert listed(api, created_to=yesterday.isoformat()) == ["E2"]
    assert listed(api, created_from=today, created_to=today, batch=one.pk, type="DELETE") == ["D1"]


def test_every_body_with_an_amount_names_its_currency(api, book, django_capture_on_commit_callbacks):
    # given a priced addition (on an INR policy) and one still unpriced (rejected: no such plan)
    priced = post(api, book.add_row(date_of_birth="1980-01-01"), django_capture_on_commit_callbacks)
    unpriced = post(
        api, book.add_row(employee_code="E9", plan_code="NOPE"), django_capture_on_commit_callbacks
    )
    # then the created body is not priced yet, so it names no currency
    assert (priced.json()["premium_amount"], priced.json()["currency"]) == (None, None)
    # and the detail and the list carry the policy's currency beside the minor units
    detail = api.get(f"{URL}{priced.json()['tracking_id']}").json()
    assert (detail["premium_amount"], detail["tax_amount"], detail["currency"]) == (1_425_698, 217_479, "INR")
    items = {item["tracking_id"]: item for item in api.get(URL).json()["items"]}
    assert items[priced.json()["tracking_id"]]["currency"] == "INR"
    assert items[unpriced.json()["tracking_id"]]["premium_amount"] is None
    assert items[unpriced.json()["tracking_id"]]["currency"] is None
