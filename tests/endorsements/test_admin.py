"""The operations admin for insurers and the endorsements app, through the admin's own pages.

Each ops role logs in and opens every registered model's list and add page; rows that only
services write are read-only; secrets never appear; change lists cost a fixed number of
queries however many rows they show.
"""

import datetime
import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ems.models import ApiClient, Employer, EmployerMembership
from ems.roles import OPERATIONS_APP_LABELS, ROLE_NAMES
from endorsements.demo_data import demo_seed
from endorsements.models import (
    BatchRowError,
    Coverage,
    EndorsementBatch,
    EndorsementRequest,
    EndorsementTransition,
    Member,
    Plan,
    PlanRate,
    Policy,
)
from insurers.models import Insurer
from tests.factories import (
    CoverageFactory,
    InsurerFactory,
    MemberFactory,
    PlanFactory,
    UserFactory,
)
from tests.insurers.test_insurer_settings_save import INSURER_FORM

pytestmark = pytest.mark.django_db

# the models whose admin this area owns, and whether a superuser may add them here
CONFIGURATION = (Insurer, Employer, EmployerMembership, ApiClient, Policy, Plan, PlanRate)
SERVICE_WRITTEN = (
    Member,
    Coverage,
    EndorsementBatch,
    EndorsementRequest,
    BatchRowError,
    EndorsementTransition,
)
OWNED = CONFIGURATION + SERVICE_WRITTEN
# service-written models whose "add" is the admin's intake page (tests/endorsements/test_admin_intake.py)
INTAKE = (EndorsementBatch, EndorsementRequest)


