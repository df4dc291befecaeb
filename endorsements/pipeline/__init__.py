"""The pipeline: what happens to a request after validation, stage by stage.

VALIDATED -> (review gate) -> fund lock -> SENT -> CONFIRMED -> ACTIVE. Each stage is a
module here with thin Celery tasks over it in `endorsements/tasks.py`; every move goes
through `endorsements.transitions.endorsement_transition`. `wiring.connect()` (called
from `EndorsementsConfig.ready()`) registers the stages' follow-ups, the ledger's funds
handler and the gateway's confirmation handler.
"""
