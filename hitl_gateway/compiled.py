"""The relay's hot statements without the ORM's per-call building: reads compiled once per
thread (``CompiledQuery``), single-row writes built once per process (``row_insert``,
``row_update``), and a request's first statement standing in for the health-check ping
(``run_unpinged``).

Why: on the relay's hot path Django spent more CPU building and compiling the same few
querysets (``Query.clone``, ``build_filter``, ``SQLCompiler.as_sql``: about half of a worker's
CPU per agent reply in a py-spy profile of ``make bench``) than PostgreSQL spent running them. The SQL
of such a query never changes, only its values, so this module builds the queryset once with
stand-in values, compiles it once, remembers where each stand-in landed among the SQL's
parameters, and afterwards only swaps the values and executes: the rows come back through
Django's own iterables, so they are the same model instances, ``select_related`` objects and
tuples the queryset itself would give. The SQL text is identical every time, so psycopg's
prepared statements apply too.

No library does this (query caches such as django-cachalot cache results, which must not be
done here: every read of the relay must see the latest committed rows).

Limits, checked when a query is first compiled: only values that reach the SQL unchanged can
be swapped (exact, ``in`` and comparison lookups on integers, strings, UUIDs and datetimes on
PostgreSQL). When a stand-in is not found among the parameters (the embedded SQLite default
stores UUIDs and datetimes as text) the query is simply built and run as usual each time:
slower, never wrong. A list value compiles once per length (``IN (%s, %s, …)``).

Use::

    HEADS = CompiledQuery(lambda ids: Delivery.objects.select_related("message").filter(pk__in=ids))
    deliveries = HEADS.fetch(ids=[3, 5])     # a list of Delivery
"""

from __future__ import annotations

import datetime
import itertools
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, models
from django.db.models import Model, QuerySet
from django.db.transaction import TransactionManagementError

_counter = itertools.count(1)
# Far from any id, text or time the gateway stores: a stand-in cannot equal a real constant.
_INT_BASE = -(2**62)
_TIME_BASE = datetime.datetime(1901, 1, 1, tzinfo=datetime.UTC)


def _stand_in(value: Any) -> Any:
    """A fresh value of ``value``'s type, unique in this process."""
    n = next(_counter)
    if isinstance(value, bool):
        raise TypeError("a boolean cannot be told from the query's own constants; build it into the query")
    if isinstance(value, int):
        return _INT_BASE - n
    if isinstance(value, str):
        return f"\x1fcompiled-stand-in-{n}\x1f"
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=(0xC0DE << 112) | n)
    if isinstance(value, datetime.datetime):
        return _TIME_BASE + datetime.timedelta(microseconds=n)
    raise TypeError(f"no stand-in for a {type(value).__name__}")


def _shape(values: dict[str, Any]) -> tuple:
    return tuple(
        (name, type(value), len(value) if isinstance(value, list | tuple) else None)
        for name, value in sorted(values.items())
    )


class _Compiled:
    """One thread's compiled form of one shape: the queryset, its compiler, the SQL and where
    each value goes among the parameters (``None``: not compilable, built afresh each time)."""

    def __init__(self, build: Callable[..., QuerySet], values: dict[str, Any]):
        stand_ins = {
            name: [_stand_in(item) for item in value] if isinstance(value, list | tuple) else _stand_in(value)
            for name, value in values.items()
        }
        self.queryset = build(**stand_ins)
        self.compiler = self.queryset.query.get_compiler(using=self.queryset.db)
        sql, params = self.compiler.as_sql()
        self.sql, self.params = sql, list(params)
        self.slots: list[tuple[int, str, int | None]] | None = []
        for name, stand_in in stand_ins.items():
            for index, item in enumerate(stand_in) if isinstance(stand_in, list) else [(None, stand_in)]:
                found = [position for position, param in enumerate(params) if _same(param, item)]
                if not found:
                    self.slots = None  # the backend changed the value on its way: no swapping
                    return
                self.slots += [(position, name, index) for position in found]
        # From now on this compiler answers with the stored SQL and the values of the current run.
        self.compiler.as_sql = lambda *args, **kwargs: (self.sql, tuple(self.params))

    def run(self, values: dict[str, Any]) -> list:
        if self.queryset.query.select_for_update and self.compiler.connection.get_autocommit():
            # Django's own check, which the stored SQL no longer passes through.
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        for position, name, index in self.slots:
            self.params[position] = values[name] if index is None else values[name][index]
        return list(self.queryset._iterable_class(_Bound(self.queryset, self.compiler)))


def _same(param: Any, stand_in: Any) -> bool:
    return type(param) is type(stand_in) and param == stand_in


class _BoundQuery:
    """The template's query, answering ``get_compiler`` with the thread's compiled compiler."""

    def __init__(self, query, compiler):
        self._query, self._compiler = query, compiler

    def get_compiler(self, using=None, connection=None, elide_empty=True):
        return self._compiler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._query, name)


