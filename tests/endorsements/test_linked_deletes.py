"""Linked DELETEs (`endorsements.linked_deletes`): an employee's validated deletion takes each
covered dependant along, priced as a deletion, stored with the set through its write path.

The policy runs from T-120 to T+244 (365 days); covers started on its first day. The
employee and the spouse are 30 (₹12,000 a year at 5 lakh), the child 5 (₹6,000); a
deletion effective T+30 refunds 215/365 of the year, plus 18% tax.
"""

import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endorsements.models import Coverage, EndorsementBatch, EndorsementRequest, PlanRate
from tests.endorsements.test_batch_submit import csv_text
from tests.pipeline.activation_helpers import submitted

T_PLUS_30 = datetime.timedelta(days=30)


def born(today: datetime.date, years: int) -> datetime.date:
    """A birthday `years` (and 200 days) before the first of this month: that age at the policy start."""
    return datetime.date(today.year - years, today.month, 1) - datetime.timedelta(days=200)


@pytest.fixture
def family(book):
    """E1 with a spouse (Ravi) and a child (Mira), all three covered."""
    employee = book.covered_member(code="E1", first_name="Asha", date_of_birth=born(book.today, 30))
    spouse = book.covered_member(
        code="E1",
        relation="SPOUSE",
        primary=employee,
        first_name="Ravi",
        last_name="",
        date_of_birth=born(book.today, 30),
    )
    child = book.covered_member(
        code="E1", relation="CHILD", primary=employee, first_name="Mira", date_of_birth=born(book.today, 5)
    )
    return employee, spouse, child


@pytest.fixture
def submit(book):
    return lambda row: submitted(book, row)


def deletion(book, relation: str = "SELF", **more) -> dict:
    return {
        "action": "DELETE",
        "employee_code": "E1",
        "relation": relation,
        "effective_date": (book.today + T_PLUS_30).isoformat(),
        "policy_number": book.policy.number,
        **more,
    }


def deletions():
    """Every DELETE stored: (member, state, effective date, premium, tax, linked to (tracking id))."""
    return list(
        EndorsementRequest.objects.filter(type="DELETE")
        .order_by("pk")
        .values_list(
            "member__first_name",
            "state",
            "effective_date",
            "premium_amount",
            "tax_amount",
            "linked_to__tracking_id",
        )
    )


def test_an_employee_deletion_deletes_each_covered_dependant_with_a_refund(book, family, submit, api):
    employee = submit(deletion(book))
    effective = book.today + T_PLUS_30

    # 1,200,000 × 215/365 = 706,849 (+ tax 127,233) back each for Asha and Ravi; for Mira
    # 600,000 × 215/365 = 353,425 (+ tax 63,616.5 -> 63,617).
    assert deletions() == [
        ("Asha", "VALIDATED", effective, -834_082, -127_233, None),
        ("Ravi", "VALIDATED", effective, -834_082, -127_233, employee.tracking_id),
        ("Mira", "VALIDATED", effective, -417_042, -63_617, employee.tracking_id),
    ]
    spouse_delete = EndorsementRequest.objects.get(member=family[1])
    assert spouse_delete.member_data == {
        "action": "DELETE",
        "employee_code": "E1",
        "relation": "SPOUSE",
        "first_name": "Ravi",
        "date_of_birth": born(book.today, 30).isoformat(),
        "effective_date": effective.isoformat(),
        "policy_number": book.policy.number.upper(),
    }
    assert (spouse_delete.source, spouse_delete.member_key, spouse_delete.policy_id) == (
        "API",
        "E1|SPOUSE",
        book.policy.pk,
    )
    assert [(s.from_state, s.to_state) for s in spouse_delete.history()] == [
        ("", "RECEIVED"),
        ("RECEIVED", "VALIDATED"),
    ]
    # The API names the employee's deletion on the dependant's, in the list and the detail.
    detail = api.get(f"/api/v1/endorsements/{spouse_delete.tracking_id}").json()
    assert (detail["linked_to"], detail["premium_amount"]) == (employee.tracking_id, -834_082)
    listed = {
        item["tracking_id"]: item["linked_to"] for item in api.get("/api/v1/endorsements/").json()["items"]
    }
    assert listed == {
        employee.tracking_id: None,
        spouse_delete.tracking_id: employee.tracking_id,
        EndorsementRequest.objects.get(member=family[2]).tracking_id: employee.tracking_id,
    }


def test_a_dependant_already_being_deleted_is_not_deleted_twice(book, family, submit):
    spouse = submit(
        deletion(
            book, relation="SPOUSE", effective_date=(book.today + datetime.timedelta(days=20)).isoformat()
        )
    )
    assert spouse.state == "VALIDATED"

    employee = submit(deletion(book))

    assert [(name, state, linked) for name, state, _e, _p, _t, linked in deletions()] == [
        ("Ravi", "VALIDATED", None),
        ("Asha", "VALIDATED", None),
        ("Mira", "VALIDATED", employee.tracking_id),
    ]


def test_a_dependant_without_open_cover_is_left_alone(book, family, submit):
    Coverage.objects.filter(member=family[2]).update(status=Coverage.Status.ENDED, end_date=book.today)
    submit(deletion(book))
    assert [name for name, *_rest in deletions()] == ["Asha", "Ravi"]


