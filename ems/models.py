"""Platform tables: the tenant and its credentials, the transactional outbox and stored
idempotent responses.

Design overview
- `Employer` is the tenant. HR users (`EmployerMembership`) and API clients (`ApiClient`,
  secrets stored hashed: `ems.identity`) belong to exactly one employer; every query they
  make is scoped by `ems.tenancy`. The domain apps (ledger, endorsements) point down to
  `Employer`. The three tables keep the names they had in `endorsements` (`db_table`), where
  they were created; the move changed Django's state only (docs/decisions.md).
- `OutboxEvent`: a row written in the caller's transaction for every Kafka event and
  every Mongo audit record, or one row for a group of many Kafka events written
  together (a file's chunk; `ems.outbox.events_bulk_emit`). The relay
  (`ems.outbox_relay.relay_pending`) delivers rows in id order per sink, marks a row
  delivered only after the sink acknowledged, and backs off per sink while it is down.
  Delivery is at least once; consumers dedupe by `event_id`.
- `IdempotencyRecord`: the first response to a POST carrying `Idempotency-Key`, per
  caller, keyed by (caller, key), with the hash of the request body.
"""

import uuid

from django.conf import settings
from django.db import models

from ems.secret_fields import SecretHashField


class OutboxEvent(models.Model):
    class Sink(models.TextChoices):
        KAFKA = "KAFKA", "Kafka topic"
        MONGO = "MONGO", "MongoDB collection"

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    sink = models.CharField(max_length=8, choices=Sink.choices)
    destination = models.CharField(max_length=100, help_text="Kafka topic or Mongo collection")
    key = models.CharField(max_length=100, blank=True)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    event_count = models.PositiveIntegerField(
        default=1, help_text="Kafka messages the row stands for: 1, or the events of a group row"
    )

    class Meta:
        permissions = [
            ("view_audit_trail", "Can view the audit trail"),
            ("retry_outboxevent", "Can clear an outbox sink's backoff"),
        ]
        indexes = [
            models.Index(
                fields=["sink", "id"],
                name="outbox_pending_idx",
                condition=models.Q(delivered_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.sink}:{self.destination}:{self.event_id}"


class IdempotencyRecord(models.Model):
    class State(models.TextChoices):
        IN_FLIGHT = "IN_FLIGHT"
        DONE = "DONE"

    caller = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    scope = models.CharField(max_length=100, help_text="the endpoint the key was used on")
    request_hash = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    # the first response's Location header (created resources), replayed with it; a database
    # default, so the claim INSERT (raw SQL) and processes of the last release need not name it
    response_location = models.CharField(max_length=500, blank=True, db_default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "scope", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.caller}:{self.key}"


class Employer(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=20, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "endorsements_employer"
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class EmployerMembership(models.Model):
    """Links an HR user (an ordinary, non-staff Django user) to their one employer."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="employer_membership",
    )
    employer = models.ForeignKey(Employer, on_delete=models.PROTECT, related_name="hr_users")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "endorsements_employermembership"

    def __str__(self) -> str:
        return f"{self.user} @ {self.employer.code}"


class ApiClient(models.Model):
    """An employer's machine client (OAuth2 client credentials). Secrets are stored hashed."""

    employer = models.ForeignKey(Employer, on_delete=models.PROTECT, related_name="api_clients")
    name = models.CharField(max_length=200)
    client_id = models.CharField(max_length=64, unique=True)
    secret_hash = SecretHashField(max_length=128)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_token_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "endorsements_apiclient"
        ordering = ["employer__code", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"
