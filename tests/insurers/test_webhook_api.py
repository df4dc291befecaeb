"""The webhook doors (`insurers/api.py`): every refusal with its status and nothing stored or changed,
and what a signed, well-formed event does."""

import logging
import time

import pytest

from insurers import handlers
from insurers.models import DispatchItem, WebhookEvent
from insurers.webhooks import SIGNATURE_HEADER, signature_header
from tests.factories import InsurerFactory
from tests.insurers.webhook_doors import body_of, dispatched, event, notify_url, signed_post, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def insurer(db):
    return InsurerFactory(webhook_secret_primary="whsec_primary_0123456789abcdef")


@pytest.fixture
def recorded():
    """What the registered confirmation handler was told."""
    calls = []

    def handler(insurer_id, results):
        calls.append((insurer_id, list(results)))

    handlers.register_confirmation_handler(handler)
    yield calls
    handlers.unregister_confirmation_handler(handler)


def assert_refused(response, status, code, before):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"]["code"] == code
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert snapshot() == before


# --- refusals ----------------------------------------------------------------------------


def test_bad_signature(client, insurer):
    dispatched(insurer, "T-1")
    before = snapshot()
    body = body_of(event("e1", "T-1"))
    header = signature_header(["whsec_primary_0123456789abcdef"], body).replace("v1=", "v1=0", 1)[:-1]
    response = client.post(
        notify_url(insurer.pk), data=body, content_type="application/json", headers={SIGNATURE_HEADER: header}
    )
    assert_refused(response, 401, "signature_invalid", before)


def test_missing_header(client, insurer):
    before = snapshot()
    response = client.post(
        notify_url(insurer.pk), data=body_of(event("e1", "T-1")), content_type="application/json"
    )
    assert_refused(response, 401, "signature_missing", before)


@pytest.mark.parametrize("header", ["t=now,v1=abc", "v1=" + "0" * 64, "sha256=deadbeef"])
def test_malformed_header(client, insurer, header):
    before = snapshot()
    response = client.post(
        notify_url(insurer.pk),
        data=body_of(event("e1", "T-1")),
        content_type="application/json",
        headers={SIGNATURE_HEADER: header},
    )
    assert_refused(response, 401, "signature_malformed", before)


@pytest.mark.parametrize("skew", [-301, 301], ids=["stale", "future"])
def test_stale_and_future_timestamps(client, insurer, skew):
    dispatched(insurer, "T-1")
    before = snapshot()
    response = signed_post(
        client,
        insurer.pk,
        body_of(event("e1", "T-1")),
        [insurer.webhook_secret_primary],
        timestamp=int(time.time()) + skew,
    )
    assert_refused(response, 401, "signature_expired", before)


def test_unknown_insurer(client, insurer):
    before = snapshot()
    response = signed_post(
        client, insurer.pk + 1000, body_of(event("e1", "T-1")), [insurer.webhook_secret_primary]
    )
    assert_refused(response, 404, "not_found", before)


def test_inactive_insurer_is_unknown(client, insurer):
    insurer.is_active = False
    insurer.save(update_fields=["is_active"])
    before = snapshot()
    response = signed_post(client, insurer.pk, body_of(event("e1", "T-1")), [insurer.webhook_secret_primary])
    assert_refused(response, 404, "not_found", before)


def test_another_insurers_secret(client, insurer):
    other = InsurerFactory(webhook_secret_primary="whsec_other_insurer_fedcba9876543210")
    dispatched(insurer, "T-1")
    before = snapshot()
    response = signed_post(client, insurer.pk, body_of(event("e1", "T-1")), [other.webhook_secret_primary])
    assert_refused(response, 401, "signature_invalid", before)