def test_a_file_that_deletes_a_dependant_itself_gets_only_the_others_linked(
    book, family, api, django_capture_on_commit_callbacks
):
    content = csv_text([deletion(book, relation="SPOUSE", first_name="Ravi"), deletion(book)]).encode()
    upload = SimpleUploadedFile("leavers.csv", content, content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/endorsements/batch", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content

    batch = EndorsementBatch.objects.get()
    employee = EndorsementRequest.objects.get(member=family[0])
    effective = book.today + T_PLUS_30
    assert deletions() == [
        ("Ravi", "VALIDATED", effective, -834_082, -127_233, None),
        ("Asha", "VALIDATED", effective, -834_082, -127_233, None),
        ("Mira", "VALIDATED", effective, -417_042, -63_617, employee.tracking_id),
    ]
    child = EndorsementRequest.objects.get(member=family[2])
    # Stored with the employee's batch and row, but not counted as a row of the file.
    assert (child.batch_id, child.row_number, child.source) == (batch.pk, employee.row_number, "CSV")
    assert (batch.state, batch.rows_total, batch.accepted_count, batch.rejected_count) == (
        "COMPLETED",
        2,
        2,
        0,
    )
    assert [(s.from_state, s.to_state) for s in child.history()] == [
        ("", "RECEIVED"),
        ("RECEIVED", "VALIDATED"),
    ]


def test_linked_deletions_go_with_the_employees_when_it_is_superseded(book, family, submit):
    # Given the employee's deletion (T+30) took the dependants along ...
    first = submit(deletion(book))
    followers = list(EndorsementRequest.objects.filter(linked_to=first).order_by("pk"))
    # ... when HR sends a newer deletion of the employee (T+10) before it went out,
    earlier = book.today + datetime.timedelta(days=10)
    second = submit(deletion(book, effective_date=earlier.isoformat()))

    # then the dependants' deletions follow it: the old ones superseded with the employee's,
    # new ones linked to the new deletion, at its date (1,200,000 × 235/365 = 772,603 back,
    # tax 139,069; the child 600,000 × 235/365 = 386,301.4 -> 386,301, tax 69,534).
    assert [
        (r.state, r.superseded_by_id)
        for r in EndorsementRequest.objects.filter(pk__in=[first.pk, *[f.pk for f in followers]]).order_by(
            "pk"
        )
    ] == [
        ("SUPERSEDED", second.pk),
        ("SUPERSEDED", second.pk),
        ("SUPERSEDED", second.pk),
    ]
    assert [d for d in deletions() if d[1] == "VALIDATED"] == [
        ("Asha", "VALIDATED", earlier, -911_672, -139_069, None),
        ("Ravi", "VALIDATED", earlier, -911_672, -139_069, second.tracking_id),
        ("Mira", "VALIDATED", earlier, -455_835, -69_534, second.tracking_id),
    ]


def test_a_dependant_whose_cover_begins_later_is_deleted_from_its_start(book, family, submit):
    later = book.today + datetime.timedelta(days=40)
    Coverage.objects.filter(member=family[2]).update(start_date=later)
    employee = submit(deletion(book))
    child = EndorsementRequest.objects.get(member=family[2])
    # Effective on its cover's start (a cover never in force: voided on activation), the
    # whole charge back: 600,000 × 205/365 = 336,986 and tax 60,657.
    assert (child.linked_to_id, child.effective_date, child.premium_amount, child.tax_amount) == (
        employee.pk,
        later,
        -397_643,
        -60_657,
    )


def test_a_later_chunk_that_deletes_the_dependant_itself_replaces_the_linked_deletion(
    book, family, api, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("endorsements.services.batches.CHUNK_ROWS", 1)
    content = csv_text([deletion(book), deletion(book, relation="SPOUSE", first_name="Ravi")]).encode()
    upload = SimpleUploadedFile("leavers.csv", content, content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/endorsements/batch", {"file": upload}, format="multipart").status_code == 202

    spouse = list(
        EndorsementRequest.objects.filter(member=family[1])
        .order_by("pk")
        .values_list("state", "row_number", "linked_to__member__first_name", "superseded_by__row_number")
    )
    # the linked one (chunk 1, the employee's row 2) replaced by the file's own row 3
    assert spouse == [("SUPERSEDED", 2, "Asha", 3), ("VALIDATED", 3, None, None)]
    assert EndorsementBatch.objects.get().accepted_count == 2


def test_a_dependant_the_rate_card_no_longer_prices_is_rejected_with_its_reason(book, family, submit):
    PlanRate.objects.filter(plan=book.plan, relation="CHILD").delete()
    employee = submit(deletion(book))
    child = EndorsementRequest.objects.get(member=family[2])
    assert (child.state, child.linked_to_id, child.premium_amount) == ("REJECTED", employee.pk, None)
    assert child.rejection_reasons == [
        {
            "field": "sum_insured",
            "code": "rate_not_found",
            "message": "The cover's plan has no rate for this member.",
        }
    ]
    assert [(s.to_state, s.reason) for s in child.history()] == [
        ("RECEIVED", ""),
        ("REJECTED", ""),
    ]
    # the employee and the spouse go on
    assert [state for _name, state, *_rest in deletions()] == ["VALIDATED", "VALIDATED", "REJECTED"]
