"""Insurers and how EMS talks to them.

An insurer has one protocol (REST, SOAP or SFTP) with its connection settings, up to two
active webhook secrets (rotation), a dispatch window and batch size for the scheduler,
a retry policy for the gateway and a circuit breaker state. The webhook secrets and the
credentials are encrypted at rest (`ems.secret_fields`).
"""

from django.db import models
from django.utils import timezone

from ems.secret_fields import EncryptedJSONField, EncryptedTextField


class Insurer(models.Model):
    class Protocol(models.TextChoices):
        REST = "REST"
        SOAP = "SOAP"
        SFTP = "SFTP"

    class CircuitState(models.TextChoices):
        CLOSED = "CLOSED"
        OPEN = "OPEN"
        HALF_OPEN = "HALF_OPEN"

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    protocol = models.CharField(max_length=4, choices=Protocol.choices)
    endpoint_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="REST base URL, SOAP WSDL URL or sftp://host:port/path",
    )
    connection = models.JSONField(default=dict, blank=True, help_text="non-secret protocol options")
    # Secret columns are encrypted at rest (ems.secret_fields); Python sees plaintext.
    credentials = EncryptedJSONField(default=dict, blank=True, help_text="secrets; never logged")
    webhook_secret_primary = EncryptedTextField()
    webhook_secret_secondary = EncryptedTextField(
        blank=True,
        help_text="the previous secret, accepted during rotation",
    )
    dispatch_window_seconds = models.PositiveIntegerField(default=60)
    dispatch_batch_size = models.PositiveIntegerField(default=500)
    retry_max_attempts = models.PositiveSmallIntegerField(default=6)
    retry_base_seconds = models.PositiveIntegerField(default=5)
    request_timeout_seconds = models.PositiveSmallIntegerField(default=15)
    circuit_state = models.CharField(max_length=10, choices=CircuitState.choices, default=CircuitState.CLOSED)
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    circuit_failures = models.PositiveIntegerField(default=0, help_text="consecutive transient failures")
    circuit_failure_threshold = models.PositiveSmallIntegerField(default=5)
    circuit_cooldown_seconds = models.PositiveIntegerField(default=30)
    circuit_last_error = models.TextField(blank=True)
    rate_limit_per_second = models.PositiveIntegerField(default=20, help_text="calls per second, all workers")
    sla_inclusion_days = models.PositiveSmallIntegerField(default=15)
    sla_correction_days = models.PositiveSmallIntegerField(default=7)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        permissions = [("reset_circuit", "Can reset an insurer's circuit breaker")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(dispatch_batch_size__gte=1),
                name="insurer_batch_size_positive",
            ),
            models.CheckConstraint(
                condition=~models.Q(webhook_secret_primary=""),
                name="insurer_webhook_secret_set",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Dispatch(models.Model):
    """One send to one insurer: a window's credits or debits, or one item retried alone.

    The idempotency key is deterministic (the insurer and its items' keys), so every retry of
    the same dispatch carries the same key and the insurer can answer it twice without acting
    twice. A dispatch is live until all its items are final; see `DispatchItem.is_live`.
    """

    class State(models.TextChoices):
        PENDING = "PENDING"  # created, not yet sent (or waiting for its next attempt)
        SENDING = "SENDING"  # a worker is calling the insurer
        SENT = "SENT"  # the insurer took it; some items still wait for an answer
        COMPLETED = "COMPLETED"  # every item has a final result
        FAILED = "FAILED"  # permanent error or retries exhausted (dead letter)

    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, related_name="dispatches")
    idempotency_key = models.CharField(max_length=80, unique=True)
    protocol = models.CharField(max_length=4, choices=Insurer.Protocol.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="dispatch_state_next")]

    def __str__(self) -> str:
        return self.idempotency_key


class DispatchItem(models.Model):
    """One endorsement inside a dispatch, by its tracking id (an opaque reference here).

    `payload` is exactly what the insurer sees. `result` moves PENDING -> ACCEPTED ->
    CONFIRMED, or to REJECTED; ACCEPTED is final for a credit or when the insurer prices
    inline, CONFIRMED and REJECTED always are. The partial unique index on `reference`
    where `is_live` keeps an endorsement in at most one live dispatch.
    """

    class Result(models.TextChoices):
        PENDING = "PENDING"
        ACCEPTED = "ACCEPTED"
        REJECTED = "REJECTED"
        CONFIRMED = "CONFIRMED"

    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="items")
    reference = models.CharField(max_length=64)
    kind = models.CharField(max_length=12)
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=80)
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.PENDING)
    insurer_reference = models.CharField(max_length=80, blank=True)
    insurer_member_id = models.CharField(max_length=80, blank=True)
    insurer_premium = models.BigIntegerField(null=True, blank=True, help_text="minor units")
    result_code = models.CharField(max_length=64, blank=True)
    result_reason = models.TextField(blank=True)
    result_data = models.JSONField(default=dict, blank=True)
    result_at = models.DateTimeField(null=True, blank=True)
    is_live = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reference"],
                condition=models.Q(is_live=True),
                name="dispatch_item_one_live_per_reference",
            ),
            models.UniqueConstraint(fields=["dispatch", "reference"], name="dispatch_item_once_per_dispatch"),
            models.CheckConstraint(
                condition=~models.Q(is_live=True, result__in=["REJECTED", "CONFIRMED"]),
                name="dispatch_item_final_not_live",
            ),
        ]
        indexes = [models.Index(fields=["reference"], name="dispatch_item_reference")]

    def __str__(self) -> str:
        return f"{self.reference} in {self.dispatch_id}"


class WebhookEvent(models.Model):
    """An event an insurer sent to our webhook, stored as received before we answer 2xx.

    `(insurer, event_id)` is unique: a redelivery is recognised and changes nothing.
    `body` is the event's JSON text as received (the exact request body for `notify`).
    `processed_at` is set once the event's result was recorded (`insurers.webhook_events`);
    a sweep re-drives events left unprocessed. `flag` marks an event ops must look at
    (a tracking id the gateway never sent, or data missing for its type); flagged events
    are stored and answered 2xx but not applied.
    """

    class Type(models.TextChoices):
        ACCEPTED = "endorsement.accepted"
        REJECTED = "endorsement.rejected"
        CONFIRMED = "endorsement.confirmed"
        STATEMENT = "statement.available"

    class Flag(models.TextChoices):
        NONE = "", "none"
        UNKNOWN_TRACKING_ID = "unknown_tracking_id", "unknown tracking id"
        INCOMPLETE_DATA = "incomplete_data", "incomplete data"

    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, related_name="webhook_events")
    event_id = models.CharField(max_length=128)
    type = models.CharField(max_length=40, choices=Type.choices)
    tracking_id = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(null=True, blank=True)
    body = models.TextField(help_text="the event as received")
    headers = models.JSONField(default=dict, blank=True, help_text="signature time, request id, user agent")
    flag = models.CharField(max_length=24, choices=Flag.choices, default=Flag.NONE, blank=True)
    flag_reason = models.CharField(max_length=300, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    process_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["insurer", "event_id"], name="webhook_event_once_per_insurer"),
        ]
        indexes = [
            models.Index(
                fields=["received_at"],
                condition=models.Q(processed_at__isnull=True, flag=""),
                name="webhook_event_unprocessed",
            ),
            models.Index(fields=["tracking_id"], name="webhook_event_tracking_id"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
