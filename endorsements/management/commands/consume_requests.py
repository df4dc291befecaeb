"""`manage.py consume_requests`: the Kafka intake consumer (endorsements/kafka_intake.py)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Consume endorsements published on Kafka (ems.endorsement.requests) into the API's intake path."

    def add_arguments(self, parser):
        parser.add_argument("--max-records", type=int, default=None, help="stop after this many (tests)")
        parser.add_argument("--group", default=None, help="consumer group (default KAFKA_REQUESTS_GROUP)")

    def handle(self, *args, max_records=None, group=None, **options):
        from kafka import KafkaConsumer, KafkaProducer

        from endorsements.kafka_intake import records_consume, requests_topic

        servers = settings.KAFKA_BOOTSTRAP_SERVERS
        if not servers:
            raise CommandError("KAFKA_BOOTSTRAP_SERVERS is not set: there is no Kafka to consume from.")
        consumer = KafkaConsumer(
            requests_topic(),
            bootstrap_servers=servers,
            group_id=group or settings.KAFKA_REQUESTS_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.KAFKA_REQUESTS_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=max(settings.KAFKA_REQUESTS_SESSION_TIMEOUT_MS // 3, 100),
            max_poll_records=100,
        )
        producer = KafkaProducer(bootstrap_servers=servers, acks="all")
        try:
            counts = records_consume(consumer, producer, max_records=max_records)
        finally:
            consumer.close()
            producer.close()
        self.stdout.write(f"consumed: {counts}")