def test_body_changed_after_signing(client, insurer):
    dispatched(insurer, "T-1")
    before = snapshot()
    signed = body_of(event("e1", "T-1"))
    changed = signed.replace(b"600000", b"100")
    header = signature_header([insurer.webhook_secret_primary], signed)
    response = client.post(
        notify_url(insurer.pk),
        data=changed,
        content_type="application/json",
        headers={SIGNATURE_HEADER: header},
    )
    assert_refused(response, 401, "signature_invalid", before)


@pytest.mark.parametrize("batch", [False, True])
def test_oversized_body(client, insurer, settings, batch):
    settings.WEBHOOK_MAX_BYTES = 2_000
    before = snapshot()
    body = body_of(event("e1", "T-1", padding="x" * 2_000))
    response = signed_post(client, insurer.pk, body, [insurer.webhook_secret_primary], batch=batch)
    assert_refused(response, 413, "payload_too_large", before)


def test_invalid_json(client, insurer):
    before = snapshot()
    response = signed_post(client, insurer.pk, b'{"event_id": "e1",', [insurer.webhook_secret_primary])
    assert_refused(response, 400, "malformed_request", before)


def test_unknown_event_type(client, insurer):
    dispatched(insurer, "T-1")
    before = snapshot()
    response = signed_post(
        client,
        insurer.pk,
        body_of(event("e1", "T-1", kind="endorsement.teleported")),
        [insurer.webhook_secret_primary],
    )
    assert_refused(response, 422, "unknown_event_type", before)
    assert response.json()["error"]["details"][0]["field"] == "type"


@pytest.mark.parametrize("missing", ["event_id", "type", "tracking_id"])
def test_a_required_field_missing(client, insurer, missing):
    before = snapshot()
    value = event("e1", "T-1")
    del value[missing]
    response = signed_post(client, insurer.pk, body_of(value), [insurer.webhook_secret_primary])
    assert_refused(response, 422, "validation_failed", before)
    assert [d["field"] for d in response.json()["error"]["details"]] == [missing]


def test_a_bearer_token_instead_of_a_signature(insurer, api):
    # `api` is an API client holding a valid bearer token of an employer
    dispatched(insurer, "T-1")
    before = snapshot()
    response = api.post(
        notify_url(insurer.pk), data=body_of(event("e1", "T-1")), content_type="application/json"
    )
    assert_refused(response, 401, "signature_missing", before)


# --- accepted ----------------------------------------------------------------------------


