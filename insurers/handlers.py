"""How the gateway tells an upper app what an insurer answered, without importing it.

The gateway knows dispatches and references (tracking ids), not the endorsement state
machine. An upper app registers a callable once at start-up (`AppConfig.ready()`):

    from insurers.handlers import register_confirmation_handler
    register_confirmation_handler(on_results)      # on_results(insurer_id, results)

`insurers.services.item_results_record` calls every handler AFTER the transaction that
wrote the results on their items commits, with the list of `ItemResult`s just recorded
(only those that changed an item: a duplicate answer calls nobody). Handlers run with
`on_commit(robust=True)`: one that raises is logged and does not stop the others. A handler
must be safe to run twice; the items' `result` columns are the truth a sweep can re-read.

Statement handlers (`register_statement_handler`) get `(insurer_id, data)` when an insurer
announces a CD statement (webhook `statement.available`).
"""

from collections.abc import Callable, Sequence

import structlog
from django.db import transaction

log = structlog.get_logger(__name__)

ConfirmationHandler = Callable[[int, Sequence], object]
StatementHandler = Callable[[int, dict], object]
_confirmation_handlers: list[ConfirmationHandler] = []
_statement_handlers: list[StatementHandler] = []


def register_confirmation_handler(handler: ConfirmationHandler) -> None:
    """Register a callable(insurer_id, results); registering the same callable twice is a no-op."""
    if handler not in _confirmation_handlers:
        _confirmation_handlers.append(handler)


def unregister_confirmation_handler(handler: ConfirmationHandler) -> None:
    if handler in _confirmation_handlers:
        _confirmation_handlers.remove(handler)


def register_statement_handler(handler: StatementHandler) -> None:
    if handler not in _statement_handlers:
        _statement_handlers.append(handler)


def unregister_statement_handler(handler: StatementHandler) -> None:
    if handler in _statement_handlers:
        _statement_handlers.remove(handler)


def confirmations_notify(insurer_id: int, results: Sequence) -> None:
    """Schedule every confirmation handler for after the current transaction commits."""
    if not results:
        return
    for handler in list(_confirmation_handlers):
        transaction.on_commit(_call(handler, insurer_id, list(results)), robust=True)


def statement_notify(insurer_id: int, data: dict) -> None:
    for handler in list(_statement_handlers):
        transaction.on_commit(_call(handler, insurer_id, data), robust=True)


def _call(handler: Callable, insurer_id: int, payload) -> Callable[[], None]:
    # A named function, not functools.partial: robust on_commit logs the callback's __qualname__.
    def insurer_handler_call() -> None:
        log.info("insurers.handler", insurer_id=insurer_id, handler=getattr(handler, "__qualname__", "?"))
        handler(insurer_id, payload)

    return insurer_handler_call
