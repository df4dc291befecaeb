"""ledger.handlers: the park-and-wake callbacks an upper app registers."""

import pytest

from ledger import services
from ledger.handlers import FundsEvent, register_funds_handler, unregister_funds_handler
from tests.ledger.conftest import fund

pytestmark = pytest.mark.django_db


def test_a_failing_handler_does_not_stop_the_others_or_the_ledger(
    account, approver, django_capture_on_commit_callbacks
):
    heard = []

    def broken(reference, event):
        raise RuntimeError("handler bug")

    def recording(reference, event):
        heard.append((reference, event == "placed", event.hold_id, event.amount, event.account_id))

    register_funds_handler(broken)
    register_funds_handler(recording)
    register_funds_handler(recording)  # twice is once
    try:
        services.hold_place(account_id=account.pk, amount=500, reference="END-1", idempotency_key="h")
        with django_capture_on_commit_callbacks(execute=True):
            fund(account, 500, approver)
    finally:
        unregister_funds_handler(broken)
        unregister_funds_handler(recording)
    hold = account.holds.get()
    assert heard == [("END-1", True, hold.pk, 500, account.pk)]


def test_a_funds_event_is_a_string_with_ids():
    event = FundsEvent("placed", account_id=1, amount=5, parked_request_id=9, hold_id=3)
    assert (event == "placed", event.hold_id, event.parked_request_id) == (True, 3, 9)
    with pytest.raises(ValueError):
        FundsEvent("spent", account_id=1, amount=5, parked_request_id=9)
