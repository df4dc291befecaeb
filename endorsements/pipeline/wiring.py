"""Where the pipeline plugs its stages in, once per process (`EndorsementsConfig.ready()`).

Each stage connects itself here: follow-ups on the state machine
(`transitions.follow_up_register`), the ledger's funds handler
(`ledger.handlers.register_funds_handler`) and the gateway's confirmation handler
(`insurers.handlers.register_confirmation_handler`). Registering twice is a no-op.
"""


def connect() -> None:
    """Register every stage's hooks."""
    from endorsements.models import EndorsementState
    from endorsements.pipeline import confirmation, funds, scheduler
    from endorsements.transitions import follow_up_register
    from insurers.handlers import register_confirmation_handler
    from ledger.handlers import register_funds_handler

    # scheduler: a window closes on size as soon as enough requests are VALIDATED
    follow_up_register(EndorsementState.VALIDATED, scheduler.validated_follow_up)
    # fund lock: a parked request's hold was placed (top-up, refund, release)
    register_funds_handler(funds.funds_event)
    # confirmation: whatever the insurer answered (inline, webhook, response file, status fetch)
    register_confirmation_handler(confirmation.results_handler)
