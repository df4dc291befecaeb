"""An insurer's secrets through the admin (`insurers.services.insurer_settings_save`).

Typed once, never shown again: not on a page, in a list, an export, a log line, an outbox
row or an audit record. Changing the endpoint, connection, credentials or secrets is
audited by field name (who, when, which fields), never by value.
"""

import io
import json
import logging

import pytest
from django.core.management import call_command
from django.urls import reverse

from ems.models import OutboxEvent
from insurers.models import Insurer
from tests.factories import InsurerFactory, UserFactory

pytestmark = pytest.mark.django_db

PRIMARY = "whsec_typed_once_0123456789abcdefWXYZ"
ROTATED = "whsec_rotated_in_0123456789abcdefQRST"
PASSWORD = "soap-password-typed-once-42"
NEW_PASSWORD = "soap-password-replaced-43"

INSURER_FORM = {
    "name": "Typed Insurer",
    "protocol": "SOAP",
    "is_active": "on",
    "endpoint_url": "http://127.0.0.1:8766/?wsdl",
    "connection": "{}",
    "request_timeout_seconds": 15,
    "dispatch_window_seconds": 60,
    "dispatch_batch_size": 500,
    "retry_max_attempts": 6,
    "retry_base_seconds": 5,
    "sla_inclusion_days": 15,
    "sla_correction_days": 7,
    "circuit_failure_threshold": 5,
    "circuit_cooldown_seconds": 30,
    "rate_limit_per_second": 20,
}


def audit_records() -> list[dict]:
    rows = OutboxEvent.objects.filter(sink=OutboxEvent.Sink.MONGO, destination="audit_logs").order_by("id")
    return [row.payload for row in rows if row.payload["action"].startswith("insurer.")]


def everything_written(client, insurer: Insurer) -> str:
    """Every place a secret could leak: the admin's pages, an export, the outbox."""
    pages = [
        client.get(reverse("admin:insurers_insurer_changelist")),
        client.get(reverse("admin:insurers_insurer_change", args=[insurer.pk])),
        client.get(reverse("admin:insurers_insurer_history", args=[insurer.pk])),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200]
    export = io.StringIO()
    call_command("dumpdata", "insurers.insurer", stdout=export)
    outbox = json.dumps(list(OutboxEvent.objects.values_list("payload", flat=True)))
    return "\n".join([*(page.content.decode() for page in pages), export.getvalue(), outbox])


def test_secrets_typed_on_add_are_stored_and_never_shown_again(client, caplog):
    caplog.set_level(logging.DEBUG)
    superuser = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(superuser)
    # when
    response = client.post(
        reverse("admin:insurers_insurer_add"),
        {
            **INSURER_FORM,
            "code": "typed",
            "webhook_secret_primary": PRIMARY,
            "webhook_secret_secondary": "",
            "credentials": json.dumps({"username": "ems", "password": PASSWORD}),
        },
        follow=True,
    )
    # then: stored as typed, and no page, export, outbox row or log line holds it
    assert response.status_code == 200
    insurer = Insurer.objects.get(code="typed")
    assert (insurer.webhook_secret_primary, insurer.credentials) == (
        PRIMARY,
        {"username": "ems", "password": PASSWORD},
    )
    written = response.content.decode() + everything_written(client, insurer) + caplog.text
    assert PRIMARY not in written and PRIMARY[:-4] not in written
    assert PASSWORD not in written
    assert "••••••••WXYZ" in written  # the mask tells secrets apart
    # and the audit record names the fields, not the values
    assert [(record["actor"], record["action"], record["after"]) for record in audit_records()] == [
        (
            f"user:{superuser.pk}",
            "insurer.created",
            {"fields": ["endpoint_url", "credentials", "webhook_secret_primary"]},
        )
    ]


