"""The Endorsement Account (EA) ledger.

Design overview
- `Account` is one employer's prepaid account with one insurer. `posted` is the sum of
  its entries; `held` the sum of its pending holds; `available = posted - held` and must
  never go below zero. The database maintains `posted` and `held` itself: triggers
  (migration 0003) add each inserted entry to `posted` and each pending hold to `held`,
  take a resolved hold back out of `held`, and refuse any other change to either column.
  A CHECK constraint refuses `available < 0`. Services never write the two columns.
- `Entry.balance_after` is the running balance, set from `posted` as the entry posts.
- `Entry` is an immutable signed line (TOPUP, CAPTURE, REFUND, ADJUSTMENT).
- `Hold` reserves money like a two-phase pending transfer: PENDING, then exactly one of
  CAPTURED (all or part; the rest returns to available), RELEASED or EXPIRED.
- `TopUp` and `Adjustment` are requests that a second person approves (maker-checker);
  approval posts an entry. `requested_by` is the maker's principal (`user:<id>` or
  `client:<client_id>`) on both; a CHECK refuses a decider who is the maker.
- `ParkedRequest` queues a hold that did not fit, by reference, until money arrives.

The ledger knows references (strings such as a tracking id), not endorsements.
All amounts are integer minor units.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Cast, Concat

from ems.formatting import money_text


def _maker_is_not_checker(name: str) -> models.CheckConstraint:
    """A request's decider is never its maker (`requested_by` is the maker's principal)."""
    checker = Concat(models.Value("user:"), Cast("decided_by", output_field=models.CharField()))
    return models.CheckConstraint(
        condition=Q(decided_by__isnull=True) | ~Q(requested_by=checker),
        name=name,
    )


class Account(models.Model):
    employer = models.ForeignKey("ems.Employer", on_delete=models.PROTECT, related_name="accounts")
    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="accounts")
    currency = models.CharField(max_length=3, default="INR")
    posted = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    low_balance_threshold = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["employer__code", "insurer__code"]
        constraints = [
            models.UniqueConstraint(fields=["employer", "insurer"], name="account_unique_employer_insurer"),
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_non_negative"),
            models.CheckConstraint(
                condition=Q(posted__gte=F("held")),
                name="account_available_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(low_balance_threshold__gte=0),
                name="account_threshold_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"EA {self.employer_id}/{self.insurer_id}"

    @property
    def available(self) -> int:
        return self.posted - self.held


class Entry(models.Model):
    class Kind(models.TextChoices):
        TOPUP = "TOPUP"
        CAPTURE = "CAPTURE"
        REFUND = "REFUND"
        ADJUSTMENT = "ADJUSTMENT"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="signed minor units: credit to the EA > 0")
    reference = models.CharField(max_length=100)
    idempotency_key = models.CharField(max_length=255)
    hold = models.OneToOneField(
        "Hold",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="capture_entry",
    )
    memo = models.CharField(max_length=500, blank=True)
    balance_after = models.BigIntegerField(
        help_text="the account's posted balance right after this entry (the running balance)"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "entries"
        indexes = [models.Index(fields=["account", "-id"], name="entry_account_recent_idx")]
        constraints = [
            models.UniqueConstraint(fields=["account", "idempotency_key"], name="entry_unique_idempotency"),
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_non_zero"),
            models.CheckConstraint(
                condition=(Q(kind__in=["TOPUP", "REFUND"]) & Q(amount__gt=0))
                | (Q(kind="CAPTURE") & Q(amount__lt=0) & Q(hold__isnull=False))
                | Q(kind="ADJUSTMENT"),
                name="entry_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {money_text(self.amount)} ({self.reference})"


class Hold(models.Model):
    class State(models.TextChoices):
        PENDING = "PENDING"
        CAPTURED = "CAPTURED"
        RELEASED = "RELEASED"
        EXPIRED = "EXPIRED"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    reference = models.CharField(max_length=100)
    amount = models.BigIntegerField()
    captured_amount = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    idempotency_key = models.CharField(max_length=255)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="hold_pending_expiry_idx",
                condition=Q(state="PENDING"),
            ),
            models.Index(fields=["account", "-id"], name="hold_account_recent_idx"),
            models.Index(fields=["account", "reference"], name="hold_account_reference_idx"),
        ]
        permissions = [("release_hold", "Can release a pending hold")]
        constraints = [
            models.UniqueConstraint(fields=["account", "idempotency_key"], name="hold_unique_idempotency"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=(Q(state="PENDING") & Q(resolved_at__isnull=True) & Q(captured_amount__isnull=True))
                | (
                    Q(state="CAPTURED")
                    & Q(resolved_at__isnull=False)
                    & Q(captured_amount__gt=0)
                    & Q(captured_amount__lte=F("amount"))
                )
                | (
                    Q(state__in=["RELEASED", "EXPIRED"])
                    & Q(resolved_at__isnull=False)
                    & Q(captured_amount__isnull=True)
                ),
                name="hold_resolution_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"hold {money_text(self.amount)} {self.state} ({self.reference})"


class TopUp(models.Model):
    class State(models.TextChoices):
        PENDING = "PENDING"
        APPROVED = "APPROVED"
        REJECTED = "REJECTED"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="topups")
    amount = models.BigIntegerField()
    payment_reference = models.CharField(max_length=100)
    # What the employer says about the payment, for the approver: optional, never money.
    payment_date = models.DateField(null=True, blank=True, help_text="the day the employer says it paid")
    proof_note = models.CharField(
        max_length=500,
        blank=True,
        default="",
        db_default="",
        help_text="where the proof is (a bank advice, a UTR)",
    )
    idempotency_key = models.CharField(max_length=255)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    requested_by = models.CharField(max_length=100, help_text="user:<id> or client:<client_id>")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decision_note = models.CharField(max_length=500, blank=True)
    entry = models.OneToOneField(Entry, null=True, blank=True, on_delete=models.PROTECT, related_name="topup")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "top-up"
        permissions = [("approve_topup", "Can approve or reject top-ups (finance approver)")]
        constraints = [
            models.UniqueConstraint(fields=["account", "idempotency_key"], name="topup_unique_idempotency"),
            models.UniqueConstraint(
                fields=["account", "payment_reference"],
                condition=~Q(state="REJECTED"),
                name="topup_payment_reference_once",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="topup_amount_positive"),
            models.CheckConstraint(
                condition=(Q(state="APPROVED") & Q(entry__isnull=False))
                | (~Q(state="APPROVED") & Q(entry__isnull=True)),
                name="topup_entry_iff_approved",
            ),
            _maker_is_not_checker("topup_maker_is_not_checker"),
        ]

    def __str__(self) -> str:
        return f"top-up {money_text(self.amount)} {self.state}"


class Adjustment(models.Model):
    class State(models.TextChoices):
        PENDING = "PENDING"
        APPROVED = "APPROVED"
        REJECTED = "REJECTED"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="adjustments")
    amount = models.BigIntegerField(help_text="signed minor units")
    reason = models.CharField(max_length=500)
    idempotency_key = models.CharField(max_length=255)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    requested_by = models.CharField(max_length=100, help_text="user:<id> or client:<client_id>")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decision_note = models.CharField(max_length=500, blank=True)
    entry = models.OneToOneField(
        Entry,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="adjustment",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("approve_adjustment", "Can approve or reject adjustments (finance approver)")]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "idempotency_key"],
                name="adjustment_unique_idempotency",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="adjustment_amount_non_zero"),
            _maker_is_not_checker("adjustment_maker_is_not_checker"),
        ]

    def __str__(self) -> str:
        return f"adjustment {money_text(self.amount)} {self.state}"


class ParkedRequest(models.Model):
    """A hold that did not fit, waiting (oldest first) for the account's available to grow."""

    class State(models.TextChoices):
        PARKED = "PARKED"
        PLACED = "PLACED"
        CANCELLED = "CANCELLED"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="parked")
    reference = models.CharField(max_length=100)
    amount = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=255)
    state = models.CharField(max_length=9, choices=State.choices, default=State.PARKED)
    hold = models.OneToOneField(
        Hold,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="parked_request",
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="the expiry asked for; the hold gets it if still ahead when placed"
    )
    cancel_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["account", "id"]
        permissions = [("wake_parked", "Can wake an account's parked queue or cancel a parked request")]
        indexes = [
            models.Index(
                fields=["account", "id"],
                name="parked_queue_idx",
                condition=Q(state="PARKED"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["account", "idempotency_key"], name="parked_unique_idempotency"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="parked_amount_positive"),
            models.CheckConstraint(
                condition=(Q(state="PARKED") & Q(hold__isnull=True) & Q(resolved_at__isnull=True))
                | (Q(state="PLACED") & Q(hold__isnull=False) & Q(resolved_at__isnull=False))
                | (Q(state="CANCELLED") & Q(hold__isnull=True) & Q(resolved_at__isnull=False)),
                name="parked_resolution_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"parked {money_text(self.amount)} ({self.reference})"
