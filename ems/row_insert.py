"""One model row's INSERT, with the statement built once per model.

`Model.save()` rebuilds and recompiles its INSERT on every call; on the API's hot path
(one endorsement per request) that query building cost more CPU than the statement
itself. `row_insert_statement` prepares each field's value exactly as `save()` does
(`pre_save` for defaults such as `auto_now_add`, then `get_db_prep_save`) into one
cached `INSERT ... RETURNING`, as a `RowInsert` for a caller that sends it together with
other statements (`ems.outbox.outbox_write(first=...)`) and then hands the returned row
to `RowInsert.finish`, which sets the primary key on the instance. Its `computed` fields
take their value from a scalar subquery run by the database in the same statement (e.g.
a foreign key looked up by a natural key) and are returned after the primary key. It is
for plain rows: no signals are sent (nothing in EMS listens to `post_save`), no
multi-table inheritance.
"""

import functools
from dataclasses import dataclass

from django.db import connection, models


@functools.cache
def _insert_plan(
    model: type[models.Model], computed: tuple[str, ...]
) -> tuple[str, tuple[models.Field, ...], tuple[models.Field, ...]]:
    """(SQL with `{name}` slots for the computed fields' subqueries, plain fields, computed fields)."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = tuple(f for f in meta.concrete_fields if f is not meta.auto_field)
    plain = tuple(f for f in fields if f.attname not in computed)
    by_name = {f.attname: f for f in fields}
    unknown = set(computed) - set(by_name)
    if unknown:
        raise ValueError(f"{model.__name__} has no column {sorted(unknown)}")
    columns = ", ".join(quote(f.column) for f in (*plain, *(by_name[name] for name in computed)))
    slots = ", ".join(["%s"] * len(plain) + [f"({{{name}}})" for name in computed])
    returning = ", ".join(quote(f.column) for f in (meta.pk, *(by_name[name] for name in computed)))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({slots}) RETURNING {returning}"
    return sql, plain, tuple(by_name[name] for name in computed)


@dataclass(frozen=True)
class RowInsert:
    sql: str
    params: list
    instance: models.Model
    computed: tuple[models.Field, ...]

    @property
    def statement(self) -> tuple[str, list]:
        return self.sql, self.params

    def finish(self, row: tuple) -> models.Model:
        """Set the primary key (and the computed fields) from the row the INSERT returned."""
        instance = self.instance
        instance.pk = row[0]
        for field, value in zip(self.computed, row[1:], strict=True):
            setattr(instance, field.attname, value)
        instance._state.adding = False
        instance._state.db = connection.alias
        return instance


def row_insert_statement(
    instance: models.Model, *, computed: dict[str, tuple[str, list]] | None = None
) -> RowInsert:
    """The INSERT of a new, unsaved instance; `computed`: field attname -> (scalar subquery, params)."""
    computed = computed or {}
    names = tuple(computed)
    sql, plain, computed_fields = _insert_plan(type(instance), names)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in plain]
    if names:
        sql = sql.format(**{name: computed[name][0] for name in names})
        for name in names:
            params += computed[name][1]
    return RowInsert(sql=sql, params=params, instance=instance, computed=computed_fields)
