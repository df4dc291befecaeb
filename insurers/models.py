"""Insurers and how EMS talks to them.

An insurer has one protocol (REST, SOAP or SFTP) with its connection settings, up to two
active webhook secrets (rotation), a dispatch window and batch size for the scheduler,
a retry policy for the gateway and a circuit breaker state.
"""

from django.db import models


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
    credentials = models.JSONField(default=dict, blank=True, help_text="secrets; never logged")
    webhook_secret_primary = models.CharField(max_length=128)
    webhook_secret_secondary = models.CharField(
        max_length=128,
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
    sla_inclusion_days = models.PositiveSmallIntegerField(default=15)
    sla_correction_days = models.PositiveSmallIntegerField(default=7)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
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
