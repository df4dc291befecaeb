"""Single intake and the validation of stored requests.

- `endorsement_submit` (API and admin): the body is checked (`validation.row_parse`; a
  bad body is refused with 422 and nothing is written), then the request is stored as
  RECEIVED (`transitions.endorsement_create`: its row, first history record, event and
  audit record in one statement); validation is enqueued on commit.
- `endorsements_validate` (the API's single requests, and the sweep) takes the intake lock
  of their codes' slots, locks the RECEIVED rows, assesses them together
  (`assessment.endorsements_assess`) and applies the decisions through
  `transitions.endorsement_transition`: VALIDATED with a premium, REJECTED with reasons,
  SUPERSEDED. `assessment_close` (shared with the file path) supersedes the older unsent
  requests a new one replaces (`endorsement_supersede`, releasing their hold).
"""

from collections.abc import Iterable
from datetime import date
from functools import partial

import structlog
from django.db import transaction
from django.utils import timezone

from ems.errors import ErrorDetail, PermissionDenied
from ems.tenancy import Caller
from endorsements.assessment import RESUBMITTABLE, endorsements_assess
from endorsements.errors import EndorsementInvalid
from endorsements.locks import (
    employer_intake_lock,
    endorsements_lock,
    endorsements_lock_received,
    intake_slot,
)
from endorsements.models import (
    VALIDATION_ACTOR,
    EndorsementRequest,
    EndorsementState,
    Policy,
    Source,
)
from endorsements.pipeline import sla
from endorsements.services.batch_progress import batch_advance, row_errors_write
from endorsements.transitions import (
    UNSENT_STATES,
    endorsement_create,
    endorsement_transition,
)
from endorsements.validation import content_hash, member_key, resubmits_split, row_parse

log = structlog.get_logger(__name__)


def employer_required(caller: Caller) -> int:
    if caller.employer_id is None:
        raise PermissionDenied(
            "Only a caller acting for one employer (its HR users, its API clients, or staff in the admin "
            "choosing it) can submit endorsements."
        )
    return caller.employer_id


def local_today() -> date:
    return timezone.localdate()


def endorsement_submit(
    *, caller: Caller, data: dict, idempotency_key: str = "", source: str = Source.API
) -> EndorsementRequest:
    """Store one endorsement as RECEIVED and enqueue its validation on commit."""
    employer_id = employer_required(caller)
    if not isinstance(data, dict):
        raise EndorsementInvalid("The body must be a JSON object of column: value.")
    cells = {str(key).strip().lower(): value for key, value in data.items()}
    cells, resubmits = resubmits_split(cells)
    values, issues = row_parse(cells, today=local_today())
    if issues:
        raise EndorsementInvalid(details=issues)
    rejected_id = _rejected_request_id(employer_id, resubmits) if resubmits else None
    # No savepoint: under the API's idempotency transaction a failure rolls back all of it.
    with transaction.atomic(savepoint=False):
        request = EndorsementRequest(
            employer_id=employer_id,
            type=values["action"],
            member_data=values,
            effective_date=values["effective_date"],
            content_hash=content_hash(values),
            member_key=provisional_key(values),
            idempotency_key=idempotency_key,
            source=source,
            resubmission_of_id=rejected_id,
        )
        # The policy is looked up by number in the same statement (none: validation rejects).
        endorsement_create(
            request=request,
            actor=caller.principal,
            computed={"policy_id": (_POLICY_BY_NUMBER_SQL, [employer_id, values["policy_number"]])},
        )
        transaction.on_commit(partial(_enqueue_validation, request.pk))
    request.effective_date = date.fromisoformat(values["effective_date"])
    return request


def _rejected_request_id(employer_id: int, tracking_id) -> int:
    """The employer's rejected request that a corrected one names (`resubmits`); refused otherwise."""
    found = (
        EndorsementRequest.objects.filter(employer_id=employer_id, tracking_id=str(tracking_id).strip())
        .values_list("pk", "state")
        .first()
    )
    if found is None or found[1] not in RESUBMITTABLE:
        state = f" It is {found[1]}." if found else ""
        raise EndorsementInvalid(
            details=[
                ErrorDetail(
                    "resubmits",
                    "resubmission_invalid",
                    f"{str(tracking_id)[:40]} is not one of your rejected endorsements.{state}",
                )
            ]
        )
    return found[0]


