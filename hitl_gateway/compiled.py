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
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def _insert_columns(meta) -> list:
    """The columns an INSERT names: every concrete field but a database-generated key."""
    return [f for f in meta.concrete_fields if not (f.primary_key and f.db_returning)]


def _insert_params(
    instance: Model, columns: Sequence, computed: Mapping[str, tuple[str, Sequence[Any]]], skip: str = ""
) -> list:
    """The parameters of an INSERT of ``instance``: each column's value as ``save`` computes it,
    or a computed expression's own parameters; ``skip``: a column whose value the SQL supplies."""
    params: list = []
    for f in columns:
        if f.name in computed:
            params += computed[f.name][1]
        elif f.name != skip:
            params.append(_value(f, instance, adding=True))
    return params


def _inserted(instance: Model, row: Sequence[Any], computed: Iterable[str]) -> None:
    """Give ``instance`` the key (and computed values) an INSERT returned; mark it saved."""
    meta = type(instance)._meta
    instance.pk = meta.pk.to_python(row[0])  # (SQLite answers a UUID as text)
    for name, value in zip(computed, row[1:], strict=True):
        field = meta.get_field(name)
        setattr(instance, field.attname, field.to_python(value))
    instance._state.adding, instance._state.db = False, DEFAULT_DB_ALIAS


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
        columns = _insert_columns(meta)
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
    with connection.cursor() as cursor:
        cursor.execute(sql, _insert_params(instance, columns, computed))
        row = cursor.fetchone()
    if row is None:
        return None
    _inserted(instance, row, computed)
    return instance.pk


def _cast(field) -> str:
    """The type a bound value is cast to where no column names it (``SELECT %s::type``): a
    string column's type without its length, since a cast to varchar(n) would cut a longer value
    silently where the assignment refuses it as ``save`` does."""
    return "varchar" if isinstance(field, models.CharField) else field.db_type(connection)


def rows_insert_linked(
    parent: Model,
    child: Model,
    *,
    link: str,
    skip_conflicts: bool = False,
    computed: Mapping[str, tuple[str, Sequence[Any]]] | None = None,
    guard: tuple[str, Sequence[Any]] | None = None,
    then: tuple[str, Sequence[Any]] | None = None,
) -> bool | None:
    """Insert ``parent`` and ``child`` (whose foreign key ``link`` takes the parent's new key) in
    one statement on PostgreSQL; both instances get their keys as with ``row_insert``.

    Returns True when both rows were written, False when ``skip_conflicts`` and a unique index
    already held the parent (then neither is written), None when ``guard`` found no row (nothing
    is written). ``computed``: as for ``row_insert``, of the child.

    Why: a message and its outbox row were two statements, and on the web tier a transaction of
    their own (BEGIN, a locked read, two INSERTs, COMMIT). Here they are one ``WITH`` statement,
    atomic by itself, whose parts run in this order:

    - ``guard``: (a ``SELECT`` returning at most one row, its parameters), for example a row to
      lock (``FOR NO KEY UPDATE``) whose state the write depends on. PostgreSQL checks a locked
      row's condition again on its newest version, so a concurrent change committed first is
      seen; one committed later waits for this statement. Only that row is read again after a
      wait: the rest of the statement (a computed value's read) sees the rows as they were
      when it began.
    - the parent's ``INSERT … SELECT`` (from the guard's row, when there is a guard), then the
      child's from the parent's new row, so no parent means no child;
    - ``then``: (an ``UPDATE`` or ``INSERT``, its parameters) run in the same statement; it may
      read the CTEs ``guard`` and ``parent`` (the parent's new key as ``id``), to write only when
      they hold a row.

    Elsewhere (the embedded SQLite), without ``guard`` or ``then``: two ``row_insert`` calls, in
    the caller's transaction. A unique index on the child raises ``IntegrityError`` as ``save``.
    """
    computed = computed or {}
    if connection.vendor != "postgresql":
        if guard is not None or then is not None:
            raise NotImplementedError("a guarded or extended insert needs PostgreSQL")
        if row_insert(parent, skip_conflicts=skip_conflicts) is None:
            return False
        setattr(child, link, parent)
        row_insert(child, computed=computed)
        return True
    parent_meta, child_meta = type(parent)._meta, type(child)._meta
    link_name = child_meta.get_field(link).name
    quote = connection.ops.quote_name

    def build() -> tuple[str, tuple[list, list]]:
        parent_columns, child_columns = _insert_columns(parent_meta), _insert_columns(child_meta)

        def insert(meta, columns, *, source: str, values: list[str], returning: list[str], conflicts: str) -> str:
            return (
                f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in columns)}) "  # noqa: S608
                f"SELECT {', '.join(values)}{f' FROM {source}' if source else ''}{conflicts} "
                f"RETURNING {', '.join(quote(column) for column in returning)}"
            )

        parent_key = quote(parent_meta.pk.column)
        parent_sql = insert(
            parent_meta,
            parent_columns,
            source="guard" if guard else "",
            values=[f"%s::{_cast(f)}" for f in parent_columns],
            returning=[parent_meta.pk.column],
            conflicts=" ON CONFLICT DO NOTHING" if skip_conflicts else "",
        )
        child_sql = insert(
            child_meta,
            child_columns,
            source="parent",
            values=[
                f"parent.{parent_key}"
                if f.name == link_name
                else f"({computed[f.name][0]})"
                if f.name in computed
                else f"%s::{_cast(f)}"
                for f in child_columns
            ],
            returning=[child_meta.pk.column] + [child_meta.get_field(name).column for name in computed],
            conflicts="",
        )
        parts = [f"guard AS ({guard[0]})"] if guard else []
        parts += [f"parent AS ({parent_sql})", f"child AS ({child_sql})"]
        parts += [f"then_ AS ({then[0]})"] if then else []
        sql = (
            f"WITH {', '.join(parts)} SELECT {'EXISTS (SELECT 1 FROM guard)' if guard else 'true'}, "  # noqa: S608
            f"(SELECT {parent_key} FROM parent), child.* FROM (SELECT 1) AS one LEFT JOIN child ON true"
        )
        return sql, (parent_columns, child_columns)

    shape = (
        tuple((name, expression) for name, (expression, _) in computed.items()),
        guard[0] if guard else None,
        then[0] if then else None,
    )
    sql, (parent_columns, child_columns) = _write_sql(
        (type(parent), type(child), "insert-linked", link, skip_conflicts, shape), build
    )
    params = [
        *(guard[1] if guard else ()),
        *_insert_params(parent, parent_columns, {}),
        *_insert_params(child, child_columns, computed, skip=link_name),
        *(then[1] if then else ()),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        held, parent_key, *child_row = cursor.fetchone()
    if not held:
        return None
    if parent_key is None:
        return False
    _inserted(parent, [parent_key], ())
    setattr(child, link, parent)
    _inserted(child, child_row, computed)
    return True


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
        casts = [meta.pk.db_type(connection), *(_cast(f) for f in targets)]
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
