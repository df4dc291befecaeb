"""`ems.postgresql`: django-prometheus' series per statement, the idle-window health check,
and the connection options of `postgres_connections` (server-side binding, prepared statements).

Each test opens a connection of its own (a second wrapper for the test database, with a
persistent connection and health checks on, as deployed) against the real PostgreSQL,
outside the test's transaction, and breaks it for real with `pg_terminate_backend`.
"""

import time

import pytest
from django.db import OperationalError, connection, connections
from django.test import override_settings
from prometheus_client import REGISTRY

from ems.postgresql.base import DatabaseWrapper

pytestmark = pytest.mark.django_db


@pytest.fixture
def persistent():
    settings_dict = {**connection.settings_dict, "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}
    wrapper = DatabaseWrapper(settings_dict, alias="default")
    yield wrapper
    wrapper.close()


def _backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(pid: int) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def _next_request(wrapper) -> None:
    # What Django's request_started / request_finished handler does for each connection.
    wrapper.close_if_unusable_or_obsolete()


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, {"alias": "default", "vendor": "postgresql", **labels}) or 0.0


def test_statements_count_into_django_prometheus_series(persistent):
    persistent.ensure_connection()
    executed = _sample("django_db_execute_total")
    executed_many = _sample("django_db_execute_many_total")
    timed = _sample("django_db_query_duration_seconds_count")
    with persistent.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.executemany("SELECT %s", [(1,), (2,), (3,)])
    assert _sample("django_db_execute_total") - executed == 4
    assert _sample("django_db_execute_many_total") - executed_many == 3
    assert _sample("django_db_query_duration_seconds_count") - timed == 2


def test_a_failing_statement_counts_as_an_error_by_type(persistent):
    failed = _sample("django_db_errors_total", type="UndefinedTable")
    with pytest.raises(Exception), persistent.cursor() as cursor:  # noqa: B017, PT011
        cursor.execute("SELECT * FROM no_such_table_here")
    assert _sample("django_db_errors_total", type="UndefinedTable") - failed == 1


def _statements_sent_by(call) -> float:
    before = _sample("django_db_execute_total")
    call()
    return _sample("django_db_execute_total") - before


@override_settings(DB_HEALTH_CHECK_IDLE_SECONDS=0)
def test_a_connection_idle_past_the_window_is_checked_and_a_broken_one_replaced(persistent):
    _backend_pid(persistent)
    _next_request(persistent)
    assert _statements_sent_by(lambda: _backend_pid(persistent)) == 2  # SELECT 1, then ours
    first = _backend_pid(persistent)
    _terminate(first)
    _next_request(persistent)
    second = _backend_pid(persistent)  # the check found it broken: a new connection, no error
    assert second != first


@override_settings(DB_HEALTH_CHECK_IDLE_SECONDS=60)
def test_a_connection_used_within_the_window_is_not_checked_again(persistent):
    _backend_pid(persistent)
    _next_request(persistent)
    assert _statements_sent_by(lambda: _backend_pid(persistent)) == 1  # no SELECT 1 first


@override_settings(DB_HEALTH_CHECK_IDLE_SECONDS=60)
def test_a_connection_the_server_ended_within_the_window_is_replaced_before_the_next_request(persistent):
    # Given a connection used a moment ago, then ended by the server
    first = _backend_pid(persistent)
    _terminate(first)
    _wait_until_gone(first)
    # When the next request uses it: its socket had news, so it is checked and replaced
    _next_request(persistent)
    second = _backend_pid(persistent)
    assert second != first


@override_settings(DB_HEALTH_CHECK_IDLE_SECONDS=60)
def test_a_connection_broken_under_a_statement_fails_that_request_only(persistent):
    first = _backend_pid(persistent)
    _next_request(persistent)
    with pytest.raises(OperationalError), persistent.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    _next_request(persistent)  # Django drops a connection that raised
    assert _backend_pid(persistent) != first


def _wait_until_gone(pid: int) -> None:
    """Until the ended backend has left pg_stat_activity (it sent its FATAL error first)."""
    with connections["default"].cursor() as cursor:
        for _ in range(200):
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # a fresh look inside the test's transaction
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
    raise AssertionError(f"backend {pid} still running")


def test_parameters_are_bound_server_side_and_a_repeated_statement_is_prepared(persistent):
    # The test settings go through postgres_connections, as every deployed process does.
    persistent.ensure_connection()
    with persistent.cursor() as cursor:
        for n in range(persistent.connection.prepare_threshold + 1):
            cursor.execute("SELECT %s::int + 1 AS prepared_probe", [n])
            assert cursor.fetchone() == (n + 1,)
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("prepared_probe" in statement and "$1" in statement for statement in prepared)


def test_server_side_binding_can_be_turned_off(monkeypatch):
    from ems.settings.base import env, postgres_connections

    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "ems"}
    monkeypatch.delenv("DB_SERVER_SIDE_BINDING", raising=False)
    assert postgres_connections(database, env)["OPTIONS"]["server_side_binding"] is True
    monkeypatch.setenv("DB_SERVER_SIDE_BINDING", "off")
    options = postgres_connections(database, env)["OPTIONS"]
    assert options["server_side_binding"] is False
    assert options["prepare_threshold"] is None
