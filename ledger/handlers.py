"""Park-and-wake handlers: how the ledger tells an upper app about funds, without importing it.

The ledger knows references (a tracking id, say), not endorsements. An upper app
registers a callable once at start-up (in its `AppConfig.ready()`):

    from ledger.handlers import register_funds_handler
    register_funds_handler(on_funds)            # on_funds(reference, event)

and the ledger calls it AFTER the transaction that changed the funds commits (never
inside it; a rolled-back change calls nobody), once per reference and event:

- `event == "parked"`: `hold_place` (or a batch) found too little available money and
  parked the request for `reference` in the account's queue.
- `event == "placed"`: a previously parked request for `reference` has now got its hold
  (a top-up, refund, release or expiry woke the queue). `event.hold_id` is the new hold.

`event` is a `FundsEvent`: a `str` ("parked" / "placed"), so `event == "placed"` works,
carrying `hold_id` (None for "parked"), `account_id`, `amount` and `parked_request_id`.
Handlers are called with Django's `on_commit(robust=True)`: an exception in one is logged
and does not stop the others. A handler should be quick (enqueue a task, do not call the
insurer) and safe to run twice. A handler that misses a call (process killed after the
commit) is covered by state: `ParkedRequest.state` and the hold are the truth; the
periodic parked sweep and the orchestrator's own sweeps re-read them.
"""

from collections.abc import Callable

import structlog
from django.db import transaction

log = structlog.get_logger(__name__)

PARKED = "parked"
PLACED = "placed"


class FundsEvent(str):
    """ "parked" or "placed", carrying the ids a handler needs."""

    hold_id: int | None
    account_id: int
    amount: int
    parked_request_id: int

    def __new__(cls, kind: str, *, account_id: int, amount: int, parked_request_id: int, hold_id=None):
        if kind not in (PARKED, PLACED):
            raise ValueError(f"unknown funds event {kind!r}")
        event = super().__new__(cls, kind)
        event.hold_id = hold_id
        event.account_id = account_id
        event.amount = amount
        event.parked_request_id = parked_request_id
        return event


FundsHandler = Callable[[str, FundsEvent], object]
_handlers: list[FundsHandler] = []


def register_funds_handler(handler: FundsHandler) -> None:
    """Register a callable(reference, event); registering the same callable twice is a no-op."""
    if handler not in _handlers:
        _handlers.append(handler)


def unregister_funds_handler(handler: FundsHandler) -> None:
    if handler in _handlers:
        _handlers.remove(handler)


def funds_notify(reference: str, event: FundsEvent) -> None:
    """Schedule every registered handler for after the current transaction commits."""
    for handler in list(_handlers):
        transaction.on_commit(_call(handler, reference, event), robust=True)


def _call(handler: FundsHandler, reference: str, event: FundsEvent) -> Callable[[], None]:
    # A named function, not functools.partial: robust on_commit logs the callback's __qualname__.
    def funds_handler_call() -> None:
        log.info("ledger.funds_handler", reference=reference, funds_event=str(event), hold_id=event.hold_id)
        handler(reference, event)

    return funds_handler_call