def test_a_confirmation_is_stored_answered_then_recorded_on_its_item(
    client, insurer, recorded, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1")
    body = body_of(event("e1", "T-1"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_post(client, insurer.pk, body, [insurer.webhook_secret_primary])
    # the answer came with the event stored and nothing applied yet: processing is handed on
    assert response.status_code == 202
    assert response.json() == {"event_id": "e1", "status": "received", "flag": ""}
    stored = WebhookEvent.objects.get()
    assert (stored.insurer_id, stored.event_id, stored.type, stored.tracking_id) == (
        insurer.pk,
        "e1",
        "endorsement.confirmed",
        "T-1",
    )
    assert stored.body == body.decode()
    assert stored.processed_at is None
    assert DispatchItem.objects.get().result == "PENDING"
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks(execute=True):
        callbacks[0]()  # the task, run by the worker after commit (eager here)
    item = DispatchItem.objects.get()
    assert (item.result, item.insurer_premium, item.insurer_member_id, item.is_live) == (
        "CONFIRMED",
        600_000,
        "M-1",
        False,
    )
    assert item.result_data["effective_date"] == "2026-12-01"
    assert item.result_data["source"] == "webhook"
    stored.refresh_from_db()
    assert stored.processed_at is not None
    assert stored.process_note == "applied"
    assert [(i, [r.reference for r in results]) for i, results in recorded] == [(insurer.pk, ["T-1"])]


def test_the_same_event_twice_changes_nothing(client, insurer, recorded, django_capture_on_commit_callbacks):
    dispatched(insurer, "T-1")
    body = body_of(event("e1", "T-1"))
    with django_capture_on_commit_callbacks(execute=True):
        first = signed_post(client, insurer.pk, body, [insurer.webhook_secret_primary])
    assert first.status_code == 202
    before = snapshot()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = signed_post(client, insurer.pk, body, [insurer.webhook_secret_primary])
    assert second.status_code == 200
    assert second.json() == {"event_id": "e1", "status": "already_received"}
    assert snapshot() == before
    assert callbacks == []
    assert len(recorded) == 1


def test_unknown_tracking_id_is_stored_flagged_and_answered_2xx(
    client, insurer, recorded, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1")
    other = InsurerFactory()
    dispatched(other, "T-OTHER")  # known, but not to this insurer
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(
            client, insurer.pk, body_of(event("e9", "T-OTHER")), [insurer.webhook_secret_primary]
        )
    assert response.status_code == 202
    assert response.json()["flag"] == "unknown_tracking_id"
    stored = WebhookEvent.objects.get()
    assert (stored.flag, stored.processed_at) == ("unknown_tracking_id", None)
    assert set(DispatchItem.objects.values_list("result", flat=True)) == {"PENDING"}
    assert recorded == []


def test_incomplete_confirmation_is_stored_flagged_not_applied(
    client, insurer, recorded, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1")
    incomplete = event("e1", "T-1", insurer_member_id="M-1")  # no premium, no effective date
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, insurer.pk, body_of(incomplete), [insurer.webhook_secret_primary])
    assert response.status_code == 202
    assert response.json()["flag"] == "incomplete_data"
    stored = WebhookEvent.objects.get()
    assert "insurer_premium" in stored.flag_reason and "effective_date" in stored.flag_reason
    assert DispatchItem.objects.get().result == "PENDING"
    assert recorded == []


def test_the_secondary_secret_during_rotation(client, insurer, django_capture_on_commit_callbacks):
    insurer.webhook_secret_secondary = "whsec_previous_secret_00000000"
    insurer.save(update_fields=["webhook_secret_secondary"])
    dispatched(insurer, "T-1", "T-2")
    with django_capture_on_commit_callbacks(execute=True):
        old_only = signed_post(
            client, insurer.pk, body_of(event("e1", "T-1")), ["whsec_previous_secret_00000000"]
        )
        both = signed_post(
            client,
            insurer.pk,
            body_of(event("e2", "T-2")),
            ["whsec_previous_secret_00000000", insurer.webhook_secret_primary],
        )
    assert (old_only.status_code, both.status_code) == (202, 202)
    assert set(DispatchItem.objects.values_list("result", flat=True)) == {"CONFIRMED"}
    # once the rotation ends, the old secret is refused
    insurer.webhook_secret_secondary = ""
    insurer.save(update_fields=["webhook_secret_secondary"])
    before = snapshot()
    late = signed_post(client, insurer.pk, body_of(event("e3", "T-1")), ["whsec_previous_secret_00000000"])
    assert_refused(late, 401, "signature_invalid", before)


def test_a_rejection_releases_nothing_here_but_records_code_and_reason(
    client, insurer, recorded, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1")
    rejection = event("e1", "T-1", kind="endorsement.rejected", code="member_refused", reason="Over age")
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, insurer.pk, body_of(rejection), [insurer.webhook_secret_primary])
    assert response.status_code == 202
    item = DispatchItem.objects.get()
    assert (item.result, item.result_code, item.result_reason, item.is_live) == (
        "REJECTED",
        "member_refused",
        "Over age",
        False,
    )
    assert recorded[0][1][0].outcome == "rejected"


# --- batch -------------------------------------------------------------------------------


def test_batch_answers_each_event_and_stores_the_good_ones(
    client, insurer, recorded, django_capture_on_commit_callbacks
):
    dispatched(insurer, "T-1", "T-2")
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(
            client,
            insurer.pk,
            body_of(event("e0", "T-2", kind="endorsement.accepted")),
            [insurer.webhook_secret_primary],
        )
    events = [
        event("e1", "T-1"),
        event("e0", "T-2", kind="endorsement.accepted"),  # stored before
        event("e2", "T-2"),
        {"event_id": "e3", "type": "endorsement.unheard_of", "tracking_id": "T-2"},
        event("e4", "T-404"),
        event("e1", "T-1"),  # twice in one batch
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(
            client, insurer.pk, body_of({"events": events}), [insurer.webhook_secret_primary], batch=True
        )
    assert response.status_code == 200
    answer = response.json()
    assert [(r["event_id"], r["status"]) for r in answer["results"]] == [
        ("e1", "received"),
        ("e0", "already_received"),
        ("e2", "received"),
        ("e3", "refused"),
        ("e4", "received"),
        ("e1", "already_received"),
    ]
    assert answer["results"][3]["errors"][0]["code"] == "unknown_event_type"
    assert answer["results"][4]["flag"] == "unknown_tracking_id"
    assert (answer["received"], answer["already_received"], answer["refused"]) == (3, 2, 1)
    assert sorted(WebhookEvent.objects.values_list("event_id", flat=True)) == ["e0", "e1", "e2", "e4"]
    assert dict(DispatchItem.objects.values_list("reference", "result")) == {
        "T-1": "CONFIRMED",
        "T-2": "CONFIRMED",
    }


def test_batch_over_the_event_limit_is_refused_whole(client, insurer, settings):
    settings.WEBHOOK_BATCH_MAX_EVENTS = 2
    before = snapshot()
    events = [event(f"e{n}", "T-1") for n in range(3)]
    response = signed_post(
        client, insurer.pk, body_of({"events": events}), [insurer.webhook_secret_primary], batch=True
    )
    assert_refused(response, 422, "validation_failed", before)


def test_batch_of_nothing_is_refused(client, insurer):
    before = snapshot()
    response = signed_post(
        client, insurer.pk, body_of({"events": []}), [insurer.webhook_secret_primary], batch=True
    )
    assert_refused(response, 422, "validation_failed", before)


def test_schema_lists_both_webhook_doors_without_bearer_auth(client):
    schema = client.get("/api/schema/", headers={"Accept": "application/json"}).json()
    for suffix in ("notify", "batch-notify"):
        operation = schema["paths"][f"/api/v1/webhooks/insurers/{{insurer_id}}/{suffix}"]["post"]
        assert operation.get("security") in ([], [{}], None)
        assert any(p["name"] == SIGNATURE_HEADER for p in operation["parameters"])


def test_no_configured_secret_reaches_the_logs(client, insurer, caplog, django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    insurer.webhook_secret_secondary = "whsec_secondary_for_the_log_test_42"
    insurer.save(update_fields=["webhook_secret_secondary"])
    other = InsurerFactory(webhook_secret_primary="whsec_other_for_the_log_test_43")
    dispatched(insurer, "T-1")
    secrets = [insurer.webhook_secret_primary, insurer.webhook_secret_secondary, other.webhook_secret_primary]
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(client, insurer.pk, body_of(event("e1", "T-1")), [insurer.webhook_secret_primary])
        signed_post(client, insurer.pk, body_of(event("e2", "T-1")), [insurer.webhook_secret_secondary])
        signed_post(client, insurer.pk, body_of(event("e3", "T-1")), [other.webhook_secret_primary])  # 401
        signed_post(client, insurer.pk, b"{not json", [insurer.webhook_secret_primary])  # 400
        signed_post(client, insurer.pk, body_of({"events": [event("e4", "T-1")]}), secrets[:2], batch=True)
    assert "insurers.webhook_received" in caplog.text  # the log was captured
    for secret in secrets:
        assert secret not in caplog.text
    assert not WebhookEvent.objects.filter(headers__icontains="whsec").exists()
