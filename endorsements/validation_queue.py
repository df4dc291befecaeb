"""Single requests wait for validation in a Redis list; one task validates them together.

An API request is stored RECEIVED and answered at once; its validation runs in Celery.
One Celery message per request cost the web process more CPU than any statement of the
request (building and publishing a kombu message) and the worker one task per request.
Instead, after commit, the id is appended to a Redis list and, when no drain is already
due, one `endorsements_validate_pending_task` is queued (both in one Redis round trip).
The task pops ids in hundreds and validates each group set-based
(`services.endorsements_validate`, safe to run twice); before it ends it clears the
kick and re-queues itself if ids arrived meanwhile, so none waits for the next request.

Nothing is lost: an id whose push failed (Redis down) or whose task died after popping
it is still RECEIVED in the database, and the beat sweep (`endorsements_received_sweep`)
validates every request left RECEIVED for a few minutes.
"""

import structlog
from redis.exceptions import RedisError

from ems.redis_lock import redis_client

log = structlog.get_logger(__name__)

PENDING_KEY = "ems:endorsements:to-validate"
KICK_KEY = "ems:endorsements:validate-kick"
# A lost drain task only delays validation until the key expires and a new request kicks.
KICK_MILLISECONDS = 30_000
POP = 500


def validation_request(endorsement_id: int) -> None:
    """After commit: queue one stored RECEIVED request for validation."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.rpush(PENDING_KEY, endorsement_id)
        pipe.set(KICK_KEY, "1", nx=True, px=KICK_MILLISECONDS)
        _, first = pipe.execute()
    except RedisError:
        log.warning("endorsement.validation_queue_unavailable", endorsement_id=endorsement_id)
        return  # the sweep validates it
    if first:
        _drain_queue()


def _drain_queue() -> None:
    from kombu.exceptions import OperationalError

    from endorsements.tasks import endorsements_validate_pending_task

    try:
        endorsements_validate_pending_task.delay()
    except OperationalError:
        log.warning("endorsement.validation_kick_failed")


def validate_pending() -> int:
    """Validate every queued request, a few hundred at a time. Returns how many were popped."""
    from endorsements.services import endorsements_validate

    client = redis_client()
    popped = 0
    while True:
        raw = client.lpop(PENDING_KEY, POP)
        if not raw:
            break
        ids = sorted({int(value) for value in raw})
        endorsements_validate(endorsement_ids=ids)
        popped += len(raw)
    client.delete(KICK_KEY)
    # An id pushed after the last pop found the kick still set: drain again for it.
    if client.llen(PENDING_KEY) and client.set(KICK_KEY, "1", nx=True, px=KICK_MILLISECONDS):
        _drain_queue()
    return popped
