"""Per-process clients for MongoDB and Kafka, built lazily, never at import.

A Celery prefork child inherits the parent's memory; sockets and background threads
must not be shared, so `reset()` runs after every fork (see `ems.celery`) and the next
`mongo_db()` / `kafka_producer()` call builds a fresh client in that process.
"""

import os
import threading

import pymongo
from django.conf import settings
from kafka import KafkaProducer
from kafka.serializer import Serializer

_lock = threading.Lock()
_state: dict = {"pid": None, "mongo": None, "kafka": None}


def _own_process() -> None:
    if _state["pid"] != os.getpid():
        _state.update(pid=os.getpid(), mongo=None, kafka=None)


def mongo_client():

    with _lock:
        _own_process()
        if _state["mongo"] is None:
            _state["mongo"] = pymongo.MongoClient(
                settings.MONGO_URL,
                serverSelectionTimeoutMS=2000,
                connectTimeoutMS=2000,
                socketTimeoutMS=10000,
                tz_aware=True,
            )
        return _state["mongo"]


def mongo_db():
    return mongo_client()[settings.MONGO_DB]


def kafka_enabled() -> bool:
    return bool(settings.KAFKA_BOOTSTRAP_SERVERS)


class Utf8Serializer(Serializer):
    """Keys and values are text (tracking ids, JSON); bytes pass through."""

    def serialize(self, topic, headers, data):
        if data is None or isinstance(data, bytes):
            return data
        return str(data).encode()


def kafka_producer():
    """A producer that waits for every in-sync replica and never reorders on retry."""

    with _lock:
        _own_process()
        if _state["kafka"] is None:
            _state["kafka"] = KafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                acks="all",
                retries=3,
                max_in_flight_requests_per_connection=1,
                linger_ms=5,
                request_timeout_ms=5000,
                delivery_timeout_ms=15000,
                max_block_ms=5000,
                bootstrap_timeout_ms=5000,
                reconnect_backoff_max_ms=1000,
                key_serializer=Utf8Serializer(),
                value_serializer=Utf8Serializer(),
            )
        return _state["kafka"]


def kafka_producer_discard() -> None:
    """Close and forget this process's producer; the next `kafka_producer()` builds a fresh one.

    The outbox relay calls this after a failed send: a producer that lived through a
    broker outage can keep stale idempotence state, so it is cheaper to start over.
    """
    with _lock:
        producer = _state["kafka"] if _state["pid"] == os.getpid() else None
        _state["kafka"] = None
    if producer is not None:
        try:
            producer.close(timeout=1)
        except Exception:  # noqa: BLE001 - closing a broken producer is best effort
            pass


def reset() -> None:
    """Forget (and close, when owned by this process) every client."""
    with _lock:
        if _state["pid"] == os.getpid():
            for name in ("kafka", "mongo"):
                client = _state[name]
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001 - closing a broken client is best effort
                        pass
        _state.update(pid=os.getpid(), mongo=None, kafka=None)
