"""Migrating the test database to a point and back, for the tests of data migrations."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor


def leaf_nodes():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()