def ops_user(role: str):
    user = UserFactory(username=f"test-{role}", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def registered_operations_models() -> list:
    return sorted(
        (model for model in admin.site._registry if model._meta.app_label in OPERATIONS_APP_LABELS),
        key=lambda model: model._meta.label,
    )


def pipeline_rows(count: int, *, errors_per_batch: int = 2) -> list[EndorsementRequest]:
    """`count` endorsement requests, each with its own employer, policy, member and batch."""
    requests = []
    for number in range(count):
        coverage = CoverageFactory(member=MemberFactory(), plan=PlanFactory())
        employer = coverage.member.employer
        coverage.plan.policy.employer = employer
        coverage.plan.policy.save(update_fields=["employer"])
        batch = EndorsementBatch.objects.create(
            employer=employer, source="CSV", file_name=f"joiners-{number}.csv", file_format="CSV"
        )
        BatchRowError.objects.bulk_create(
            BatchRowError(
                batch=batch, row_number=row, column="dob", code="date_invalid", message="not a date"
            )
            for row in range(2, 2 + errors_per_batch)
        )
        request = EndorsementRequest.objects.create(
            employer=employer,
            policy=coverage.policy,
            member=coverage.member,
            type="ADD",
            member_data={"employee_code": coverage.member.employee_code},
            premium_amount=708_000 + number,
            tax_amount=108_000,
            content_hash=f"{number:064d}",
            source="CSV",
            batch=batch,
            row_number=2,
        )
        EndorsementTransition.objects.create(
            endorsement=request, from_state="", to_state="RECEIVED", actor="test"
        )
        requests.append(request)
    return requests


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_ops_role_sees_every_operations_change_list_and_adds_only_through_intake(client, role):
    # given: an ops user of the role
    client.force_login(ops_user(role))
    models = registered_operations_models()
    assert set(OWNED) <= set(models)
    # when / then
    changelists = {
        model._meta.label: client.get(admin_url(model, "changelist")).status_code for model in models
    }
    assert changelists == {model._meta.label: 200 for model in models}
    add_pages = {model._meta.label: client.get(admin_url(model, "add")).status_code for model in models}
    sends = role == "ops_operator"
    assert add_pages == {model._meta.label: 200 if sends and model in INTAKE else 403 for model in models}


def test_a_staff_user_without_a_group_is_refused_every_change_list(client):
    client.force_login(UserFactory(is_staff=True))
    statuses = {model._meta.label: client.get(admin_url(model, "changelist")).status_code for model in OWNED}
    assert statuses == {model._meta.label: 403 for model in OWNED}


def test_a_superuser_adds_configuration_and_intake_but_not_what_services_write(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    statuses = {model._meta.label: client.get(admin_url(model, "add")).status_code for model in OWNED}
    assert statuses == {
        **{model._meta.label: 200 for model in CONFIGURATION + INTAKE},
        **{model._meta.label: 403 for model in SERVICE_WRITTEN if model not in INTAKE},
    }


def test_the_viewer_opens_each_row_read_only(client):
    # given: demo data and a pipeline row, and the viewer logged in
    demo_seed()
    pipeline_rows(1)
    client.force_login(ops_user("ops_viewer"))
    for model in OWNED:
        obj = model.objects.order_by("pk").first()
        # when
        response = client.get(admin_url(model, "change", obj.pk))
        # then
        assert response.status_code == 200, model
        assert b'name="_save"' not in response.content, model
        assert client.post(admin_url(model, "change", obj.pk), {}).status_code == 403, model


def test_endorsement_requests_and_batches_are_read_only_even_for_a_superuser(client):
    # given
    request = pipeline_rows(1)[0]
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for model, obj in ((EndorsementRequest, request), (EndorsementBatch, request.batch)):
        # when
        page = client.get(admin_url(model, "change", obj.pk))
        posted = client.post(admin_url(model, "change", obj.pk), {"state": "ACTIVE"})
        # then
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        assert posted.status_code == 403
        assert client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    request.refresh_from_db()
    assert request.state == "RECEIVED"


def test_the_endorsement_page_shows_money_with_two_decimals_and_the_timeline(client):
    request = pipeline_rows(1)[0]
    client.force_login(ops_user("ops_viewer"))
    page = client.get(admin_url(EndorsementRequest, "change", request.pk)).content.decode()
    assert "₹7,080.00" in page
    assert "₹1,080.00" in page
    assert "<td>—</td><td>RECEIVED</td><td>test</td>" in page
    listing = client.get(admin_url(EndorsementRequest, "changelist")).content.decode()
    assert request.tracking_id in listing
    assert "₹7,080.00" in listing


def test_the_endorsement_page_shows_a_file_rows_compact_intake_step_as_its_two_moves(client):
    request = pipeline_rows(1)[0]
    EndorsementTransition.objects.filter(endorsement=request).delete()
    EndorsementTransition.objects.create(
        endorsement=request,
        from_state="",
        to_state="REJECTED",
        actor=f"batch:{request.batch_id}",
        reason="duplicate",
    )
    client.force_login(ops_user("ops_viewer"))
    page = client.get(admin_url(EndorsementRequest, "change", request.pk)).content.decode()
    assert f"<td>—</td><td>RECEIVED</td><td>batch:{request.batch_id}</td><td></td>" in page
    assert "<td>RECEIVED</td><td>REJECTED</td><td>system:validation</td><td>duplicate</td>" in page


def test_a_batch_page_shows_the_first_hundred_row_errors_and_links_to_all(client):
    request = pipeline_rows(1, errors_per_batch=130)[0]
    client.force_login(ops_user("ops_viewer"))
    page = client.get(admin_url(EndorsementBatch, "change", request.batch.pk)).content.decode()
    assert page.count('<td class="field-code">') == 100
    assert f"?batch__id__exact={request.batch.pk}" in page
    assert "130 row error(s)" in page


def test_searches_and_filters_answer(client):
    demo_seed()
    request = pipeline_rows(1)[0]
    client.force_login(ops_user("ops_operator"))
    queries = {
        Employer: "?q=acme",
        Member: "?q=ACM0001&relation__exact=SELF",
        Coverage: "?q=GHI-ACME-001&status__exact=ACTIVE",
        Policy: "?q=bluepeak",
        Plan: "?q=STD",
        PlanRate: "?relation__exact=CHILD",
        ApiClient: "?q=cli_demo&is_active__exact=1",
        EndorsementRequest: f"?q={request.tracking_id}&state__exact=RECEIVED",
        EndorsementBatch: f"?q={request.batch.pk}",
        BatchRowError: "?code=date_invalid",
        EndorsementTransition: f"?q={request.tracking_id}",
        Insurer: "?protocol__exact=SOAP",
    }
    for model, query in queries.items():
        response = client.get(admin_url(model, "changelist") + query)
        assert response.status_code == 200, model
        assert response.context["cl"].result_count >= 1, model
    found = client.get(admin_url(Member, "changelist") + "?q=ACM0001&relation__exact=SELF")
    assert [member.employee_code for member in found.context["cl"].result_list] == ["ACM0001"]


# --- insurers: secrets masked -------------------------------------------------------------


def test_insurer_webhook_secrets_and_credentials_are_never_shown(client):
    # given
    insurer = InsurerFactory(
        webhook_secret_primary="whsec_primary_0123456789abcdefWXYZ",
        webhook_secret_secondary="whsec_previous_0123456789abcdQRST",
        credentials={"password": "hunter2-very-secret"},
    )
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    # when
    listing = client.get(admin_url(Insurer, "changelist")).content.decode()
    page = client.get(admin_url(Insurer, "change", insurer.pk)).content.decode()
    # then
    for html in (listing, page):
        assert "whsec_primary_0123456789abcdef" not in html
        assert "whsec_previous_0123456789abcd" not in html
        assert "hunter2-very-secret" not in html
    assert "••••••••WXYZ" in listing
    assert "(+••••••••QRST)" in listing
    assert "••••••••WXYZ" in page
    assert "password: ••••••••" in page


def test_a_superuser_adds_an_insurer_with_its_webhook_secret(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        admin_url(Insurer, "add"),
        {
            **INSURER_FORM,
            "code": "newins",
            "name": "New Insurer",
            "protocol": "REST",
            "endpoint_url": "http://127.0.0.1:8000/sandbox/rest/",
            "webhook_secret_primary": "whsec_added_in_admin_0123456789",
            "webhook_secret_secondary": "",
            "credentials": "{}",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    insurer = Insurer.objects.get(code="newins")
    assert insurer.webhook_secret_primary == "whsec_added_in_admin_0123456789"
    assert insurer.circuit_state == "CLOSED"


# --- query counts -----------------------------------------------------------------------------


def changelist_queries(client, model) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize(
    "model",
    [
        EndorsementRequest,
        EndorsementBatch,
        BatchRowError,
        EndorsementTransition,
        Coverage,
        Member,
        Policy,
        Plan,
    ],
)
def test_change_list_queries_do_not_grow_with_rows(client, model):
    # given: a few rows, then many
    client.force_login(ops_user("ops_viewer"))
    pipeline_rows(3)
    few = changelist_queries(client, model)
    pipeline_rows(27)
    # when / then
    many = changelist_queries(client, model)
    assert many == few


def test_endorsement_request_change_list_is_bounded(client, django_assert_max_num_queries):
    pipeline_rows(40)
    client.force_login(ops_user("ops_operator"))
    with django_assert_max_num_queries(14):
        response = client.get(admin_url(EndorsementRequest, "changelist"))
    assert response.context["cl"].result_count == 40


def test_member_change_list_is_bounded_with_hundreds_of_members(client, django_assert_max_num_queries):
    demo_seed()
    client.force_login(ops_user("ops_viewer"))
    with django_assert_max_num_queries(14):
        response = client.get(admin_url(Member, "changelist"))
    assert response.context["cl"].result_count == Member.objects.count()
    assert response.context["cl"].result_count > 300
    with django_assert_max_num_queries(14):
        assert client.get(admin_url(Coverage, "changelist")).status_code == 200
    with django_assert_max_num_queries(14):
        assert client.get(admin_url(Employer, "changelist")).status_code == 200
    with django_assert_max_num_queries(14):
        assert client.get(admin_url(PlanRate, "changelist")).status_code == 200


def test_a_member_page_lists_its_covers_and_void_ones_can_be_filtered(client):
    # given: a cover voided (deleted on its start date) and the member's new cover
    member = MemberFactory(employee_code="VOID01")
    plan = PlanFactory()
    start = plan.policy.start_date
    CoverageFactory(
        member=member,
        plan=plan,
        start_date=start,
        end_date=start - datetime.timedelta(days=1),
        status=Coverage.Status.VOID,
        insurer_member_id="INS-VOID",
    )
    CoverageFactory(
        member=member, plan=plan, start_date=start + datetime.timedelta(days=9), insurer_member_id="INS-NEW"
    )
    client.force_login(ops_user("ops_viewer"))
    # when
    page = client.get(admin_url(Member, "change", member.pk)).content.decode()
    voided = client.get(admin_url(Coverage, "changelist"), {"status__exact": "VOID"})
    # then
    assert page.index("INS-NEW") < page.index("INS-VOID")  # newest first
    assert re.findall(r"<p>(?:Active|Void|Ended)</p>", page) == ["<p>Active</p>", "<p>Void</p>"]
    assert [c.insurer_member_id for c in voided.context["cl"].result_list] == ["INS-VOID"]


def test_searching_an_employee_code_finds_additions_that_have_no_member_yet(client):
    # given an ADD still without a member (as every ADD is until it is active) and a row with one
    linked = pipeline_rows(1)[0]
    addition = pipeline_rows(1)[0]
    EndorsementRequest.objects.filter(pk=addition.pk).update(
        member=None, member_data={"employee_code": "NEW-0042", "relation": "SELF"}
    )
    client.force_login(ops_user("ops_viewer"))
    # when ops search the list for each code (in any case, or a part of it)
    found = {
        query: [
            row.pk
            for row in client.get(admin_url(EndorsementRequest, "changelist"), {"q": query})
            .context["cl"]
            .result_list
        ]
        for query in ("new-0042", "0042", linked.member.employee_code)
    }
    # then each finds its own row
    assert found == {
        "new-0042": [addition.pk],
        "0042": [addition.pk],
        linked.member.employee_code: [linked.pk],
    }


def test_the_endorsement_history_names_the_staff_user_who_acted(client):
    request = pipeline_rows(1)[0]
    operator = ops_user("ops_operator")
    EndorsementTransition.objects.create(
        endorsement=request, from_state="RECEIVED", to_state="CANCELLED", actor=f"user:{operator.pk}"
    )
    client.force_login(ops_user("ops_viewer"))

    page = client.get(admin_url(EndorsementRequest, "change", request.pk)).content.decode()

    assert "<td>RECEIVED</td><td>CANCELLED</td><td>test-ops_operator</td>" in page
