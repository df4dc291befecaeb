"""`endorsements/admin_dead_letters.py`: the dead-letter list and the Retry and Cancel actions,
through the admin's own pages, against requests the pipeline failed at the real sandbox."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from endorsements.models import DeadLetter, EndorsementRequest
from endorsements.pipeline import funds
from endorsements.transitions import endorsement_transition
from insurers.models import Dispatch
from ledger.models import Hold
from tests.endorsements.test_admin import admin_url, ops_user
from tests.insurers.conftest import sandbox, sandbox_server  # noqa: F401 - the session's sandbox
from tests.pipeline.conftest import S, approver, fund, policy_at, rest_insurer_at, states, validated  # noqa: F401
from tests.pipeline.dead_letter_helpers import failed_debit, footprint, ledger_state, run_queued, sent_debit

pytestmark = pytest.mark.django_db


@pytest.fixture
def insurer(sandbox):  # noqa: F811 - the fixture imported above
    return rest_insurer_at(sandbox, retry_max_attempts=1)


@pytest.fixture
def policy(insurer, approver):  # noqa: F811
    policy = policy_at(insurer)
    fund(policy, 1_000_00, approver)
    return policy


@pytest.fixture
def fail(sandbox, insurer, policy, django_capture_on_commit_callbacks):  # noqa: F811
    """fail(premium, insurer_keeps_it=False): a debit whose one send attempt failed."""

    def make(premium: int, *, insurer_keeps_it: bool = False):
        return failed_debit(
            sandbox,
            insurer,
            policy,
            django_capture_on_commit_callbacks,
            premium=premium,
            insurer_keeps_it=insurer_keeps_it,
        )

    return make


def action_post(client, model, action: str, rows, **extra):
    data = {"action": action, "_selected_action": [row.pk for row in rows], **extra}
    return client.post(admin_url(model, "changelist"), data, follow="confirmed" in extra)


def holds_of(request) -> list[tuple]:
    return list(Hold.objects.filter(reference=request.tracking_id).values_list("amount", "state"))


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_list_shows_failed_requests_with_their_error_attempts_and_dispatch(
    client, insurer, policy, fail, django_capture_on_commit_callbacks
):
    failed, dispatch_id = fail(300_00)
    fresh = validated(policy, premium=100_00)
    client.force_login(ops_user("ops_viewer"))

    listing = client.get(admin_url(DeadLetter, "changelist"))

    assert listing.status_code == 200
    assert [row.pk for row in listing.context["cl"].result_list] == [failed.pk]
    html = listing.content.decode()
    assert "insurer_server_error" in html
    assert f'href="/admin/insurers/dispatch/{dispatch_id}/change/"' in html
    assert fresh.tracking_id not in html
    for listed, expected in (("failed", [failed.pk]), ("stuck", [])):
        filtered = client.get(admin_url(DeadLetter, "changelist"), {"listed": listed})
        assert [row.pk for row in filtered.context["cl"].result_list] == expected
    page = client.get(admin_url(DeadLetter, "change", failed.pk)).content.decode()
    assert "FAILED, 1 attempt(s); insurer_server_error" in page
    assert "Exchanges with the insurer" in page


def test_retry_asks_for_confirmation_then_sends_the_request_again(
    client, insurer, policy, fail, django_capture_on_commit_callbacks
):
    failed, dispatch_id = fail(300_00)
    client.force_login(ops_user("ops_operator"))
    # the first POST only asks
    asked = action_post(client, DeadLetter, "retry_selected", [failed])
    assert asked.status_code == 200
    assert "Retry these 1 endorsement request(s)?" in asked.content.decode()
    assert failed.tracking_id in asked.content.decode()
    assert states(failed) == [S.FAILED]
    # confirming sends it, through a new dispatch, on insurer_io after commit (eager here)
    with django_capture_on_commit_callbacks() as queued:
        done = action_post(client, DeadLetter, "retry_selected", [failed], confirmed="yes")
    run_queued(queued)
    new_dispatch = Dispatch.objects.exclude(pk=dispatch_id).get(items__reference=failed.tracking_id)
    assert shown_messages(done) == [f"1 sent again (dispatch {new_dispatch.pk}): {failed.tracking_id}."]
    assert states(failed) == [S.SENT]
    assert new_dispatch.state == Dispatch.State.COMPLETED
    assert failed.transitions.order_by("-id").values_list("actor", flat=True).first().startswith("user:")


def test_bulk_cancel_from_the_list_cancels_what_the_insurer_lacks_and_reports_the_rest(
    client, insurer, policy, fail, django_capture_on_commit_callbacks
):
    lacked, _ = fail(300_00)
    kept, _ = fail(200_00, insurer_keeps_it=True)
    client.force_login(ops_user("ops_operator"))

    asked = action_post(client, DeadLetter, "cancel_selected", [lacked, kept])
    assert 'name="reason"' in asked.content.decode()
    done = action_post(client, DeadLetter, "cancel_selected", [lacked, kept], confirmed="yes", reason="dup")

    messages = shown_messages(done)
    assert messages[0] == f"1 cancelled: {lacked.tracking_id}."
    assert messages[1].startswith(f"{kept.tracking_id}: {insurer.code} has it (confirmed)")
    assert messages[1].endswith("(insurer_has_endorsement)")
    assert states(lacked, kept) == [S.CANCELLED, S.FAILED]
    assert ledger_state(policy)["holds"] == sorted(
        [(lacked.tracking_id, 300_00, "RELEASED"), (kept.tracking_id, 200_00, "PENDING")]
    )
    assert lacked.transitions.order_by("-id").values_list("reason", flat=True).first() == "dup"


def test_cancel_on_the_endorsement_admin_refuses_a_sent_request_and_changes_nothing_for_it(
    client, policy, django_capture_on_commit_callbacks
):
    sent = sent_debit(policy, premium=300_00)
    locked = validated(policy, premium=200_00)
    funds.debits_lock(endorsements=[locked])
    before = footprint(sent)["history"], holds_of(sent)
    client.force_login(ops_user("ops_operator"))

    done = action_post(client, EndorsementRequest, "cancel_selected", [sent, locked], confirmed="yes")

    messages = shown_messages(done)
    assert messages[0] == f"1 cancelled: {locked.tracking_id}."
    assert f"{sent.tracking_id} is SENT" in messages[1] and messages[1].endswith(
        "(endorsement_not_cancellable)"
    )
    assert states(sent) == [S.SENT]
    assert (footprint(sent)["history"], holds_of(sent)) == before == ([3], [(300_00, "PENDING")])
    assert states(locked) == [S.CANCELLED]
    assert ledger_state(policy)["held"] == 300_00


@pytest.mark.parametrize("model", [DeadLetter, EndorsementRequest])
def test_a_viewer_is_offered_no_action_and_cannot_post_one(client, policy, model):
    request = validated(policy, premium=300_00)
    endorsement_transition(endorsement=request, to_state=S.SENT, actor="test")
    endorsement_transition(endorsement=request, to_state=S.FAILED, actor="test")
    client.force_login(ops_user("ops_viewer"))

    listing = client.get(admin_url(model, "changelist"))
    posted = action_post(client, model, "cancel_selected", [request], confirmed="yes")

    assert listing.context["action_form"] is None  # no action offered
    assert posted.status_code in (200, 302, 403)
    assert states(request) == [S.FAILED]


def test_the_dead_letter_list_costs_the_same_queries_for_few_and_many_rows(client, policy):
    def failed_rows(count: int) -> None:
        for _ in range(count):
            request = validated(policy, premium=100_00)
            endorsement_transition(endorsement=request, to_state=S.SENT, actor="test")
            endorsement_transition(
                endorsement=request,
                to_state=S.FAILED,
                actor="test",
                changes={request.pk: {"last_error": "insurer_server_error: 500", "attempts": 6}},
            )

    client.force_login(ops_user("ops_operator"))
    failed_rows(3)
    with CaptureQueriesContext(connection) as few:
        assert client.get(admin_url(DeadLetter, "changelist")).status_code == 200
    failed_rows(12)
    with CaptureQueriesContext(connection) as many:
        response = client.get(admin_url(DeadLetter, "changelist"))
    assert response.context["cl"].result_count == 15
    assert len(many.captured_queries) == len(few.captured_queries)
