"""Set-based writes for intake: COPY-class inserts and one-statement updates.

On PostgreSQL, rows go in with psycopg's `COPY ... FROM STDIN` on the Django connection
(so they join the caller's transaction), and per-row updates are COPYed into a temporary
table and applied with one `UPDATE ... FROM`. Ids for rows that other rows point at are
taken from the table's sequence up front (`ids_reserve`), so nothing needs to be read
back. On any other database (SQLite for `make run`) the same calls fall back to
`executemany` inserts and `bulk_update` in batches.

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
            # The sequence is looked up once (an uncorrelated subquery): inside nextval()
            # pg_get_serial_sequence ran for every id, 8 times the cost of nextval itself.
            cursor.execute(
                "SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id'))::regclass) "
                "FROM generate_series(1, %s)",
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
    """Insert rows (tuples in `columns` order) in the current transaction, each value as given.

    Elsewhere than PostgreSQL the rows go in with one `executemany` per batch, each value
    prepared by its field: not `bulk_create`, whose `pre_save` replaces the values of
    `auto_now`/`auto_now_add` columns with its own clock (a file's rows were received
    after they were decided, the decided insert's `now` being read first)."""
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    if is_postgresql():
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    by_column = {f.column: f for f in model._meta.concrete_fields}
    fields = [by_column[c] for c in columns]
    statement = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608

    def prepared(row: tuple) -> list:
        # JSON columns arrive as JSON text, which is what the column stores
        return [
            value
            if isinstance(field, models.JSONField) and isinstance(value, str)
            else field.get_db_prep_save(value, connection)
            for field, value in zip(fields, row, strict=True)
        ]

    with connection.cursor() as cursor:
        batch: list[list] = []
        for row in rows:
            batch.append(prepared(row))
            if len(batch) >= _BATCH:
                cursor.executemany(statement, batch)
                batch = []
        if batch:
            cursor.executemany(statement, batch)


# Up to this many rows, per-row updates are one UPDATE ... FROM (VALUES ...) statement; above
# it, a COPY into a staging table and one UPDATE ... FROM it.
VALUES_UPDATE_MAX = 500


def rows_update(model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Per-row updates: each tuple is (id, value for columns[0], value for columns[1], ...)."""
    if not rows:
        return
    if is_postgresql() and len(rows) <= VALUES_UPDATE_MAX:
        _rows_update_values(model, columns, rows)
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


def _rows_update_values(model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple]) -> None:
    quote = connection.ops.quote_name
    fields = {f.column: f for f in model._meta.concrete_fields}
    casts = ["bigint", *(fields[c].db_type(connection) for c in columns)]
    row_sql = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    names = ", ".join(["id", *(quote(c) for c in columns)])
    assignments = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in columns)
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
        f"FROM (VALUES {', '.join([row_sql] * len(rows))}) AS v({names}) WHERE t.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def filter_any(queryset: models.QuerySet, field_name: str, values: Iterable) -> models.QuerySet:
    """`field IN values` for thousands of values: one array parameter on PostgreSQL."""
    values = list(values)
    if not is_postgresql() or len(values) <= 100:
        return queryset.filter(**{f"{field_name}__in": values})
    field = queryset.model._meta.get_field(field_name)
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    column = f"{table}.{connection.ops.quote_name(field.column)}"
    return queryset.extra(
        where=[f"{column} = ANY(%s::{_array_type(field)})"], params=[_array_literal(values)]
    )  # noqa: S610


def _array_type(field: models.Field) -> str:
    integer = isinstance(field, models.ForeignKey | models.AutoField | models.BigIntegerField)
    return "bigint[]" if integer else "text[]"


def rows_by_keys(
    model: type[models.Model],
    key_fields: Sequence[str],
    keys: Iterable[tuple],
    fields: Sequence[str],
    **filters,
) -> list[tuple]:
    """Rows whose `key_fields` equal one of `keys`, as tuples of `fields`, narrowed by `filters`.

    `filters` are `field=value` or `field__in=values`. On PostgreSQL each key is one probe
    of the index that leads with the key fields: a LATERAL subquery over the unnested keys,
    fenced with OFFSET 0 so the planner cannot turn the probes into a scan of the rows
    that `filters` select. It did, for `field = ANY(array)` with the employer as a filter:
    on statistics that had not yet seen the rows a large file was adding, it read every
    row of the employer for each chunk (37-64 ms a chunk, growing with the table). The
    model needs an index whose leading columns are `key_fields`, in that order.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    meta = model._meta
    by_name = {f.name: f for f in meta.concrete_fields} | {f.attname: f for f in meta.concrete_fields}
    if not is_postgresql():
        rows = model.objects.filter(**{f"{key_fields[0]}__in": {k[0] for k in keys}}, **filters)
        wanted = set(keys)
        width = len(key_fields)
        found = rows.values_list(*key_fields, *fields)
        return [row[width:] for row in found if tuple(row[:width]) in wanted]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    key_columns = [quote(by_name[name].column) for name in key_fields]
    columns = [quote(by_name[name].column) for name in fields]
    arrays = [f"%s::{_array_type(by_name[name])}" for name in key_fields]
    params: list = [_array_literal([key[position] for key in keys]) for position in range(len(key_fields))]
    match = " AND ".join(f"r.{column} = k.c{position}" for position, column in enumerate(key_columns))
    where, filter_columns = [], []
    for lookup, value in filters.items():
        name, _, operator = lookup.partition("__")
        column = quote(by_name[name].column)
        filter_columns.append(column)
        if operator == "in":
            where.append(f"found.{column} = ANY(%s)")
            params.append(list(value))
        elif not operator:
            where.append(f"found.{column} = %s")
            params.append(value)
        else:
            raise ValueError(f"unsupported filter {lookup!r}")
    key_names = ", ".join(f"c{position}" for position in range(len(key_fields)))
    inner = ", ".join(f"r.{column}" for column in dict.fromkeys([*columns, *filter_columns]))
    sql = (
        f"SELECT {', '.join(f'found.{column}' for column in columns)} "
        f"FROM unnest({', '.join(arrays)}) AS k({key_names}) "
        f"CROSS JOIN LATERAL (SELECT {inner} FROM {table} r WHERE {match} OFFSET 0) AS found"
        + (f" WHERE {' AND '.join(where)}" if where else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _array_literal(values: list) -> str:
    """A PostgreSQL array literal: one text parameter instead of psycopg dumping each element."""
    if all(isinstance(v, int) for v in values):
        return "{" + ",".join(map(str, values)) + "}"
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + '","'.join(quoted) + '"}'
