"""EMS's PostgreSQL backend: Django's, with django-prometheus' metrics, at less cost per query.

`ENGINE = "ems.postgresql"` (set by `ems.settings.base.postgres_connections`). Two
changes to `django_prometheus.db.backends.postgresql`, both on the API's hot path:

- **Metrics per statement, pre-bound.** The same series (`django_db_execute_total`,
  `django_db_query_duration_seconds`, `django_db_errors_total`, and the connection
  counters), but each cursor class is made once per connection with its labelled
  children looked up once, instead of two `labels()` look-ups (a lock and a dict each)
  and a context-manager object per statement.
- **A health check only for a connection that sat idle.** With CONN_HEALTH_CHECKS
  Django sends `SELECT 1` before the first query of every request on a persistent
  connection. A connection that answered a statement less than
  DB_HEALTH_CHECK_IDLE_SECONDS ago is taken as alive without asking again (HikariCP's
  `aliveBypassWindowMs`, 500 ms by default, makes the same trade). One that has been
  idle longer is checked as before, so a connection broken while the process was quiet
  (a database restart, a fail-over) is replaced before a request uses it.
- **Within the window, a look at the socket instead.** A server that ends a connection
  (`pg_terminate_backend`, a restart, a fail-over) sends a FATAL error and closes it, so an
  idle connection's socket turns readable; one that is quiet has nothing to say. A poll
  of the socket (a system call, no round trip) sends a connection whose socket has news
  to the full check, which replaces it before the request's first statement. What is
  left is a connection broken under a statement in flight: that request fails, as it
  always would, and Django drops the connection when it ends (docs/decisions.md).
"""

import select
import time

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base
from django_prometheus.db import (
    connection_errors_total,
    connections_total,
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)


def metered_cursor_class(cursor_class, alias: str, vendor: str):
    """`cursor_class` counting and timing each statement into django-prometheus' series."""
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    def failed(error: BaseException) -> None:
        errors_total.labels(alias, vendor, type(error).__name__).inc()

    class MeteredCursor(cursor_class):
        def execute(self, *args, **kwargs):
            executed.inc()
            started = time.perf_counter()
            try:
                return super().execute(*args, **kwargs)
            except Exception as error:
                failed(error)
                raise
            finally:
                duration.observe(time.perf_counter() - started)

        def executemany(self, query, params_seq, *args, **kwargs):
            params_seq = list(params_seq)
            executed.inc(len(params_seq))
            executed_many.inc(len(params_seq))
            started = time.perf_counter()
            try:
                return super().executemany(query, params_seq, *args, **kwargs)
            except Exception as error:
                failed(error)
                raise
            finally:
                duration.observe(time.perf_counter() - started)

    return MeteredCursor


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cursor_classes: dict[type, type] = {}
        self._last_used = 0.0

    def get_connection_params(self):
        params = super().get_connection_params()
        factory = params["cursor_factory"]
        if factory not in self._cursor_classes:
            self._cursor_classes[factory] = metered_cursor_class(factory, self.alias, self.vendor)
        params["cursor_factory"] = self._cursor_classes[factory]
        return params

    def get_new_connection(self, conn_params):
        connections_total.labels(self.alias, self.vendor).inc()
        try:
            connection = super().get_new_connection(conn_params)
        except Exception:
            connection_errors_total.labels(self.alias, self.vendor).inc()
            raise
        self._last_used = time.monotonic()
        return connection

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and time.monotonic() - self._last_used < settings.DB_HEALTH_CHECK_IDLE_SECONDS
            and not socket_has_news(self.connection)
        ):
            return  # it answered a moment ago, and the server has said nothing since
        super().close_if_health_check_failed()

    def create_cursor(self, name=None):
        cursor = super().create_cursor(name)
        self._last_used = time.monotonic()
        return cursor


def socket_has_news(connection) -> bool:
    """Whether an idle psycopg connection's socket is readable (or gone): the server sent
    something unasked, such as the FATAL error it sends before closing a connection."""
    try:
        descriptor = connection.fileno()
    except psycopg.Error:  # a closed connection has no socket
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))
