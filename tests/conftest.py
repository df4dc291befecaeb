"""Session-wide test infrastructure.

- PostgreSQL: the machine's server (pytest-django creates `test_ems`).
- Redis: the machine's server, database 15 (flushed once per session).
- MongoDB-wire and Kafka-wire servers: started on free loopback ports for the session
  by `mongo_server` / `kafka_server` and stopped afterwards; requesting the fixture
  points the settings (and the per-process clients) at them.
"""

import pytest
import redis
from django.conf import settings

from ems import clients
from ems.embedded import start_kafka_wire, start_mongo_wire

pytest_plugins = ["tests.factories"]


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _validation_queue_empty():
    """Each test starts with no single requests queued for validation and no drain "running":
    a test that leaves the queue's kick set would leave every later request RECEIVED."""
    from endorsements.validation_queue import KICK_KEY, PENDING_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.delete(KICK_KEY, PENDING_KEY)
    except redis.RedisError:
        pass  # a test that points REDIS_URL nowhere; its own code handles that
    finally:
        client.close()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    server = start_mongo_wire(data_path=str(tmp_path_factory.mktemp("mongo") / "audit.db"))
    previous = settings.MONGO_URL
    settings.MONGO_URL = server.url
    clients.reset()
    yield server
    settings.MONGO_URL = previous
    clients.reset()
    server.stop()


@pytest.fixture(scope="session")
def kafka_server():
    server = start_kafka_wire()
    previous = settings.KAFKA_BOOTSTRAP_SERVERS
    settings.KAFKA_BOOTSTRAP_SERVERS = [server.bootstrap_servers]
    clients.reset()
    yield server
    settings.KAFKA_BOOTSTRAP_SERVERS = previous
    clients.reset()
    server.stop()


@pytest.fixture
def mongo_db(mongo_server):
    """The audit database, emptied before each test that uses it."""
    database = clients.mongo_db()
    for name in database.list_collection_names():
        database[name].delete_many({})
    return database
