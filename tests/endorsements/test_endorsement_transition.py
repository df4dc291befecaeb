"""`endorsements.transitions.endorsement_transition`: the one guarded way a state changes."""

import pytest
from django.db import transaction

from ems.models import OutboxEvent
from endorsements import transitions
from endorsements.errors import IllegalTransition
from endorsements.models import EndorsementRequest, EndorsementState, EndorsementTransition
from endorsements.transitions import TRANSITIONS, endorsement_transition, follow_up_register


def request_create(book, state="RECEIVED", n=0) -> EndorsementRequest:
    return EndorsementRequest.objects.create(
        employer=book.employer,
        policy=book.policy,
        type="ADD",
        member_data={"employee_code": f"E{n}"},
        content_hash=f"h{n}",
        source="API",
        state=state,
    )


def snapshot():
    return (
        list(EndorsementRequest.objects.order_by("pk").values_list("pk", "state", "closed_at")),
        EndorsementTransition.objects.count(),
        OutboxEvent.objects.count(),
    )


def test_a_legal_move_records_history_an_event_and_an_audit_record(book, django_capture_on_commit_callbacks):
    request = request_create(book, "VALIDATED")
    with django_capture_on_commit_callbacks(execute=True):
        endorsement_transition(
            endorsement=request, to_state="CANCELLED", actor="user:7", reason="HR withdrew it"
        )
    request.refresh_from_db()
    assert request.state == "CANCELLED"
    assert request.closed_at is not None
    assert list(request.transitions.values_list("from_state", "to_state", "actor", "reason")) == [
        ("VALIDATED", "CANCELLED", "user:7", "HR withdrew it")
    ]
    event = OutboxEvent.objects.get(destination="ems.endorsements")
    assert event.key == request.tracking_id
    assert event.payload["type"] == "endorsement.cancelled"
    assert event.payload["employer_id"] == book.employer.pk
    assert event.payload["data"] == {
        "tracking_id": request.tracking_id,
        "endorsement_type": "ADD",
        "from_state": "VALIDATED",
        "to_state": "CANCELLED",
        "reason": "HR withdrew it",
    }
    audit = OutboxEvent.objects.get(destination="audit_logs")
    assert (audit.payload["actor"], audit.payload["action"], audit.payload["object_id"]) == (
        "user:7",
        "endorsement.cancelled",
        request.tracking_id,
    )
    assert audit.payload["before"] == {"state": "VALIDATED"} and audit.payload["after"] == {
        "state": "CANCELLED"
    }


@pytest.mark.parametrize(
    ("start", "target"), [("SENT", "CANCELLED"), ("REJECTED", "VALIDATED"), ("ACTIVE", "SENT")]
)
def test_an_illegal_move_is_refused_and_nothing_changes(book, start, target):
    request = request_create(book, start)
    before = snapshot()
    with pytest.raises(IllegalTransition) as refused:
        endorsement_transition(endorsement=request, to_state=target, actor="user:7")
    assert refused.value.status == 409
    assert refused.value.message == f"{start} -> {target} is not allowed."
    assert snapshot() == before


STATES = sorted(EndorsementState.values)
PAIRS = [(start, target) for start in STATES for target in STATES]


