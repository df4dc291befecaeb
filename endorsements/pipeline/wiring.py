"""Where the pipeline plugs its stages in, once per process (`EndorsementsConfig.ready()`).

Each stage connects itself here: follow-ups on the state machine
(`transitions.follow_up_register`), the ledger's funds handler
(`ledger.handlers.register_funds_handler`) and the gateway's confirmation handler
(`insurers.handlers.register_confirmation_handler`). Registering twice is a no-op.
"""


def connect() -> None:
    """Register every stage's hooks."""
