"""`endorsements/admin_queues.py`: the review actions and work-queue filter, through the admin's pages."""

import datetime

import pytest
from django.urls import reverse

from ems.models import OutboxEvent
from endorsements.models import EndorsementRequest, EndorsementTransition
from endorsements.pipeline import review
from tests.endorsements.test_admin import ops_user
from tests.factories import InsurerFactory
from tests.pipeline.conftest import S, policy_at, states, validated

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:endorsements_endorsementrequest_changelist")


@pytest.fixture
def on_hold():
    """Two requests on review hold and one still VALIDATED, at one insurer."""
    policy = policy_at(InsurerFactory())
    held = [validated(policy, premium=1_000_00), validated(policy, premium=2_000_00)]
    review.reviews_hold(
        endorsement_ids=[r.pk for r in held], reason="velocity_breaker", actor="analytics:velocity"
    )
    return held, validated(policy, premium=3_000_00)


def act(client, action: str, requests, **extra):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [r.pk for r in requests], "index": 0, **extra}
    )


def written() -> tuple[int, int]:
    return EndorsementTransition.objects.count(), OutboxEvent.objects.count()


def test_an_operator_approves_review_holds_back_to_the_scheduler(client, on_hold):
    held, _waiting = on_hold
    operator = ops_user("ops_operator")
    client.force_login(operator)

    response = act(client, "approve_review", held)

    assert response.status_code == 302
    assert states(*held) == [S.VALIDATED, S.VALIDATED]
    for request in held:
        assert request.transitions.order_by("-id").values_list("from_state", "actor", "reason")[0] == (
            S.ON_HOLD_REVIEW,
            f"user:{operator.pk}",
            "review_approved",
        )
    audit = OutboxEvent.objects.filter(destination="audit_logs", payload__actor=f"user:{operator.pk}")
    assert sorted(audit.values_list("payload__object_id", flat=True)) == sorted(r.tracking_id for r in held)


def test_reject_asks_for_the_reason_on_a_confirmation_page_then_rejects(client, on_hold):
    held, _waiting = on_hold
    operator = ops_user("ops_operator")
    client.force_login(operator)
    before = written()

    # the first post shows the confirmation page and changes nothing
    page = act(client, "reject_review", held)
    assert page.status_code == 200
    assert [t.name for t in page.templates][0] == "admin/endorsements/review_reject.html"
    assert page.context["tracking_ids"] == [r.tracking_id for r in held]
    assert states(*held) == [S.ON_HOLD_REVIEW, S.ON_HOLD_REVIEW] and written() == before
    # confirming without a reason shows the page again with the error
    empty = act(client, "reject_review", held, confirm="yes", reason="")
    assert empty.status_code == 200 and empty.context["form"].errors == {
        "reason": ["This field is required."]
    }
    assert written() == before

    done = act(client, "reject_review", held, confirm="yes", reason="Duplicate hire, see ticket 42")

    assert done.status_code == 302
    assert states(*held) == [S.REJECTED, S.REJECTED]
    for request in EndorsementRequest.objects.filter(pk__in=[r.pk for r in held]):
        assert request.rejection_reasons == [
            {"field": "", "code": "review_rejected", "message": "Duplicate hire, see ticket 42"}
        ]
        assert request.transitions.order_by("-id")[0].actor == f"user:{operator.pk}"


def test_a_selection_with_a_request_not_on_hold_is_refused_whole(client, on_hold):
    held, waiting = on_hold
    client.force_login(ops_user("ops_operator"))
    before = written()

    response = act(client, "approve_review", [*held, waiting])

    assert response.status_code == 302
    assert states(*held, waiting) == [S.ON_HOLD_REVIEW, S.ON_HOLD_REVIEW, S.VALIDATED]
    assert written() == before
    message = str(list(client.get(CHANGELIST).context["messages"])[0])
    assert message.startswith("Nothing changed.") and waiting.tracking_id in message


@pytest.mark.parametrize("action", ["approve_review", "reject_review"])
def test_without_the_review_permission_the_actions_are_not_offered_and_change_nothing(
    client, on_hold, action
):
    held, _waiting = on_hold
    viewer = ops_user("ops_viewer")
    assert not viewer.has_perm("endorsements.review_endorsementrequest")
    client.force_login(viewer)
    before = written()

    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assert listing.context["action_form"] is None or action not in dict(
        listing.context["action_form"].fields["action"].choices
    )
    response = act(client, action, held, confirm="yes", reason="no")

    assert response.status_code in (200, 302)
    assert states(*held) == [S.ON_HOLD_REVIEW, S.ON_HOLD_REVIEW]
    assert written() == before


def test_the_work_queue_lists_what_awaits_review(client, on_hold):
    held, waiting = on_hold
    client.force_login(ops_user("ops_viewer"))

    response = client.get(CHANGELIST, {"queue": "review"})

    assert response.status_code == 200
    listed = {r.pk for r in response.context["cl"].result_list}
    assert listed == {r.pk for r in held}
    assert waiting.pk not in listed


def test_the_change_page_and_the_list_show_the_sla_clock(client):
    policy = policy_at(InsurerFactory())
    request = validated(policy, premium=1_000_00)
    EndorsementRequest.objects.filter(pk=request.pk).update(
        sla_deadline=request.received_at + datetime.timedelta(days=15), sla_status="NEAR"
    )
    client.force_login(ops_user("ops_viewer"))

    page = client.get(reverse("admin:endorsements_endorsementrequest_change", args=[request.pk]))
    listing = client.get(CHANGELIST, {"queue": "sla_near"})

    assert page.status_code == 200
    fields = [f for fieldset in page.context["adminform"] for line in fieldset for f in line]
    shown = {f.field["name"]: f.contents() for f in fields if f.is_readonly}
    assert shown["sla_status"] == "near breach"
    assert shown["sla_deadline"] != "-"
    assert [r.pk for r in listing.context["cl"].result_list] == [request.pk]
    assert client.get(CHANGELIST, {"queue": "sla_breached"}).context["cl"].result_count == 0
