"""Single requests wait for validation in a Redis list; one task validates them together.

An API request is stored RECEIVED and answered at once; its validation runs in Celery.
One Celery message per request cost the web process more CPU than any statement of the
request (building and publishing a kombu message) and the worker one task per request.
Instead, after commit, the id is appended to a Redis list and, when no drain is already
due, one `endorsements_validate_pending_task` is queued (both in one Redis round trip).
The task pops ids in hundreds and validates each group set-based
(`services.endorsements_validate`, safe to run twice); before it ends it clears the
kick and re-queues itself if ids arrived meanwhile, so none waits for the next request.

Nothing is lost, and nothing waits for the next request: an id whose push failed (Redis
down) or whose drain died after popping it is still RECEIVED in the database, and a drain
whose worker died leaves its ids queued and its kick set (for VALIDATION_KICK_SECONDS).
`validation_drain_sweep` (beat, every VALIDATION_DRAIN_SWEEP_SECONDS) finds no kick once
the dead drain's has expired: it queues a drain for ids still waiting, or, with none
waiting, re-queues the requests left RECEIVED for VALIDATION_LOST_AFTER_SECONDS. A drain
that loses its database connection puts the ids it popped back before its task retries.
"""

from datetime import timedelta

import structlog
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from ems.errors import DATABASE_TRANSIENT_ERRORS
from ems.redis_lock import redis_client

log = structlog.get_logger(__name__)

PENDING_KEY = "ems:endorsements:to-validate"
KICK_KEY = "ems:endorsements:validate-kick"
# A lost drain task only delays validation until the key expires and a new request kicks,
# or the drain sweep does (VALIDATION_KICK_SECONDS).
KICK_MILLISECONDS = int(settings.VALIDATION_KICK_SECONDS * 1000)
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
        try:
            endorsements_validate(endorsement_ids=ids)
        except DATABASE_TRANSIENT_ERRORS:
            client.lpush(PENDING_KEY, *ids)  # back at the head, for the task's retry
            raise
        popped += len(raw)
    client.delete(KICK_KEY)
    # An id pushed after the last pop found the kick still set: drain again for it.
    if client.llen(PENDING_KEY) and client.set(KICK_KEY, "1", nx=True, px=KICK_MILLISECONDS):
        _drain_queue()
    return popped


def validation_drain_sweep(*, lost_after_seconds: float, limit: int = 10_000) -> int:
    """When no drain is due or running: queue one for ids still waiting, or re-queue the
    requests left RECEIVED (their drain died after popping them). Returns how many ids were
    re-queued."""
    from endorsements.models import EndorsementRequest, EndorsementState

    client = redis_client()
    if client.exists(KICK_KEY):
        return 0  # a drain is due or running (or died less than KICK_MILLISECONDS ago)
    requeued = 0
    if not client.llen(PENDING_KEY):
        cutoff = timezone.now() - timedelta(seconds=lost_after_seconds)
        ids = list(
            EndorsementRequest.objects.filter(state=EndorsementState.RECEIVED, received_at__lt=cutoff)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        client.rpush(PENDING_KEY, *ids)
        requeued = len(ids)
        log.warning("endorsement.validation_requeued", count=requeued)
    if client.set(KICK_KEY, "1", nx=True, px=KICK_MILLISECONDS):
        log.warning("endorsement.validation_drain_restarted", requeued=requeued)
        _drain_queue()
    return requeued
