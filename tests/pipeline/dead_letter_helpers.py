"""Requests in each state a cancel or a retry meets, made by the pipeline itself against the sandbox.

A FAILED request comes from a real send the sandbox refuses (500s until the one attempt is
spent) or acts on and then "loses" the answer of (it has the request; we do not know).
"""

from ems.audit import EXCHANGES_COLLECTION
from ems.models import OutboxEvent
from endorsements.models import EndorsementRequest
from endorsements.pipeline import scheduler
from ledger.models import Account, Hold, ParkedRequest
from tests.pipeline.conftest import S, account_of, validated


def window_send(insurer, capture):
    """Close the insurer's window and run the send it queued (eager Celery after commit)."""
    with capture(execute=True):
        return scheduler.window_close(insurer_id=insurer.pk)


def sent_debit(policy, *, premium: int) -> EndorsementRequest:
    """A debit moved to SENT by a window's close; its send waits for the commit that a test's
    transaction never makes, so no answer (and no confirmation) can move it on."""
    request = validated(policy, premium=premium)
    scheduler.window_close(insurer_id=policy.insurer_id)
    request.refresh_from_db()
    assert request.state == S.SENT
    return request


def failed_debit(sandbox, insurer, policy, capture, *, premium: int, insurer_keeps_it: bool = False):
    """A debit whose only send attempt failed: the insurer never got it, or acted and lost the answer."""
    request = validated(policy, premium=premium)
    sandbox.switches(**({"lose_response_rate": 1.0} if insurer_keeps_it else {"error_rate": 1.0}))
    closed = window_send(insurer, capture)
    sandbox.reset()
    request.refresh_from_db()
    assert request.state == S.FAILED, request.last_error
    return request, closed.debits_dispatch_id


def ledger_state(policy) -> dict:
    """Everything a cancel may touch in the money, to compare before and after."""
    account = Account.objects.get(pk=account_of(policy).pk)
    return {
        "posted": account.posted,
        "held": account.held,
        "holds": sorted(Hold.objects.filter(account=account).values_list("reference", "amount", "state")),
        "parked": sorted(
            ParkedRequest.objects.filter(account=account).values_list("reference", "amount", "state")
        ),
    }


def footprint(*requests) -> dict:
    """The requests' states and history lengths and the outbox's events and audit records: all a
    refusal must leave alone (a call to the insurer is logged in its exchanges, by design)."""
    rows = EndorsementRequest.objects.filter(pk__in=[r.pk for r in requests]).order_by("pk")
    return {
        "states": list(rows.values_list("state", flat=True)),
        "history": [r.transitions.count() for r in rows],
        "outbox": OutboxEvent.objects.exclude(destination=EXCHANGES_COLLECTION).count(),
    }


def run_queued(callbacks) -> None:
    """Run what a call queued for after its commit (a retry's send on insurer_io, eager here).

    What those queue in turn (the confirmation handlers) waits for a commit the test's
    transaction never makes, so the request stays where the send left it."""
    for callback in callbacks:
        callback()
