"""Settings: production passes `check --deploy`; embedded defaults when nothing is set."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "ems.settings.production",
    "SECRET_KEY": "prod-" + "k3y!" * 16,
    "ALLOWED_HOSTS": "ems.example.com",
    "DATABASE_URL": "postgres://ems@db.example.com:5432/ems",
    "EMS_SECRET_KEYS": "bXktcHJvZHVjdGlvbi1rZXktMzItYnl0ZXMtbG9uZyE=",  # a Fernet key: 32 bytes
}


def run_manage(args: list[str], env: dict) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "EMS_SECRET_KEYS"}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = run_manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = run_manage(
        ["check"],
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.production",
            "ALLOWED_HOSTS": "x",
            "DATABASE_URL": "sqlite:///x",
        },
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_settings_refuse_to_start_without_their_own_secret_keys():
    without = {name: value for name, value in PRODUCTION_ENV.items() if name != "EMS_SECRET_KEYS"}
    missing = run_manage(["check"], without)
    not_a_key = run_manage(["check"], {**without, "EMS_SECRET_KEYS": "not-a-fernet-key"})
    assert missing.returncode != 0
    assert "Set EMS_SECRET_KEYS" in missing.stderr
    assert not_a_key.returncode != 0
    assert "EMS_SECRET_KEYS holds a value that is not a Fernet key" in not_a_key.stderr


def test_embedded_defaults_when_nothing_is_configured():
    result = run_manage(
        [
            "shell",
            "-v",
            "0",
            "-c",
            "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
            "s.DATABASES['default']['OPTIONS']['transaction_mode'], "
            "s.KAFKA_BOOTSTRAP_SERVERS, s.REDIS_URL, s.MONGO_URL)",
        ],
        {"DJANGO_SETTINGS_MODULE": "ems.settings.base"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "IMMEDIATE",
        "[]",
        "redis://127.0.0.1:6390/0",
        "mongodb://127.0.0.1:27117/",
    ]


def database_settings(env: dict) -> dict:
    result = run_manage(
        [
            "shell",
            "-v",
            "0",
            "-c",
            "import json; from django.conf import settings as s; d = s.DATABASES['default']; "
            "print(json.dumps({k: d[k] for k in ('ENGINE', 'CONN_MAX_AGE', 'CONN_HEALTH_CHECKS')} "
            "| {'pool': d['OPTIONS'].get('pool'), 'options': d['OPTIONS'].get('options')}))",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_postgresql_keeps_a_connection_per_thread_checked_after_idling_by_default():
    database = database_settings(
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.base",
            "DATABASE_URL": "postgres://ems@db.example.com:5432/ems",
        }
    )
    assert database == {
        "ENGINE": "ems.postgresql",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "pool": None,
        "options": "-c jit=off",
    }


def test_db_pool_max_gives_a_connection_pool_per_process_sized_by_the_environment():
    database = database_settings(
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.base",
            "DATABASE_URL": "postgres://ems@db.example.com:5432/ems",
            "DB_POOL_MIN": "3",
            "DB_POOL_MAX": "12",
        }
    )
    assert database == {
        "ENGINE": "ems.postgresql",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "pool": {"min_size": 3, "max_size": 12, "timeout": 10.0},
        "options": "-c jit=off",
    }


def test_production_keeps_persistent_connections_and_db_pool_max_turns_the_pool_on():
    production = PRODUCTION_ENV
    persistent = database_settings(production)
    assert persistent["ENGINE"] == "ems.postgresql"
    assert (persistent["pool"], persistent["CONN_MAX_AGE"]) == (None, 60)
    pooled = database_settings({**production, "DB_POOL_MAX": "10", "DB_CONN_MAX_AGE": "300"})
    assert pooled["pool"] == {"min_size": 2, "max_size": 10, "timeout": 10.0}
    assert pooled["CONN_MAX_AGE"] == 0


def test_db_jit_on_leaves_postgresqls_jit_as_the_server_has_it():
    database = database_settings(
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.base",
            "DATABASE_URL": "postgres://ems@db.example.com:5432/ems",
            "DB_JIT": "on",
        }
    )
    assert database["options"] is None


def test_sqlite_has_no_pool():
    database = database_settings({"DJANGO_SETTINGS_MODULE": "ems.settings.base", "DB_POOL_MAX": "5"})
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["pool"] is None


def test_intake_partitions_that_do_not_divide_the_intake_slots_are_refused_at_start():
    refused = run_manage(["check"], {"DJANGO_SETTINGS_MODULE": "ems.settings.test", "INTAKE_PARTITIONS": "3"})
    assert refused.returncode != 0
    assert "INTAKE_PARTITIONS must be 1, 2, 4, 8 or 16, not 3." in refused.stderr
    accepted = run_manage(
        ["check"], {"DJANGO_SETTINGS_MODULE": "ems.settings.test", "INTAKE_PARTITIONS": "4"}
    )
    assert accepted.returncode == 0, accepted.stderr


def test_the_channel_layers_redis_connections_outlast_its_blocking_wait():
    # channels_redis waits brpop_timeout seconds for a socket's next message; a read timeout
    # no longer than that ends every quiet socket (redis-py's default is 5 s, the same)
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer
    from django.conf import settings

    layer = get_channel_layer()
    pool = layer.create_pool(0)
    assert pool.connection_kwargs["socket_timeout"] == settings.CHANNELS_REDIS_SOCKET_TIMEOUT == 30.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 2
    assert 2 * RedisChannelLayer.brpop_timeout < settings.CHANNELS_REDIS_SOCKET_TIMEOUT


def test_one_outbox_relay_runs_the_loop_process_and_no_beat_entry_or_commit_kick_relays_too():
    from django.conf import settings

    from ems.management.commands import run_stack

    relay_entries = [
        name
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        if entry["task"] == "ems.tasks.outbox_relay"
    ]
    assert relay_entries == []
    # the kick after each commit is off unless a deployment without the loop asks for it
    result = run_manage(
        ["shell", "-v", "0", "-c", "from django.conf import settings as s; print(s.OUTBOX_RELAY_ON_COMMIT)"],
        {"DJANGO_SETTINGS_MODULE": "ems.settings.base"},
    )
    assert result.stdout.strip() == "False", result.stderr
    source = Path(run_stack.__file__).read_text()
    assert source.count('"relay_outbox", "--loop"') == 1


def test_the_migration_removes_the_beat_relay_entry_an_older_database_kept(db):
    import importlib

    from django.apps import apps
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="ems-outbox-relay", task="ems.tasks.outbox_relay", interval=every)
    PeriodicTask.objects.create(name="ledger-parked-sweep", task="ledger.parked_sweep", interval=every)

    importlib.import_module("ems.migrations.0007_outbox_relay_beat_entry_removed").beat_relay_remove(
        apps, None
    )

    assert list(PeriodicTask.objects.values_list("name", flat=True)) == ["ledger-parked-sweep"]


def test_the_migration_check_make_test_runs_says_only_its_answer():
    # `make test` runs it with the test settings and no DATABASE_URL
    result = run_manage(
        ["makemigrations", "--check", "--dry-run", "--settings=ems.settings.test"],
        {"TEST_DATABASE_NAME": "x"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "No changes detected"
    assert "consistent migration history" not in result.stderr
    assert "does not exist" not in result.stderr
