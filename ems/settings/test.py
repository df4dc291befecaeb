"""Test settings: the machine's PostgreSQL and Redis unless the environment says otherwise.

Celery runs tasks inline (eager) by default; the integration tests that prove the real
worker path start a worker process of their own with eager off. MongoDB and Kafka URLs
are set by the session fixtures in `tests/conftest.py`, which start the servers.
"""

from .base import *  # noqa: F403
from .base import channel_layer_hosts, env, postgres_connections

# Connections as every deployed process holds them (engine, binding, JIT, health checks).
# Tests use their own database (TEST NAME); the default names PostgreSQL's own `postgres`,
# which every server has, so a command run with these settings outside pytest (`makemigrations
# --check` in `make test`) reaches a database rather than warning about a missing `ems`.
DATABASES = {
    "default": postgres_connections(
        env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/postgres"), env
    )
}
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_ems")}

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/15")
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = channel_layer_hosts(REDIS_URL)  # noqa: F405
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "ems-test"  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "test-media")  # noqa: F405
# Eager Celery would otherwise relay inline after every commit in every test.
OUTBOX_RELAY_ON_COMMIT = False
