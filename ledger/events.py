"""The events the ledger emits on Kafka topic `ems.ledger` (via the outbox), keyed by account id.

Every event's `data` carries the account's balances after the change (`posted`, `held`,
`available`, all minor units) plus the fields of the thing that changed. Event types:

    ledger.topup_requested   ledger.topup_approved    ledger.topup_rejected
    ledger.hold_placed       ledger.hold_parked       ledger.holds_batch_placed
    ledger.hold_captured     ledger.hold_released     ledger.hold_expired
    ledger.parked_cancelled  ledger.refund_posted
    ledger.holds_batch_captured  ledger.holds_batch_released  ledger.refunds_batch_posted
    ledger.adjustment_requested  ledger.adjustment_approved  ledger.adjustment_rejected
    ledger.account_opened    ledger.account_updated

`ledger.holds_batch_placed` is one event for a whole dispatch (`holds`: the placed holds,
`parked`: the parked requests), so a 500-debit dispatch is one outbox row, not 500. The
batches of `ledger.batches` likewise: `holds_batch_captured` (`holds`: each with its
`captured_amount`, `entry_id` and `balance_after`), `holds_batch_released` (`holds`,
`parked_cancelled`, `reason`), `refunds_batch_posted` (`entries`).
"""

from ledger.models import Account, Entry, Hold, ParkedRequest, TopUp


def balances(*, posted: int, held: int) -> dict:
    return {"posted": posted, "held": held, "available": posted - held}


def account_data(account: Account) -> dict:
    return {
        "account_id": account.pk,
        "insurer_id": account.insurer_id,
        "currency": account.currency,
        **balances(posted=account.posted, held=account.held),
    }


def hold_data(hold: Hold) -> dict:
    return {
        "hold_id": hold.pk,
        "reference": hold.reference,
        "amount": hold.amount,
        "state": hold.state,
        "captured_amount": hold.captured_amount,
        "expires_at": hold.expires_at,
    }


def parked_data(parked: ParkedRequest) -> dict:
    return {
        "parked_request_id": parked.pk,
        "reference": parked.reference,
        "amount": parked.amount,
        "state": parked.state,
        "hold_id": parked.hold_id,
    }


def entry_data(entry: Entry) -> dict:
    return {
        "entry_id": entry.pk,
        "kind": entry.kind,
        "amount": entry.amount,
        "reference": entry.reference,
        "balance_after": entry.balance_after,
        "hold_id": entry.hold_id,
    }


def topup_data(topup: TopUp) -> dict:
    return {
        "topup_id": topup.pk,
        "amount": topup.amount,
        "payment_reference": topup.payment_reference,
        "payment_date": topup.payment_date.isoformat() if topup.payment_date else None,
        "proof_note": topup.proof_note,
        "state": topup.state,
        "requested_by": topup.requested_by,
        "entry_id": topup.entry_id,
    }


def adjustment_data(adjustment) -> dict:
    return {
        "adjustment_id": adjustment.pk,
        "amount": adjustment.amount,
        "reason": adjustment.reason,
        "state": adjustment.state,
        "requested_by": adjustment.requested_by,
        "decided_by": adjustment.decided_by_id,
        "entry_id": adjustment.entry_id,
    }
