"""`insurers/services.py`: `references_status` asks the real sandbox what it has, and
`item_results_record` (source "status") lands that answer on a failed dispatch's item for
the confirmation path."""

import pytest
from django.db import IntegrityError, transaction

from insurers import handlers
from insurers.adapters.base import TransientError
from insurers.models import DispatchItem, Insurer
from insurers.services import (
    dispatch_create,
    dispatch_fail,
    dispatch_send,
    item_results_record,
    references_status,
)
from tests.insurers.conftest import rest_insurer
from tests.insurers.gateway_items import dispatch_of, payload, references

pytestmark = pytest.mark.django_db
Result = DispatchItem.Result


def failed_dispatch(insurer, sandbox, reference: str):
    """A dispatch the sandbox acted on but whose answer was lost, then given up on."""
    sandbox.switches(lose_response_rate=1.0)
    dispatch = dispatch_of(insurer, payload(reference=reference, employee_code=reference))
    with pytest.raises(TransientError):
        dispatch_send(dispatch_id=dispatch.pk)
    sandbox.reset()
    dispatch_fail(dispatch_id=dispatch.pk, error="insurer_server_error: retries exhausted")
    return dispatch


def test_the_status_names_only_what_the_insurer_has_and_lands_it_on_the_failed_item(
    sandbox, django_capture_on_commit_callbacks
):
    had, never = references(2)
    insurer = rest_insurer(sandbox)
    dispatch = failed_dispatch(insurer, sandbox, had)
    item = dispatch.items.get()
    assert (item.result, item.is_live) == (Result.PENDING, False)

    found = references_status(insurer_id=insurer.pk, references=[had, never])

    assert [(r.reference, r.outcome, r.insurer_premium) for r in found] == [(had, "confirmed", 1234600)]
    heard = []

    def listener(insurer_id, results):
        heard.extend((insurer_id, r.reference, r.outcome) for r in results)

    handlers.register_confirmation_handler(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            changed = item_results_record(insurer=insurer, results=found, source="status")
        # the same answer again is a duplicate: nothing changes, nobody is called
        with django_capture_on_commit_callbacks(execute=True):
            again = item_results_record(insurer=insurer, results=found, source="status")
    finally:
        handlers.unregister_confirmation_handler(listener)
    assert [r.reference for r in changed] == [had]
    assert again == []
    item.refresh_from_db()
    assert (item.result, item.insurer_premium, item.is_live, item.result_data["source"]) == (
        Result.CONFIRMED,
        1234600,
        False,
        "status",
    )
    assert heard == [(insurer.pk, had, "confirmed")]


def test_an_accepted_answer_makes_the_item_live_again_so_no_new_dispatch_can_take_it(sandbox):
    (reference,) = references(1)
    insurer = rest_insurer(sandbox)
    sandbox.switches(answer_mode="webhook")  # accepted now, confirmed later
    dispatch = failed_dispatch(insurer, sandbox, reference)

    found = references_status(insurer_id=insurer.pk, references=[reference])
    item_results_record(insurer=insurer, results=found, source="status")

    assert list(dispatch.items.values_list("result", "is_live")) == [(Result.ACCEPTED, True)]
    with pytest.raises(IntegrityError), transaction.atomic():
        dispatch_create(insurer=insurer, items=[{"reference": reference, "kind": "ADD", "payload": {}}])


def test_an_unreachable_insurer_raises_transient_and_counts_against_its_breaker(sandbox):
    insurer = rest_insurer(sandbox, request_timeout_seconds=1)
    Insurer.objects.filter(pk=insurer.pk).update(endpoint_url="http://127.0.0.1:9")  # nothing listens

    with pytest.raises(TransientError):
        references_status(insurer_id=insurer.pk, references=["EN-ANY"])

    assert Insurer.objects.get(pk=insurer.pk).circuit_failures == 1
