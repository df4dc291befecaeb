"""Periodic ledger sweeps (django-celery-beat). Thin: take the sweeper lock, call one service.

- `ledger.hold_expiry_sweep`: expire PENDING holds past their expiry (`hold_expire`),
  which also wakes the parked queues of the accounts that got money back.
- `ledger.parked_sweep`: wake every account whose queue has waiting requests
  (`parked_wake`), so nothing parked is forgotten if a wake was missed.

Both are safe to run twice or concurrently; the Redis lock only saves duplicate work.
"""

import structlog
from celery import shared_task

from ledger import parking, selectors, services
from ledger.locks import sweeper_lock

log = structlog.get_logger(__name__)


@shared_task(name="ledger.hold_expiry_sweep", ignore_result=True, acks_late=True)
def hold_expiry_sweep() -> int:
    with sweeper_lock("hold_expiry_sweep") as should_run:
        if not should_run:
            return 0
        expired = services.hold_expire()
    if expired:
        log.info("ledger.holds_expired", count=expired)
    return expired


@shared_task(name="ledger.parked_sweep", ignore_result=True, acks_late=True)
def parked_sweep() -> int:
    placed = 0
    with sweeper_lock("parked_sweep") as should_run:
        if not should_run:
            return 0
        for account_id in selectors.accounts_with_parked():
            placed += len(parking.parked_wake(account_id=account_id))
    if placed:
        log.info("ledger.parked_placed", count=placed)
    return placed