class _Bound:
    """What Django's iterables read from a queryset: the template's attributes and the
    compiled compiler (never the template's result cache, which stays empty)."""

    def __init__(self, queryset: QuerySet, compiler):
        self.db, self.model = queryset.db, queryset.model
        self._known_related_objects = queryset._known_related_objects
        self._fields = queryset._fields
        self.query = _BoundQuery(queryset.query, compiler)


class CompiledQuery:
    """A read queryset ``build(**values)`` compiled once per thread and shape of its values.

    ``fetch(**values)`` returns what ``list(build(**values))`` would: model instances, tuples
    or single values, as the queryset's ``values_list``/``flat`` says. ``first(**values)`` is
    the first of them or None (give ``build`` its ordering and a ``[:1]`` slice). A compiled
    query belongs to the thread and database connection that compiled it; each thread has its
    own (a relay thread keeps its connection across items).
    """

    def __init__(self, build: Callable[..., QuerySet]):
        self.build = build
        self._local = threading.local()

    def fetch(self, **values: Any) -> list:
        if any(value is None or (isinstance(value, list | tuple) and not value) for value in values.values()):
            # ``= NULL`` becomes ``IS NULL`` and an empty ``IN`` no SQL at all: the ORM's own way.
            return list(self.build(**values))
        compiled = self._compiled(values)
        if compiled.slots is None:
            return list(self.build(**values))
        return compiled.run(values)

    def first(self, **values: Any) -> Any:
        rows = self.fetch(**values)
        return rows[0] if rows else None

    def _compiled(self, values: dict[str, Any]) -> _Compiled:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        shape = _shape(values)
        compiled = cache.get(shape)
        if compiled is None:
            compiled = cache[shape] = _Compiled(self.build, values)
            if compiled.queryset.db != DEFAULT_DB_ALIAS:
                raise ValueError("compiled queries run on the default database only")
        return compiled

    def compiles(self, **values: Any) -> bool:
        """Whether this shape is swapped rather than rebuilt (tests: the hot queries must be)."""
        return self._compiled(values).slots is not None


# --- single-row writes ------------------------------------------------------------------------
# The SQL of each (model, columns, conflict rule, backend), built once per process: names come
# from the model, values are always bound parameters.
_WRITE_SQL: dict[tuple, tuple[str, list]] = {}


def _write_sql(key: tuple, build: Callable[[], tuple[str, list]]) -> tuple[str, list]:
    found = _WRITE_SQL.get(key)
    if found is None:
        found = _WRITE_SQL[key] = build()
    return found


def _value(field, instance, *, adding: bool) -> Any:
    """The column's value as ``Model.save`` computes it (defaults, ``auto_now``), converted by
    the field itself (``get_db_prep_save``: JSON, encrypted fields, times)."""
    value = field.pre_save(instance, adding)
    if hasattr(value, "resolve_expression"):
        raise TypeError(f"{field.name}: an expression needs Model.save")
    return field.get_db_prep_save(value, connection)


def row_insert(
    instance: Model, *, skip_conflicts: bool = False, computed: Mapping[str, tuple[str, Sequence[Any]]] | None = None
) -> Any:
    """``instance.save(force_insert=True)`` as one prepared-once ``INSERT … RETURNING pk``; the
    instance gets its primary key and is marked saved. Returns the key, or None when
    ``skip_conflicts`` and a unique index already holds the row (``ON CONFLICT DO NOTHING``: no
    exception, so no savepoint inside a transaction). Otherwise a unique index raises
    ``IntegrityError`` as the ORM would. No signals are sent (the gateway has no receivers).

    ``computed``: field name -> (SQL expression, its parameters), a value the database works out
    in the same statement (a read of other rows, say) instead of the instance's; it is returned
    and set on the instance. The expression's text is part of the statement's cache key.
    """
    meta = type(instance)._meta
    quote = connection.ops.quote_name
    computed = computed or {}

    def build() -> tuple[str, list]:
        columns = [f for f in meta.concrete_fields if not (f.primary_key and f.db_returning)]
        values = [f"({computed[f.name][0]})" if f.name in computed else "%s" for f in columns]
        returning = [meta.pk.column] + [meta.get_field(name).column for name in computed]
        sql = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in columns)}) "  # noqa: S608
            f"VALUES ({', '.join(values)})"
            + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
            + f" RETURNING {', '.join(quote(column) for column in returning)}"
        )
        return sql, columns

    shape = tuple((name, expression) for name, (expression, _) in computed.items())
    sql, columns = _write_sql((type(instance), "insert", skip_conflicts, connection.vendor, shape), build)
    params: list = []
    for f in columns:
        if f.name in computed:
            params += computed[f.name][1]
        else:
            params.append(_value(f, instance, adding=True))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    instance.pk = meta.pk.to_python(row[0])  # (SQLite answers a UUID as text)
    for name, value in zip(computed, row[1:], strict=True):
        field = meta.get_field(name)
        setattr(instance, field.attname, field.to_python(value))
    instance._state.adding, instance._state.db = False, DEFAULT_DB_ALIAS
    return instance.pk


