"""The portal's endorsement pages: the filtered, paginated list and each one's timeline."""

import datetime

import pytest
from django.utils import timezone

from endorsements.models import EndorsementBatch, EndorsementRequest, EndorsementTransition
from tests.factories import EmployerFactory, PolicyFactory, hr_user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def hr(client):
    employer = EmployerFactory()
    client.force_login(hr_user_create(employer=employer))
    client.employer = employer
    return client


def endorsement_create(employer, *, code: str, **fields) -> EndorsementRequest:
    values = {
        "employer": employer,
        "type": "ADD",
        "source": "API",
        "state": "VALIDATED",
        "member_data": {"employee_code": code, "relation": "SELF", "first_name": "Asha", "last_name": "Rao"},
        "effective_date": datetime.date(2026, 5, 1),
        "premium_amount": 708_000,
        "tax_amount": 108_000,
        "content_hash": f"hash-{code}",
    }
    values.update(fields)
    return EndorsementRequest.objects.create(**values)


def test_the_list_shows_only_the_employers_endorsements(hr):
    mine = endorsement_create(hr.employer, code="E1")
    theirs = endorsement_create(EmployerFactory(), code="E2")
    response = hr.get("/portal/endorsements/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="/portal/endorsements/{mine.tracking_id}/"' in html
    assert theirs.tracking_id not in html
    assert '<caption id="results-caption">1 endorsement</caption>' in html
    assert '<td class="num">7,080.00</td>' in html


def test_money_names_its_currency_in_the_heading_or_beside_each_figure(hr):
    # given priced endorsements on an INR policy
    rupees = PolicyFactory(employer=hr.employer, currency="INR")
    priced = endorsement_create(hr.employer, code="E1", policy=rupees)
    # then one currency on the page is named once, in the column's heading
    html = hr.get("/portal/endorsements/").content.decode()
    assert '<th scope="col" class="num">Premium (INR)</th>' in html
    assert '<td class="num">7,080.00</td>' in html
    # and the detail page names it beside the figures
    html = hr.get(f"/portal/endorsements/{priced.tracking_id}/").content.decode()
    assert "<dd>₹7,080.00</dd>" in html
    assert "<dd>₹1,080.00</dd>" in html
    # when a second currency joins the page, each figure carries its own
    endorsement_create(hr.employer, code="E2", policy=PolicyFactory(employer=hr.employer, currency="USD"))
    html = hr.get("/portal/endorsements/").content.decode()
    assert '<th scope="col" class="num">Premium</th>' in html
    assert '<td class="num">₹7,080.00</td>' in html
    assert '<td class="num">USD 7,080.00</td>' in html


def test_the_list_filters_by_state_type_employee_and_batch(hr):
    batch = EndorsementBatch.objects.create(employer=hr.employer, source="CSV", file_format="CSV")
    wanted = endorsement_create(
        hr.employer, code="E7", type="DELETE", state="REJECTED", batch=batch, row_number=2
    )
    endorsement_create(hr.employer, code="E7", type="DELETE", state="VALIDATED", batch=batch)
    endorsement_create(hr.employer, code="E8", type="DELETE", state="REJECTED", batch=batch)
    endorsement_create(hr.employer, code="E7", type="ADD", state="REJECTED", batch=batch)
    endorsement_create(hr.employer, code="E7", type="DELETE", state="REJECTED")
    response = hr.get(
        "/portal/endorsements/",
        {"state": "REJECTED", "type": "DELETE", "employee_code": " E7 ", "batch": batch.pk},
    )
    html = response.content.decode()
    assert '<caption id="results-caption">1 endorsement</caption>' in html
    assert wanted.tracking_id in html
    assert '<option value="REJECTED" selected>REJECTED</option>' in html


def test_the_list_filters_by_effective_and_received_dates(hr):
    may = endorsement_create(hr.employer, code="E1", effective_date=datetime.date(2026, 5, 1))
    june = endorsement_create(hr.employer, code="E2", effective_date=datetime.date(2026, 6, 1))
    response = hr.get("/portal/endorsements/", {"effective_from": "2026-05-15", "effective_to": "2026-06-30"})
    html = response.content.decode()
    assert june.tracking_id in html and may.tracking_id not in html
    today = datetime.date.today().isoformat()
    assert hr.get("/portal/endorsements/", {"created_from": today}).context["page"].paginator.count == 2


def listed(hr, **filters) -> list[str]:
    """The employee codes the list shows for these filters, newest first."""
    response = hr.get("/portal/endorsements/", filters)
    assert response.status_code == 200
    return [endorsement.member_data["employee_code"] for endorsement in response.context["page"]]


def test_each_filter_leaves_out_the_rows_it_does_not_match(hr):
    # given additions effective in May, June and July and a deletion effective in June;
    # MAY and DEL came in batch one, JUL in batch two, JUN alone; MAY was received yesterday
    one, two = (
        EndorsementBatch.objects.create(employer=hr.employer, source="CSV", file_format="CSV")
        for _ in range(2)
    )
    endorsement_create(hr.employer, code="MAY", effective_date=datetime.date(2026, 5, 1), batch=one)
    endorsement_create(hr.employer, code="JUN", effective_date=datetime.date(2026, 6, 1))
    endorsement_create(hr.employer, code="JUL", effective_date=datetime.date(2026, 7, 1), batch=two)
    endorsement_create(
        hr.employer, code="DEL", type="DELETE", effective_date=datetime.date(2026, 6, 1), batch=one
    )
    today = timezone.localdate()
    yesterday = today - datetime.timedelta(days=1)
    EndorsementRequest.objects.filter(member_data__employee_code="MAY").update(
        received_at=timezone.make_aware(datetime.datetime.combine(yesterday, datetime.time(12)))
    )
    # then unfiltered, all four are listed, newest first
    assert listed(hr) == ["DEL", "JUL", "JUN", "MAY"]
    # and each filter leaves out what it does not match
    assert listed(hr, type="ADD") == ["JUL", "JUN", "MAY"]
    assert listed(hr, type="DELETE") == ["DEL"]
    assert listed(hr, batch=one.pk) == ["DEL", "MAY"]
    assert listed(hr, batch=two.pk) == ["JUL"]
    assert listed(hr, effective_from="2026-06-01") == ["DEL", "JUL", "JUN"]
    assert listed(hr, effective_to="2026-06-01") == ["DEL", "JUN", "MAY"]
    assert listed(hr, effective_from="2026-06-01", effective_to="2026-06-01", type="ADD") == ["JUN"]
    assert listed(hr, created_from=today.isoformat()) == ["DEL", "JUL", "JUN"]
    assert listed(hr, created_to=yesterday.isoformat()) == ["MAY"]
    assert listed(hr, created_from=yesterday.isoformat(), created_to=yesterday.isoformat()) == ["MAY"]


def test_invalid_filters_are_explained_and_list_nothing(hr):
    endorsement_create(hr.employer, code="E1")
    response = hr.get(
        "/portal/endorsements/",
        {
            "state": "NOPE",
            "effective_from": "2026-13-01",
            "created_from": "2026-06-02",
            "created_to": "2026-06-01",
        },
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Select a valid choice. NOPE is not one of the available choices." in html
    assert "Enter a valid date." in html
    assert "The end date is before the start date." in html
    assert "Correct the filters above to see endorsements." in html
    assert response.context["page"] is None


def test_the_list_is_paginated_with_bounded_queries(hr, settings, django_assert_max_num_queries):
    settings.PORTAL_PAGE_SIZE = 10
    for number in range(25):
        endorsement_create(hr.employer, code=f"E{number:03d}")
    # session, user, membership+employer, count, page
    with django_assert_max_num_queries(5):
        response = hr.get("/portal/endorsements/", {"type": "ADD", "page": 3})
    html = response.content.decode()
    assert "25 endorsements, page 3 of 3" in html
    assert html.count('href="/portal/endorsements/END-') == 5
    assert '<a href="?type=ADD&amp;page=2" rel="prev">Previous</a>' in html


def test_an_endorsement_shows_its_timeline_and_reasons(hr):
    endorsement = endorsement_create(
        hr.employer,
        code="E9",
        state="REJECTED",
        premium_amount=None,
        tax_amount=None,
        rejection_reasons=[
            {"field": "date_of_birth", "code": "age_out_of_range", "message": "Too old for the plan."}
        ],
    )
    EndorsementTransition.objects.create(
        endorsement=endorsement, from_state="", to_state="RECEIVED", actor="client:x"
    )
    EndorsementTransition.objects.create(
        endorsement=endorsement,
        from_state="RECEIVED",
        to_state="REJECTED",
        actor="system:validation",
        reason="age",
    )
    response = hr.get(f"/portal/endorsements/{endorsement.tracking_id}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index("<strong>RECEIVED</strong>") < html.index("<strong>REJECTED</strong>")
    assert "by system:validation" in html
    assert "<code>date_of_birth</code>: Too old for the plan." in html
    assert "not priced<" in html
    assert "not priced yet" not in html
    assert '<tr><th scope="row"><code>employee_code</code></th><td>E9</td></tr>' in html


def test_another_employers_endorsement_is_not_found(hr):
    theirs = endorsement_create(EmployerFactory(), code="E1")
    assert hr.get(f"/portal/endorsements/{theirs.tracking_id}/").status_code == 404
    assert hr.get("/portal/endorsements/END-NOPE/").status_code == 404


def test_a_superseded_endorsement_links_to_its_replacement(hr, django_assert_max_num_queries):
    newer = endorsement_create(hr.employer, code="E5")
    older = endorsement_create(hr.employer, code="E5", state="SUPERSEDED", superseded_by=newer)
    # session, user, membership+employer, endorsement (with its replacement), transitions
    with django_assert_max_num_queries(5):
        html = hr.get(f"/portal/endorsements/{older.tracking_id}/").content.decode()
    assert f'<dt>Replaced by</dt><dd><a href="/portal/endorsements/{newer.tracking_id}/">' in html


def test_a_dependants_linked_deletion_links_to_the_employees(hr, django_assert_max_num_queries):
    employee = endorsement_create(hr.employer, code="E6", type="DELETE", premium_amount=-83_408)
    spouse = endorsement_create(
        hr.employer, code="E6", type="DELETE", premium_amount=-83_408, linked_to=employee
    )
    # session, user, membership+employer, endorsement (with the employee's), transitions
    with django_assert_max_num_queries(5):
        html = hr.get(f"/portal/endorsements/{spouse.tracking_id}/").content.decode()
    assert (
        f'<dt>Deleted with the employee</dt><dd><a href="/portal/endorsements/{employee.tracking_id}/">'
        in html
    )
    assert (
        "Deleted with the employee"
        not in hr.get(f"/portal/endorsements/{employee.tracking_id}/").content.decode()
    )
