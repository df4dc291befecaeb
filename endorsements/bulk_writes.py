"""Set-based writes for intake: COPY-class inserts and one-statement updates.

On PostgreSQL, rows go in with psycopg's `COPY ... FROM STDIN` on the Django connection
(so they join the caller's transaction), and per-row updates are COPYed into a temporary
table and applied with one `UPDATE ... FROM`. Ids for rows that other rows point at are
taken from the table's sequence up front (`ids_reserve`), so nothing needs to be read
back. On any other database (SQLite for `make run`) the same calls fall back to
`bulk_create` / `bulk_update` in batches.

Callers pass plain tuples in the order of `columns` (database column names), already
converted to the values the column stores (JSON columns as `str` of JSON).
"""

import json
from collections.abc import Iterable, Sequence

from django.db import connection, models

_BATCH = 1000


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def ids_reserve(model: type[models.Model], count: int) -> list[int]:
    """`count` fresh primary keys for rows the caller inserts next, in this transaction.

    PostgreSQL: taken from the table's identity sequence. Elsewhere (SQLite): the ids after
    the largest in use, so the caller must hold the database's write lock (our SQLite
    transactions begin IMMEDIATE) and insert them before reserving again.
    """
    if count == 0:
        return []
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if is_postgresql():
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [table, count],
            )
            return [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {connection.ops.quote_name(table)}")  # noqa: S608
        last = cursor.fetchone()[0]
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        row = cursor.fetchone()
        last = max(last, row[0] if row else 0)
        return list(range(last + 1, last + 1 + count))


def rows_insert(model: type[models.Model], columns: Sequence[str], rows: Iterable[tuple]) -> None:
    """Insert rows (tuples in `columns` order) in the current transaction."""
    if is_postgresql():
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(c) for c in columns)
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    by_column = {f.column: f for f in model._meta.concrete_fields}
    attnames = [by_column[c].attname for c in columns]
    json_columns = {c for c in columns if isinstance(by_column[c], models.JSONField)}
    batch: list[models.Model] = []
    for row in rows:
        values = {}
        for column, attname, value in zip(columns, attnames, row, strict=True):
            if column in json_columns and isinstance(value, str):
                value = json.loads(value)
            values[attname] = value
        batch.append(model(**values))
        if len(batch) >= _BATCH:
            model.objects.bulk_create(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)


def rows_update(model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Per-row updates: each tuple is (id, value for columns[0], value for columns[1], ...)."""
    if not rows:
        return
    if is_postgresql():
        table = connection.ops.quote_name(model._meta.db_table)
        fields = {f.column: f for f in model._meta.concrete_fields}
        types = [fields[c].db_type(connection) for c in columns]
        staging = "endorsement_update_staging"
        definitions = ", ".join(
            f"{connection.ops.quote_name(c)} {t}" for c, t in zip(columns, types, strict=True)
        )
        assignments = ", ".join(
            f"{connection.ops.quote_name(c)} = s.{connection.ops.quote_name(c)}" for c in columns
        )
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (id bigint, {definitions})")
            cursor.execute(f"TRUNCATE {staging}")
            names = ", ".join(["id", *(connection.ops.quote_name(c) for c in columns)])
            with cursor.cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"UPDATE {table} AS t SET {assignments} FROM {staging} AS s WHERE t.id = s.id")
            cursor.execute(f"DROP TABLE {staging}")
        return
    by_column = {f.column: f for f in model._meta.concrete_fields}
    attnames = [by_column[c].attname for c in columns]
    objects = []
    for row in rows:
        instance = model(pk=row[0])
        for attname, column, value in zip(attnames, columns, row[1:], strict=True):
            if isinstance(by_column[column], models.JSONField) and isinstance(value, str):
                value = json.loads(value)
            setattr(instance, attname, value)
        objects.append(instance)
    model.objects.bulk_update(objects, attnames, batch_size=200)


def filter_any(queryset: models.QuerySet, field_name: str, values: Iterable) -> models.QuerySet:
    """`field IN values` for thousands of values: one array parameter on PostgreSQL."""
    values = list(values)
    if not is_postgresql() or len(values) <= 100:
        return queryset.filter(**{f"{field_name}__in": values})
    field = queryset.model._meta.get_field(field_name)
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    column = f"{table}.{connection.ops.quote_name(field.column)}"
    array_type = (
        "bigint[]"
        if isinstance(field, models.ForeignKey | models.AutoField | models.BigIntegerField)
        else "text[]"
    )
    return queryset.extra(where=[f"{column} = ANY(%s::{array_type})"], params=[_array_literal(values)])  # noqa: S610


def _array_literal(values: list) -> str:
    """A PostgreSQL array literal: one text parameter instead of psycopg dumping each element."""
    if all(isinstance(v, int) for v in values):
        return "{" + ",".join(map(str, values)) + "}"
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + '","'.join(quoted) + '"}'