def row_update(instance: Model, fields: Sequence[str]) -> int:
    """``instance.save(update_fields=fields)`` as one prepared-once ``UPDATE … WHERE pk = %s``
    (``auto_now`` fields among ``fields`` are set as ``save`` sets them); returns the rows
    written (0: the row is gone). No signals are sent (the gateway has no receivers)."""
    meta = type(instance)._meta
    quote = connection.ops.quote_name

    def build() -> tuple[str, list]:
        targets = [meta.get_field(name) for name in fields]
        sql = (
            f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in targets)} "  # noqa: S608
            f"WHERE {quote(meta.pk.column)} = %s"
        )
        return sql, targets

    sql, targets = _write_sql((type(instance), "update", tuple(fields), connection.vendor), build)
    params = [_value(f, instance, adding=False) for f in targets]
    params.append(meta.pk.get_db_prep_value(instance.pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def rows_update(instances: Sequence[Model], fields: Sequence[str]) -> int:
    """``row_update`` for several rows of one model in one statement on PostgreSQL (``UPDATE …
    FROM (VALUES …)``, built once per row count); returns the rows written. Elsewhere, and for
    one row, ``row_update`` each."""
    if len(instances) <= 1 or connection.vendor != "postgresql":
        return sum(row_update(instance, fields) for instance in instances)
    sql = rows_update_sql(type(instances[0]), fields, len(instances))
    with connection.cursor() as cursor:
        cursor.execute(sql, rows_update_params(instances, fields))
        return cursor.rowcount


def rows_update_sql(model: type[Model], fields: Sequence[str], count: int, *, guard: str = "") -> str:
    """The PostgreSQL statement of ``rows_update`` for ``count`` rows (built once per shape).

    ``guard``: a subquery of keys; each row then comes with a key of its own first
    (``rows_update_params(guards=...)``) and is written only if the subquery returns it. For a
    statement that embeds this one in a ``WITH`` and writes the rows only where another part
    of it succeeded (the outbox's settle, ``attempt_write``).
    """

    def build() -> tuple[str, list]:
        meta = model._meta
        quote = connection.ops.quote_name
        targets = [meta.get_field(name) for name in fields]
        table, key = quote(meta.db_table), quote(meta.pk.column)
        # A string column's type without its length: a cast to varchar(n) would cut a longer
        # value silently, where the assignment refuses it as ``save`` does.
        casts = [
            meta.pk.db_type(connection),
            *("varchar" if isinstance(f, models.CharField) else f.db_type(connection) for f in targets),
        ]
        row = "(" + ", ".join(f"%s::{cast}" for cast in (["bigint"] if guard else []) + casts) + ")"
        names = ", ".join(quote(f.column) for f in targets)
        sql = (
            f"UPDATE {table} SET {', '.join(f'{quote(f.column)} = v.{quote(f.column)}' for f in targets)} "  # noqa: S608
            f"FROM (VALUES {', '.join([row] * count)}) AS v({'guard, ' if guard else ''}{key}, {names}) "
            f"WHERE {table}.{key} = v.{key}" + (f" AND v.guard IN ({guard})" if guard else "")
        )
        return sql, targets

    return _write_sql((model, "update-rows", tuple(fields), count, guard), build)[0]


def rows_update_params(
    instances: Sequence[Model], fields: Sequence[str], *, guards: Sequence[int] | None = None
) -> list:
    """The parameters of ``rows_update_sql`` for these rows (``guards``: each row's guard key)."""
    if not instances:
        return []
    meta = type(instances[0])._meta
    targets = [meta.get_field(name) for name in fields]
    params: list = []
    for index, instance in enumerate(instances):
        if guards is not None:
            params.append(guards[index])
        params.append(meta.pk.get_db_prep_value(instance.pk, connection))
        params += [_value(field, instance, adding=False) for field in targets]
    return params


def run_unpinged(call: Callable[[], Any]) -> Any:
    """Run a request's first statement(s), ``call``, without Django's health-check ping.

    With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first query of every
    request on a kept connection, so a connection the server dropped meanwhile is replaced
    instead of failing the request: a second round trip and about 9 % of the webhook
    acknowledgement's CPU (py-spy, ``make bench``). Here the ping is skipped and its one case
    is handled after the fact: if the kept connection turns out dead (``OperationalError`` or
    ``InterfaceError``), it is closed and ``call`` runs once more on a new one, as does the rest
    of the request. So ``call`` must be safe to run twice: a read (the API key's integration),
    or the ack's insert, whose dedup key turns a second copy into nothing. Inside a
    transaction, or without health checks, ``call`` just runs.
    """
    if connection.in_atomic_block or not connection.health_check_enabled:
        return call()
    kept = connection.connection is not None and not connection.health_check_done
    connection.health_check_done = True
    try:
        return call()
    except (OperationalError, InterfaceError):
        if not kept:
            raise
        connection.close()
        return call()
