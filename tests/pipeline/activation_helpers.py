"""Activation test helpers: requests validated by the real rules and confirmed through the
state machine (RECEIVED -> VALIDATED -> SENT -> CONFIRMED), as the pipeline leaves them.

The policy book is `tests/endorsements/conftest.py`'s (a year's policy from 120 days ago,
a GOLD plan and its rate card), so the rules that apply to "today" apply whenever the
suite runs.
"""

import datetime

from ems.tenancy import Caller
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.services import endorsement_submit, endorsements_validate
from endorsements.transitions import endorsement_transition

S = EndorsementState


def days(n: int) -> datetime.timedelta:
    return datetime.timedelta(days=n)


def submitted(book, row: dict) -> EndorsementRequest:
    """One request through the API's service, then validated by the service the queue's
    drain calls (called here: the Redis queue is transport, shared with other tests)."""
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    request = endorsement_submit(caller=caller, data=row)
    endorsements_validate(endorsement_ids=[request.pk])
    request.refresh_from_db()
    return request


def confirmed(request: EndorsementRequest, *, insurer_member_id: str = "") -> EndorsementRequest:
    """A VALIDATED request sent and confirmed by the insurer (with its member id)."""
    assert request.state == S.VALIDATED, request.rejection_reasons
    endorsement_transition(endorsement=request, to_state=S.SENT, actor="test:send", follow_up=False)
    endorsement_transition(
        endorsement=request,
        to_state=S.CONFIRMED,
        actor="test:insurer",
        changes={request.pk: {"insurer_member_id": insurer_member_id}},
        follow_up=False,
    )
    request.refresh_from_db()
    return request


def employee_row(book, **overrides) -> dict:
    """An ADD of a new joiner aged 30 (the 18-35 band whenever the suite runs)."""
    born = datetime.date(book.today.year - 30, book.today.month, 1) - days(10)
    return book.add_row(date_of_birth=born.isoformat(), **overrides)


def spouse_row(book, **overrides) -> dict:
    """An ADD of the employee's spouse (30, married three days ago), effective today."""
    born = datetime.date(book.today.year - 30, book.today.month, 1) - days(40)
    row = {
        "action": "ADD",
        "employee_code": "E1001",
        "relation": "SPOUSE",
        "first_name": "Ravi",
        "last_name": "Rao",
        "date_of_birth": born.isoformat(),
        "gender": "M",
        "event_date": (book.today - days(3)).isoformat(),
        "effective_date": book.today.isoformat(),
        "policy_number": book.policy.number,
        "plan_code": "GOLD",
        "sum_insured": "500000",
    }
    return {**row, **overrides}


def deletion_row(book, *, code: str, effective: datetime.date, relation: str = "SELF", **more) -> dict:
    return {
        "action": "DELETE",
        "employee_code": code,
        "relation": relation,
        "effective_date": effective.isoformat(),
        "policy_number": book.policy.number,
        **more,
    }


def correction_row(book, *, code: str, effective: datetime.date, **values) -> dict:
    return {
        "action": "CORRECTION",
        "employee_code": code,
        "relation": "SELF",
        "effective_date": effective.isoformat(),
        "policy_number": book.policy.number,
        **values,
    }
