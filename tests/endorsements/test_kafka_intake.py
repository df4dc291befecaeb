"""`endorsements/kafka_intake.py` and `manage.py consume_requests` against the Kafka-wire broker:
a published endorsement takes the API's path, a redelivery stores nothing, poison messages
go to the dead-letter topic with their reason and never block the partition, and offsets
are committed only after the database commit."""

import json
import uuid

import pytest
from django.core.management import call_command
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from endorsements.models import EndorsementRequest
from tests.factories import api_client_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def topics(settings, kafka_server):
    tag = uuid.uuid4().hex[:8]
    settings.KAFKA_REQUESTS_TOPIC = f"ems.endorsement.requests.{tag}"
    settings.KAFKA_REQUESTS_SESSION_TIMEOUT_MS = 1000
    return settings.KAFKA_REQUESTS_TOPIC, f"{settings.KAFKA_REQUESTS_TOPIC}.dlq"


def publish(kafka_server, topic, messages) -> None:
    producer = KafkaProducer(bootstrap_servers=[kafka_server.bootstrap_servers], acks="all")
    for key, value, headers in messages:
        producer.send(topic, key=key, value=value, headers=headers, partition=0).get(timeout=10)
    producer.close()


def read_all(kafka_server, topic) -> list:
    consumer = KafkaConsumer(bootstrap_servers=[kafka_server.bootstrap_servers], consumer_timeout_ms=1500)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records = list(consumer)
    consumer.close()
    return sorted(records, key=lambda r: dict(r.headers)["ems-source"].split(b"/")[-1].zfill(12))


def test_published_endorsements_take_the_api_path_and_poison_goes_to_the_dead_letter_topic(
    book, kafka_server, topics
):
    requests_topic, dead_letters = topics
    client, _secret = api_client_create(employer=book.employer)
    header = [("ems-client-id", client.client_id.encode())]
    good = json.dumps(book.add_row(employee_code="K-1")).encode()
    other = json.dumps(book.add_row(employee_code="K-2")).encode()
    publish(
        kafka_server,
        requests_topic,
        [
            (b"key-1", good, header),
            (b"key-1", good, header),  # redelivered: nothing more stored
            (b"key-1", other, header),  # the key reused for other content
            (b"key-2", b"{not json", header),
            (b"key-3", good, [("ems-client-id", b"cli_nobody")]),
            (b"key-4", json.dumps({"action": "ADD"}).encode(), header),  # the API would refuse it
            (b"key-5", other, header),
        ],
    )

    call_command("consume_requests", max_records=7, group=f"g-{uuid.uuid4().hex[:6]}")

    stored = EndorsementRequest.objects.order_by("id")
    assert [(e.idempotency_key, e.member_data["employee_code"], e.state) for e in stored] == [
        ("key-1", "K-1", "VALIDATED"),
        ("key-5", "K-2", "VALIDATED"),
    ]
    assert all(e.employer_id == book.employer.pk and e.source == "API" for e in stored)
    letters = read_all(kafka_server, dead_letters)
    codes = [(r.key, dict(r.headers)["ems-dlq-code"]) for r in letters]
    assert codes == [
        (b"key-1", b"idempotency_key_reused"),
        (b"key-2", b"json_invalid"),
        (b"key-3", b"client_unknown"),
        (b"key-4", b"endorsement_invalid"),
    ]
    assert b"employee_code" in dict(letters[3].headers)["ems-dlq-reason"]
    assert [r.value for r in letters] == [other, b"{not json", good, json.dumps({"action": "ADD"}).encode()]


def test_offsets_are_committed_so_a_restarted_consumer_goes_on_from_there(book, kafka_server, topics):
    requests_topic, _ = topics
    client, _secret = api_client_create(employer=book.employer)
    header = [("ems-client-id", client.client_id.encode())]
    group = f"g-{uuid.uuid4().hex[:6]}"
    rows = [json.dumps(book.add_row(employee_code=f"R-{n}")).encode() for n in range(3)]
    publish(kafka_server, requests_topic, [(f"r-{n}".encode(), rows[n], header) for n in range(2)])
    call_command("consume_requests", max_records=2, group=group)
    publish(kafka_server, requests_topic, [(b"r-2", rows[2], header)])

    call_command("consume_requests", max_records=1, group=group)  # a new process of the same group

    assert sorted(EndorsementRequest.objects.values_list("idempotency_key", flat=True)) == [
        "r-0",
        "r-1",
        "r-2",
    ]