def test_the_add_form_never_renders_a_secret_back_when_it_is_refused(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        reverse("admin:insurers_insurer_add"),
        {
            **INSURER_FORM,
            "code": "",
            "webhook_secret_primary": PRIMARY,
            "credentials": json.dumps({"p": PASSWORD}),
        },
    )
    assert response.status_code == 200  # the form again, with its errors
    assert response.context["adminform"].form.errors["code"]
    page = response.content.decode()
    assert PRIMARY not in page and PASSWORD not in page
    assert not Insurer.objects.exists()


def change(client, insurer: Insurer, **fields):
    return client.post(
        reverse("admin:insurers_insurer_change", args=[insurer.pk]),
        {**INSURER_FORM, "endpoint_url": insurer.endpoint_url, **fields},
    )


def test_a_new_webhook_secret_rotates_and_the_change_is_audited_by_field_name(client, caplog):
    caplog.set_level(logging.DEBUG)
    insurer = InsurerFactory(
        protocol="SOAP",
        webhook_secret_primary=PRIMARY,
        credentials={"password": PASSWORD},
        **_plain_settings(),
    )
    superuser = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(superuser)
    # when: a new endpoint and a new secret
    response = change(client, insurer, endpoint_url="http://127.0.0.1:9766/?wsdl", new_webhook_secret=ROTATED)
    # then: the new secret signs, the old one is still accepted during rotation
    assert response.status_code == 302
    insurer.refresh_from_db()
    assert (insurer.endpoint_url, insurer.webhook_secret_primary, insurer.webhook_secret_secondary) == (
        "http://127.0.0.1:9766/?wsdl",
        ROTATED,
        PRIMARY,
    )
    assert insurer.credentials == {"password": PASSWORD}
    assert [(record["actor"], record["action"], record["after"]) for record in audit_records()] == [
        (
            f"user:{superuser.pk}",
            "insurer.settings_changed",
            {"fields": ["endpoint_url", "webhook_secret_primary", "webhook_secret_secondary"]},
        )
    ]
    written = everything_written(client, insurer) + caplog.text
    for secret in (PRIMARY, ROTATED, PASSWORD):
        assert secret not in written and secret[:-4] not in written
    # when: the insurer signs with the new one only, and the credentials are replaced
    change(client, insurer, drop_previous_secret="on", new_credentials=json.dumps({"password": NEW_PASSWORD}))
    # then
    insurer.refresh_from_db()
    assert (insurer.webhook_secret_primary, insurer.webhook_secret_secondary, insurer.credentials) == (
        ROTATED,
        "",
        {"password": NEW_PASSWORD},
    )
    assert [record["after"] for record in audit_records()][1:] == [
        {"fields": ["credentials", "webhook_secret_secondary"]}
    ]
    assert NEW_PASSWORD not in everything_written(client, insurer)


def test_a_change_that_touches_no_connection_setting_is_not_audited(client):
    insurer = InsurerFactory(protocol="SOAP", webhook_secret_primary=PRIMARY, **_plain_settings())
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = change(client, insurer, name="Renamed Insurer", new_credentials="")
    assert response.status_code == 302
    insurer.refresh_from_db()
    assert (insurer.name, insurer.webhook_secret_primary, insurer.credentials) == (
        "Renamed Insurer",
        PRIMARY,
        {},
    )
    assert audit_records() == []


def test_new_credentials_that_are_not_an_object_are_refused_and_nothing_changes(client):
    insurer = InsurerFactory(protocol="SOAP", credentials={"password": PASSWORD}, **_plain_settings())
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = change(client, insurer, new_credentials=json.dumps(["not", "an", "object"]))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["new_credentials"] == [
        "Credentials are a JSON object of names to secrets."
    ]
    insurer.refresh_from_db()
    assert insurer.credentials == {"password": PASSWORD}
    assert audit_records() == []


def _plain_settings() -> dict:
    return {"name": INSURER_FORM["name"], "endpoint_url": INSURER_FORM["endpoint_url"]}