@pytest.mark.parametrize(("start", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_move_of_the_table_works_and_every_other_is_refused_with_nothing_written(book, start, target):
    """The whole state matrix: each edge of TRANSITIONS moves (state, its timestamp, one history
    record, one event); each pair that is not an edge is refused and changes nothing."""
    request = request_create(book, start)
    before = snapshot()
    if target not in TRANSITIONS[start]:
        with pytest.raises(IllegalTransition):
            endorsement_transition(endorsement=request, to_state=target, actor="user:7")
        assert snapshot() == before
        return
    events = OutboxEvent.objects.filter(destination="ems.endorsements")
    events_before = events.count()
    endorsement_transition(endorsement=request, to_state=target, actor="user:7")
    request.refresh_from_db()
    assert request.state == target
    timestamp = transitions.STATE_TIMESTAMPS.get(target)
    assert timestamp is None or getattr(request, timestamp) is not None
    assert list(request.transitions.values_list("from_state", "to_state")) == [(start, target)]
    assert events.count() == events_before + 1


def test_the_guard_reads_the_database_not_the_callers_copy(book):
    request = request_create(book, "RECEIVED")
    EndorsementRequest.objects.filter(pk=request.pk).update(state="REJECTED")
    with pytest.raises(IllegalTransition):
        endorsement_transition(endorsement=request, to_state="VALIDATED", actor="system")


def test_a_group_move_is_all_or_nothing(book):
    good = [request_create(book, "RECEIVED", n) for n in range(3)]
    sent = request_create(book, "SENT", 9)
    before = snapshot()
    with pytest.raises(IllegalTransition) as refused:
        endorsement_transition(endorsements=[*good, sent], to_state="CANCELLED", actor="ops")
    assert refused.value.message == "1 of 4 endorsements cannot move to CANCELLED."
    assert [d.field for d in refused.value.details] == [sent.tracking_id]
    assert snapshot() == before


def test_a_group_move_writes_per_row_changes_in_one_statement(book, django_capture_on_commit_callbacks):
    requests = [request_create(book, "RECEIVED", n) for n in range(25)]
    changes = {r.pk: {"premium_amount": 1000 + i, "tax_amount": 180 + i} for i, r in enumerate(requests)}
    endorsement_transition(endorsements=requests, to_state="VALIDATED", actor="system", changes=changes)
    stored = dict(EndorsementRequest.objects.values_list("pk", "premium_amount"))
    assert stored == {r.pk: 1000 + i for i, r in enumerate(requests)}
    assert EndorsementTransition.objects.filter(to_state="VALIDATED").count() == 25
    assert OutboxEvent.objects.filter(destination="ems.endorsements").count() == 25
    assert OutboxEvent.objects.filter(destination="audit_logs").count() == 25


def test_follow_ups_run_after_commit_only(book, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(transitions, "_FOLLOW_UPS", {})
    seen = []
    follow_up_register("VALIDATED", seen.append)
    request = request_create(book, "RECEIVED")
    with pytest.raises(RuntimeError), transaction.atomic():
        endorsement_transition(endorsement=request, to_state="VALIDATED", actor="system")
        raise RuntimeError("rolled back")
    with django_capture_on_commit_callbacks(execute=True):
        endorsement_transition(endorsement=request, to_state="VALIDATED", actor="system")
    assert seen == [[request.pk]]


def test_every_state_has_a_row_in_the_table_and_terminal_states_go_nowhere():
    assert set(TRANSITIONS) == set(EndorsementState.values)
    for terminal in ("ACTIVE", "REJECTED", "INSURER_REJECTED", "CANCELLED", "SUPERSEDED"):
        assert TRANSITIONS[terminal] == frozenset()


def test_decided_rows_without_a_batch_are_refused_and_nothing_is_written(book):
    # given a row decided before it was stored, but not from a file (its history could not name one)
    from endorsements.assessment import Decision, IntakeRow
    from endorsements.bulk_writes import ids_reserve
    from endorsements.transitions import endorsements_create_decided

    before = snapshot()
    (pk,) = ids_reserve(EndorsementRequest, 1)
    row = IntakeRow(
        pk=pk,
        tracking_id="END-NOBATCH",
        employer_id=book.employer.pk,
        policy_id=book.policy.pk,
        type="ADD",
        member_data={"employee_code": "E9", "effective_date": book.today.isoformat()},
        content_hash="h9",
        member_key="E9|SELF",
        batch_id=None,
        row_number=None,
    )
    # when it is stored as decided
    with pytest.raises(ValueError, match="their history names the batch"):
        endorsements_create_decided(rows=[row], decisions={pk: Decision("VALIDATED", {})}, source="API")
    # then nothing was written
    assert snapshot() == before


def test_a_files_decided_rows_emit_the_events_a_single_transition_would(book):
    # given a chunk of a file, decided before it is stored: one validated, one rejected
    from ems.outbox import kafka_messages
    from endorsements.assessment import Decision, IntakeRow
    from endorsements.bulk_writes import ids_reserve
    from endorsements.models import VALIDATION_ACTOR, EndorsementBatch
    from endorsements.transitions import endorsements_create_decided

    batch = EndorsementBatch.objects.create(employer=book.employer, source="CSV", file_format="CSV")
    rejection = [{"field": "plan_code", "code": "plan_unknown", "message": "No plan GOLDX."}]
    outcomes = [
        ("VALIDATED", {"premium_amount": 12_345, "tax_amount": 2_222}),
        ("REJECTED", {"rejection_reasons": rejection}),
    ]
    ids = ids_reserve(EndorsementRequest, len(outcomes))
    rows = [
        IntakeRow(
            pk=pk,
            tracking_id=f"END-FILE{n}",
            employer_id=book.employer.pk,
            policy_id=book.policy.pk,
            type="ADD",
            member_data={"employee_code": f"F{n}", "effective_date": book.today.isoformat()},
            content_hash=f"file-h{n}",
            member_key=f"F{n}|SELF",
            batch_id=batch.pk,
            row_number=n + 2,
        )
        for n, pk in enumerate(ids)
    ]
    decisions = {pk: Decision(state, changes) for pk, (state, changes) in zip(ids, outcomes, strict=True)}
    # when it is stored decided, and the same moves are made on stored requests one at a time
    with transaction.atomic():
        endorsements_create_decided(rows=rows, decisions=decisions, source="CSV")
    (group,) = OutboxEvent.objects.filter(destination="ems.endorsements")
    from_file = dict(kafka_messages(group))
    for n, (row, (state, changes)) in enumerate(zip(rows, outcomes, strict=True)):
        single = request_create(book, n=100 + n)
        last = OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first()
        with transaction.atomic():
            endorsement_transition(
                endorsements=[single], to_state=state, actor=VALIDATION_ACTOR, changes={single.pk: changes}
            )
        single_event = OutboxEvent.objects.filter(destination="ems.endorsements", id__gt=last).get().payload
        # then the file's message has the same type, employer and data (but its own tracking id)
        file_event = from_file[row.tracking_id]
        assert (file_event["type"], file_event["employer_id"]) == (
            single_event["type"],
            single_event["employer_id"],
        )
        assert file_event["data"] == {**single_event["data"], "tracking_id": row.tracking_id}


def test_a_deleted_request_takes_its_history_with_it_and_leaves_others_alone(book):
    # given two requests with history (the history's link has no database constraint)
    doomed, kept = request_create(book, "VALIDATED", n=1), request_create(book, "VALIDATED", n=2)
    for request in (doomed, kept):
        endorsement_transition(endorsement=request, to_state="CANCELLED", actor="ops:1")
    # when one is deleted
    doomed.delete()
    # then its history is gone and the other's stays
    assert list(EndorsementTransition.objects.values_list("endorsement_id", "to_state")) == [
        (kept.pk, "CANCELLED")
    ]
