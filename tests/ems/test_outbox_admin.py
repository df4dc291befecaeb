"""The outbox and idempotency admin: read-only for everyone, the "retry now" action, query counts."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.urls import reverse

from ems import outbox_relay
from ems.audit import audit_record
from ems.models import IdempotencyRecord, OutboxEvent
from ems.outbox import KICK_KEY, TOPIC_ENDORSEMENTS, KafkaEvent, outbox_write
from ems.outbox_relay import SINKS, backoff_remaining
from ems.redis_lock import redis_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MONGO = OutboxEvent.Sink.MONGO
KAFKA = OutboxEvent.Sink.KAFKA
CHANGELIST = "admin:ems_outboxevent_changelist"


@pytest.fixture(autouse=True)
def _fresh_backoff():
    def reset():
        keys = [f"ems:outbox:{sink}:{part}" for sink in SINKS for part in ("failures", "retry_at")]
        redis_client().delete(*keys, KICK_KEY)
        outbox_relay._local_backoff.clear()

    reset()
    yield
    reset()


def permission(codename: str) -> Permission:
    # declared on OutboxEvent.Meta.permissions by the platform; created here if not yet migrated
    permission, _ = Permission.objects.get_or_create(
        codename=codename,
        content_type=ContentType.objects.get_for_model(OutboxEvent),
        defaults={"name": codename.replace("_", " ")},
    )
    return permission


def staff_user(*codenames: str):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*(permission(codename) for codename in codenames))
    return user


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def rows():
    with transaction.atomic():
        for number in range(30):
            audit_record(actor="ops1", action="member.touched", object_type="member", object_id=number)
        outbox_write(
            events=[KafkaEvent(topic=TOPIC_ENDORSEMENTS, key="TRK-1", event_type="t", employer_id=1, data={})]
        )
    OutboxEvent.objects.filter(sink=MONGO, id__in=OutboxEvent.objects.order_by("id")[:10]).update(
        delivered_at="2026-05-01T00:00:00Z"
    )
    return list(OutboxEvent.objects.order_by("id"))


def snapshot() -> list[tuple]:
    return list(
        OutboxEvent.objects.order_by("id").values_list(
            "id", "sink", "delivered_at", "attempts", "last_error", "payload"
        )
    )


def test_changelist_lists_rows_with_a_bounded_number_of_queries(
    superuser_client, rows, django_assert_max_num_queries
):
    with django_assert_max_num_queries(6):
        response = superuser_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    listed = [row.pk for row in response.context["cl"].result_list]
    assert listed == sorted((row.pk for row in rows), reverse=True)
    assert response.context["cl"].list_display == [
        "action_checkbox", "id", "sink", "destination", "key", "event_count",
        "created_at", "delivered_at", "attempts", "error",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected_count"),
    [("?sink__exact=KAFKA", 1), ("?sink__exact=MONGO", 30), ("?delivered=no", 21), ("?delivered=yes", 10)],
)
def test_filters_by_sink_and_delivered(superuser_client, rows, query, expected_count):
    response = superuser_client.get(reverse(CHANGELIST) + query)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == expected_count


def test_nobody_adds_changes_or_deletes_outbox_rows_not_even_a_superuser(superuser_client, rows):
    before = snapshot()
    row = rows[0]
    add = superuser_client.post(reverse("admin:ems_outboxevent_add"), {"sink": "MONGO", "destination": "x"})
    change = superuser_client.post(
        reverse("admin:ems_outboxevent_change", args=[row.pk]), {"attempts": 99, "last_error": "edited"}
    )
    delete = superuser_client.post(reverse("admin:ems_outboxevent_delete", args=[row.pk]), {"post": "yes"})
    bulk_delete = superuser_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    )
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert bulk_delete.status_code in (200, 302)  # "no such action": nothing happens
    assert snapshot() == before


def test_the_detail_page_is_read_only(superuser_client, rows):
    response = superuser_client.get(reverse("admin:ems_outboxevent_change", args=[rows[0].pk]))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert b'name="_save"' not in response.content


def test_retry_now_clears_the_backoff_of_the_selected_rows_sinks_and_nothing_else(client, rows):
    # given both sinks backing off
    outbox_relay._backoff_failure_record(MONGO)
    outbox_relay._backoff_failure_record(KAFKA)
    operator = staff_user("view_outboxevent", "retry_outboxevent")
    client.force_login(operator)
    before = snapshot()
    # when an operator runs "retry now" on a Mongo row
    response = client.post(
        reverse(CHANGELIST), {"action": "retry_now", "_selected_action": [rows[-2].pk]}, follow=True
    )
    # then only Mongo's backoff is gone, no row changed, and the action is audited
    assert response.status_code == 200
    assert "Backoff cleared for MONGO; the next relay run tries now." in [
        str(message) for message in response.context["messages"]
    ]
    assert backoff_remaining(MONGO) == 0
    assert backoff_remaining(KAFKA) > 0
    after = snapshot()
    assert after[: len(before)] == before
    [audit] = after[len(before) :]
    assert audit[1] == MONGO
    assert {key: audit[5][key] for key in ("actor", "action", "object_type", "object_id")} == {
        "actor": operator.username,
        "action": "outbox.backoff_cleared",
        "object_type": "outbox_sink",
        "object_id": MONGO,
    }


def test_retry_now_needs_its_permission(client, rows):
    outbox_relay._backoff_failure_record(MONGO)
    client.force_login(staff_user("view_outboxevent"))
    before = snapshot()
    listing = client.get(reverse(CHANGELIST))
    assert listing.context["action_form"] is None  # a viewer has no action at all
    response = client.post(reverse(CHANGELIST), {"action": "retry_now", "_selected_action": [rows[0].pk]})
    assert response.status_code in (200, 302)
    assert backoff_remaining(MONGO) > 0
    assert snapshot() == before


def test_staff_without_view_permission_cannot_see_the_outbox(client, rows):
    client.force_login(staff_user())
    assert client.get(reverse(CHANGELIST)).status_code == 403


def test_the_list_says_which_sinks_are_backing_off_and_that_kafka_is_off(superuser_client, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = []
    outbox_relay._backoff_failure_record(MONGO)
    response = superuser_client.get(reverse(CHANGELIST))
    texts = [str(message) for message in response.context["messages"]]
    assert texts[0].startswith("MONGO is backing off after failures: next try in ")
    assert texts[1] == "The Kafka relay is off (KAFKA_BOOTSTRAP_SERVERS is empty): Kafka rows stay pending."


def test_idempotency_records_are_read_only(superuser_client, django_assert_max_num_queries):
    record = IdempotencyRecord.objects.create(
        caller="client:1", key="k1", scope="endorsement_submit", request_hash="0" * 64
    )
    with django_assert_max_num_queries(6):
        listing = superuser_client.get(reverse("admin:ems_idempotencyrecord_changelist"))
    assert listing.status_code == 200
    assert [row.pk for row in listing.context["cl"].result_list] == [record.pk]
    change = superuser_client.post(
        reverse("admin:ems_idempotencyrecord_change", args=[record.pk]), {"state": "DONE"}
    )
    delete = superuser_client.post(
        reverse("admin:ems_idempotencyrecord_delete", args=[record.pk]), {"post": "yes"}
    )
    assert (change.status_code, delete.status_code) == (403, 403)
    record.refresh_from_db()
    assert record.state == IdempotencyRecord.State.IN_FLIGHT