# The employer's policy with this number (case-insensitive); ordered by number alone:
# the model's ordering (employer code, number) is the same within one employer, without
# the join to the employer.
_POLICY_BY_NUMBER_SQL = (
    f"SELECT id FROM {Policy._meta.db_table} WHERE employer_id = %s AND UPPER(number) = UPPER(%s)"
    " ORDER BY number, id LIMIT 1"
)


def _enqueue_validation(endorsement_id: int) -> None:
    from endorsements.validation_queue import validation_request

    validation_request(endorsement_id)


def provisional_key(values: dict) -> str:
    """The member key known before validation (validation replaces it with the resolved one)."""
    return member_key(
        employee_code=values["employee_code"],
        relation=values["relation"],
        first_name=values.get("first_name", ""),
    )


def endorsements_validate(*, endorsement_ids: Iterable[int], actor: str = VALIDATION_ACTOR) -> dict[str, int]:
    """Validate RECEIVED endorsements (others are skipped: safe to run twice)."""
    counts = {"accepted": 0, "rejected": 0, "duplicates": 0}
    ids = list(endorsement_ids)
    with transaction.atomic():
        slots: dict[int, set[int]] = {}
        for employer_id, data in (
            EndorsementRequest.objects.filter(pk__in=ids).order_by().values_list("employer_id", "member_data")
        ):
            slots.setdefault(employer_id, set()).add(intake_slot(str(data.get("employee_code", ""))))
        for employer_id in sorted(slots):
            employer_intake_lock(employer_id, slots[employer_id])
        requests = endorsements_lock_received(ids=ids)
        groups: dict[tuple[int, int | None], list[EndorsementRequest]] = {}
        for request in requests:
            groups.setdefault((request.employer_id, request.batch_id), []).append(request)
        for (employer_id, batch_id), group in groups.items():
            group_counts = _decisions_apply(
                employer_id=employer_id, requests=group, actor=actor, batch_id=batch_id
            )
            if batch_id is not None:
                batch_advance(batch_id, **group_counts)
            for name, value in group_counts.items():
                counts[name] += value
    return counts


# The states an assessment decides a RECEIVED request into, in the order they are applied.
_DECIDED = (EndorsementState.VALIDATED, EndorsementState.REJECTED, EndorsementState.SUPERSEDED)


def _decisions_apply(
    *, employer_id: int, requests: list[EndorsementRequest], actor: str, batch_id: int | None = None
) -> dict[str, int]:
    """Decide stored RECEIVED requests and move each to its decided state."""
    assessment = endorsements_assess(employer_id=employer_id, endorsements=requests, today=local_today())
    by_id = {r.pk: r for r in requests}
    groups: dict[EndorsementState, list[EndorsementRequest]] = {state: [] for state in _DECIDED}
    for pk, decision in assessment.decisions.items():
        groups[decision.state].append(by_id[pk])
    changes = {pk: decision.changes for pk, decision in assessment.decisions.items()}
    for pk, decision in assessment.decisions.items():
        if decision.state == EndorsementState.VALIDATED and decision.sla_days is not None:
            # The SLA clock, in the same per-row update as the premium (no write of its own).
            deadline = sla.deadline_of(received_at=by_id[pk].received_at, days=decision.sla_days)
            changes[pk] = {**decision.changes, "sla_deadline": deadline}
    for state in _DECIDED:
        if groups[state]:
            endorsement_transition(
                endorsements=groups[state],
                to_state=state,
                actor=actor,
                changes={r.pk: changes[r.pk] for r in groups[state]},
            )
    if assessment.linked:
        linked_deletes_store(linked=assessment.linked, actor=actor)
    return assessment_close(
        employer_id=employer_id, requests=requests, assessment=assessment, actor=actor, batch_id=batch_id
    )


