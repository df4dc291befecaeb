"""Ledger errors: each a stable code and an HTTP status (rendered by ems.api_errors).

Codes are a contract with API clients and the other apps: never rename one.
"""

from ems.errors import EmsError


class LedgerError(EmsError):
    code = "ledger_error"
    status = 400
    message = "The ledger refused the request."


class AmountInvalid(LedgerError):
    code = "amount_invalid"
    status = 422
    message = "The amount must be a whole number of minor units, greater than zero and within the limit."


class ReferenceInvalid(LedgerError):
    code = "reference_invalid"
    status = 422
    message = "The reference must be 1 to 100 characters."


class IdempotencyKeyInvalid(LedgerError):
    code = "idempotency_key_invalid"
    status = 422
    message = "The idempotency key must be 1 to 255 characters."


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"
    status = 422
    message = "This idempotency key was already used for a different operation."


class HoldExpiryInvalid(LedgerError):
    code = "hold_expiry_invalid"
    status = 422
    message = "A hold's expiry must be a timezone-aware time in the future."


class BatchInvalid(LedgerError):
    code = "batch_invalid"
    status = 422
    message = "A batch must hold 1 to LEDGER_MAX_BATCH_HOLDS items with distinct keys and distinct holds."


class AccountNotFound(LedgerError):
    code = "account_not_found"
    status = 404
    message = "No such account."


class AccountRequired(LedgerError):
    code = "account_required"
    status = 422
    message = "The employer has more than one account: say which one (account_id)."


class HoldNotFound(LedgerError):
    code = "hold_not_found"
    status = 404
    message = "No such hold."


class TopUpNotFound(LedgerError):
    code = "topup_not_found"
    status = 404
    message = "No such top-up."


class AdjustmentNotFound(LedgerError):
    code = "adjustment_not_found"
    status = 404
    message = "No such adjustment."


class ParkedRequestNotFound(LedgerError):
    code = "parked_request_not_found"
    status = 404
    message = "No such parked request."


class HoldAlreadyResolved(LedgerError):
    code = "hold_already_resolved"
    status = 409
    message = "The hold is already resolved (captured, released or expired)."


class CaptureExceedsHold(LedgerError):
    code = "capture_exceeds_hold"
    status = 422
    message = "A capture cannot be larger than its hold."


class TopUpAlreadyDecided(LedgerError):
    code = "topup_already_decided"
    status = 409
    message = "The top-up was already approved or rejected."


class PaymentReferenceDeclared(LedgerError):
    code = "payment_reference_declared"
    status = 409
    message = "This payment reference was already declared on the account (see details: topup_id)."


class PaymentDateInvalid(LedgerError):
    code = "payment_date_invalid"
    status = 422
    message = "The payment date must be a date (YYYY-MM-DD), not after today."


class ProofNoteInvalid(LedgerError):
    code = "proof_note_invalid"
    status = 422
    message = "The proof note must be text of at most 500 characters."


class AdjustmentAlreadyDecided(LedgerError):
    code = "adjustment_already_decided"
    status = 409
    message = "The adjustment was already approved or rejected."


class ParkedRequestAlreadyResolved(LedgerError):
    code = "parked_request_already_resolved"
    status = 409
    message = "The parked request was already placed or cancelled."


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"
    status = 409
    message = "The account's available balance is too low for this debit."


class MakerCannotApprove(LedgerError):
    code = "maker_cannot_approve"
    status = 403
    message = "The person who asked for this cannot also approve it (maker-checker)."


class ApproverNotPermitted(LedgerError):
    code = "approver_not_permitted"
    status = 403
    message = "This user may not approve or reject this (finance approver permission needed)."


class NoteRequired(LedgerError):
    code = "note_required"
    status = 422
    message = "Say why (1 to 500 characters)."