def linked_deletes_store(*, linked: list, actor: str) -> list[EndorsementRequest]:
    """Store the dependants' DELETEs an employee's deletion calls for (`linked_deletes.py`):
    each arrives RECEIVED (`endorsement_create`) and moves to its decided state, one
    transition per state, like any request of the set."""
    created: dict[str, list[EndorsementRequest]] = {}
    changes = {}
    for item in linked:
        employee = item.employee_request
        request = EndorsementRequest(
            employer_id=employee.employer_id,
            policy_id=item.decision.changes["policy_id"],
            type=item.member_data["action"],
            member_data=item.member_data,
            effective_date=item.member_data["effective_date"],
            content_hash=item.content_hash,
            member_key=item.member_key,
            source=employee.source,
            batch_id=employee.batch_id,
            row_number=employee.row_number,
        )
        endorsement_create(request=request, actor=actor, computed={})
        created.setdefault(item.decision.state, []).append(request)
        changes[request.pk] = item.decision.changes
    for state, requests in created.items():
        endorsement_transition(
            endorsements=requests,
            to_state=state,
            actor=actor,
            # a rejection carries its reasons on the row and its event, like any request's
            reason="with the employee's deletion" if state == EndorsementState.VALIDATED else "",
            changes={r.pk: changes[r.pk] for r in requests},
        )
    return [r for requests in created.values() for r in requests]


def assessment_close(*, employer_id: int, requests, assessment, actor: str, batch_id: int | None) -> dict:
    """After the decisions are stored: supersede older requests, write row errors, count."""
    for older, newer_id in assessment.superseded_older:
        endorsement_supersede(endorsement=older, newer_id=newer_id, actor=actor)
    decisions = assessment.decisions
    states = [d.state for d in decisions.values()]
    duplicates = sum(1 for d in decisions.values() if d.state == EndorsementState.REJECTED and d.duplicate)
    rejected = states.count(EndorsementState.REJECTED) - duplicates
    if batch_id is not None and rejected + duplicates:
        row_errors_write(
            batch_id,
            (
                (r.row_number, reason, r.member_data, r.tracking_id)
                for r in requests
                if decisions[r.pk].state == EndorsementState.REJECTED
                for reason in decisions[r.pk].changes["rejection_reasons"]
            ),
        )
    log.info(
        "endorsement.validated_group",
        employer_id=employer_id,
        batch_id=batch_id,
        validated=states.count(EndorsementState.VALIDATED),
        rejected=rejected,
        duplicates=duplicates,
        superseded=states.count(EndorsementState.SUPERSEDED) + len(assessment.superseded_older),
    )
    return {
        "accepted": states.count(EndorsementState.VALIDATED) + states.count(EndorsementState.SUPERSEDED),
        "rejected": rejected,
        "duplicates": duplicates,
    }


def endorsement_supersede(*, endorsement: EndorsementRequest, newer_id: int, actor: str) -> bool:
    """Replace an older unsent request by a newer one; release its hold. False if it moved on."""
    with transaction.atomic():
        state = endorsements_lock([endorsement.pk]).get(endorsement.pk)
        if state not in UNSENT_STATES:
            return False
        newer = EndorsementRequest.objects.only("tracking_id").get(pk=newer_id)
        if state in (EndorsementState.FUND_LOCKED, EndorsementState.ON_HOLD_FUNDS):
            _hold_release(endorsement, reason=f"superseded by {newer.tracking_id}")
        endorsement.state = state
        endorsement_transition(
            endorsement=endorsement,
            to_state=EndorsementState.SUPERSEDED,
            actor=actor,
            reason=f"superseded by {newer.tracking_id}",
            changes={endorsement.pk: {"superseded_by_id": newer_id}},
        )
    return True


def _hold_release(endorsement: EndorsementRequest, *, reason: str) -> None:
    from ledger.models import Account
    from ledger.services import hold_release_by_reference

    policy = Policy.objects.only("insurer_id").get(pk=endorsement.policy_id)
    account_id = (
        Account.objects.filter(employer_id=endorsement.employer_id, insurer_id=policy.insurer_id)
        .values_list("pk", flat=True)
        .first()
    )
    if account_id is not None:
        hold_release_by_reference(account_id=account_id, reference=endorsement.tracking_id, reason=reason)
