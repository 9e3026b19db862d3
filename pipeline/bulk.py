"""SQL for the hot path, built once: multi-row ``INSERT ... RETURNING`` (:func:`rows_insert`),
``UPDATE``s by primary key (:func:`rows_update`) and ``SELECT``s compiled by the ORM once per shape
(:func:`select_in`). On PostgreSQL the first two bind their parameters on the server
(:func:`_bound_cursor`).

``QuerySet.bulk_create()`` compiles every field of every object: for the
notifications and deliveries of one event to 10,000 recipients it spent about
half the pipeline's time there (cProfile: 6.4 s of 13.6 s, against 0.5 s
running the SQL). :func:`rows_insert` prepares each column's value as the
field's own ``get_db_prep_save()`` does, but once per distinct value for the
columns whose values repeat (an event's ``data`` for each of its
recipients, the time stamps, the defaults), builds the statement's SQL once
per row count, and binds as many rows per statement as the database takes.
On PostgreSQL, from :data:`_UNNEST_MIN_ROWS` rows, it sends one statement
per call whatever the row count, with one array parameter per column
(``unnest``) and the columns every row shares bound once: a statement of
13,000 parameters cost the server more to parse, bind and plan than to run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from django.db import connections, models
from django.db.models import QuerySet
from django.db.models.fields import AutoFieldMixin
from django.utils import timezone

#: Field types whose Python value is its database value (ints and strings): bound as given, never prepared.
_AS_IS = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "CharField",
    "IntegerField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}
#: Row counts from which :func:`rows_insert` sends arrays (``unnest``) on PostgreSQL rather than ``VALUES``.
#: Below it ``VALUES`` costs less: one-row event inserts 0.94 ms p50 against 1.06 (arrays), 2 rows 0.99 against
#: 1.26, 64 rows 4.3 against 4.7, 256 rows 11.4 against 14.4, every column varying (in-process, autocommit,
#: 2 CPUs). The arrays are kept for the fan-out's chunks of 1,000, whose columns an announcement shares.
_UNNEST_MIN_ROWS = 256
_SQL: dict[tuple[str, str, tuple[str, ...], tuple[str, ...], int, bool, bool, str], str] = {}


def _max_params(connection: Any) -> int:
    """Bound parameters one statement may hold (SQLite: its compiled limit, 32,766 since 3.32; Django's
    feature flag says 999, the limit before 3.32; PostgreSQL: 65,535)."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    if connection.vendor == "postgresql":
        return 65535
    return int(connection.features.max_query_params or 999)


def rows_insert(
    model: type[models.Model],
    *,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    shared: Mapping[str, Any] | None = None,
    returning: Sequence[str] = ("pk",),
    ignore_conflicts: bool = False,
    when: tuple[str, Sequence[Any]] | None = None,
    using: str = "default",
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` into ``model``'s table; return the ``returning`` columns of each new row.

    ``columns`` are the attribute names (``recipient_id``, not
    ``recipient``) of the values each row gives, in order; ``shared`` gives
    one value for every row; every other concrete field but an auto primary
    key gets the current time for ``auto_now``/``auto_now_add`` (the same for
    every row), else its default as a model instance gets it (``""`` for a
    string field without one, else ``None``). Values are
    prepared by the field's ``get_db_prep_save()`` (ints and strings are bound
    as given), once per distinct value object of a column.

    With ``ignore_conflicts`` a row that would break a unique constraint is
    left out (``ON CONFLICT DO NOTHING``) and returns nothing. ``when`` is an
    SQL condition and its parameters (one row only): the row is inserted
    only if it holds (``INSERT ... SELECT ... WHERE``), in the same
    statement, and nothing is returned if it does not.

    The returned tuples (raw database values: a ``UUIDField`` is a hex string
    on SQLite) come in no promised order (SQLite does not promise the order
    of ``RETURNING``): return a unique key with the primary key. Runs in the
    caller's transaction, one statement per as many rows as the database's
    bound-parameter limit allows. Raises ``TypeError`` for a column the model
    does not have, or a primary key that is neither given nor automatic (a
    default is called once per call, not once per row);
    ``django.db.IntegrityError`` as the database does (a required field left
    out is ``NULL``).
    """
    connection = connections[using]
    meta = model._meta
    shared = dict(shared or {})
    shape = _insert_shape(connection.alias, model, tuple(columns), tuple(shared))
    by_attname, prepare = shape.fields, shape.prepare
    fixed = _fixed_values(connection, shape, shared)
    names = (*columns, *fixed)
    tail = tuple(fixed.values())
    cache: list[dict[int, Any]] = [{} for _ in columns]
    keep: list[Any] = []  # the values whose id() keys the cache, kept alive until the statement is built

    def prepared(row: Sequence[Any]) -> tuple[Any, ...]:
        out = []
        for i, value in enumerate(row):
            prep = prepare[i]
            if prep is None or value is None:
                out.append(value)
                continue
            seen = cache[i].get(id(value))
            if seen is None:
                seen = cache[i][id(value)] = prep(value, connection)
                keep.append(value)
            out.append(seen)
        return (*out, *tail)

    returned = [meta.pk.attname if name == "pk" else name for name in returning]
    per_statement = max(1, _max_params(connection) // len(names))
    result: list[tuple[Any, ...]] = []
    with _bound_cursor(connection) as (cursor, native):
        if when is not None:
            if len(rows) != 1:
                raise TypeError("rows_insert(when=...) inserts one row")
            condition, condition_params = when
            table, returns = meta.db_table, tuple(returned)
            sql = _statement(connection, table, names, returns, 1, by_attname, False, native, condition=condition)
            cursor.execute(sql, [*prepared(rows[0]), *condition_params])
            return [tuple(r) for r in cursor.fetchall()]
        if native and len(rows) >= _UNNEST_MIN_ROWS:  # PostgreSQL: one statement, one array per column
            prepared_rows = [prepared(row) for row in rows]
            # A column whose every row holds the same object (an announcement's title, body and data, the
            # event of a one-event chunk) is bound once, like ``shared``: psycopg escapes each text element of
            # an array in Python.
            same = [all(row[i] is prepared_rows[0][i] for row in prepared_rows) for i in range(len(columns))]
            same[0] = False  # unnest() needs an array
            varying = [i for i in range(len(columns)) if not same[i]]
            constant = [i for i in range(len(columns)) if same[i]]
            sql = _unnest_statement(
                connection,
                meta.db_table,
                tuple(columns[i] for i in varying),
                (*(columns[i] for i in constant), *fixed),
                tuple(returned),
                by_attname,
                ignore_conflicts,
            )
            arrays = [[row[i] for row in prepared_rows] for i in varying]
            cursor.execute(sql, [*arrays, *(prepared_rows[0][i] for i in constant), *tail])
            return [tuple(r) for r in cursor.fetchall()]
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = _statement(
                connection, meta.db_table, names, tuple(returned), len(part), by_attname, ignore_conflicts, native
            )
            params = [value for row in part for value in prepared(row)]
            cursor.execute(sql, params)
            result.extend(tuple(r) for r in cursor.fetchall())
    return result


def insert_constants(
    model: type[models.Model], *, columns: Sequence[str], shared: Sequence[str] = (), using: str = "default"
) -> dict[str, tuple[str, str, Any]]:
    """What :func:`rows_insert` puts in the columns of ``model`` that an insert of ``columns`` and ``shared``
    (attribute names) leaves out, for a caller that writes its own ``INSERT`` and keeps the result:
    ``{attribute name: (quoted column, database type, value prepared for the database)}``, each the default
    as a model instance gets it (``""`` for a string field without one, else ``None``).

    Raises ``TypeError`` for an unknown column, and for a left-out column whose value is not a constant (an
    ``auto_now``/``auto_now_add`` field or a callable default): give it in ``columns`` or ``shared``.
    """
    connection = connections[using]
    shape = _insert_shape(connection.alias, model, tuple(columns), tuple(shared))
    quote = connection.ops.quote_name
    found = {}
    for name, field, source, constant in shape.fixed:
        if source is _Source.SHARED:
            continue
        if source is not _Source.CONSTANT:
            raise TypeError(f"{model.__name__}.{name} has no constant default ({source.value}): give its value")
        found[name] = (quote(field.column), field.db_type(connection), constant)
    return found


def _fixed_values(connection: Any, shape: _InsertShape, shared: Mapping[str, Any]) -> dict[str, Any]:
    """The prepared value of each of ``shape.fixed``'s columns for one call of :func:`rows_insert`."""
    now = timezone.now()
    fixed: dict[str, Any] = {}
    for name, field, source, constant in shape.fixed:
        if source is _Source.CONSTANT:
            fixed[name] = constant
            continue
        if source is _Source.SHARED:
            value = shared[name]
        elif source is _Source.NOW:
            value = now
        else:
            value = field.get_default()  # a callable default, called once per call
        fixed[name] = field.get_db_prep_save(value, connection)
    return fixed


class _Source(enum.Enum):
    """Where :func:`rows_insert` takes the value of a column the rows do not give."""

    SHARED = "shared"  # the caller's ``shared``
    NOW = "now"  # auto_now / auto_now_add: the call's time
    DEFAULT = "default"  # a callable default, called once per call
    CONSTANT = "constant"  # any other default ("" for a string field without one, else None), prepared once


@dataclasses.dataclass(frozen=True, slots=True)
class _InsertShape:
    """What :func:`rows_insert` works out from the model and the names alone, once per database and shape:
    the fields by attribute name, each given column's preparation (``None``: bound as given) and, for every
    other concrete field but an auto primary key, where its value comes from."""

    fields: dict[str, Any]
    prepare: tuple[Callable[[Any, Any], Any] | None, ...]
    fixed: tuple[tuple[str, Any, _Source, Any], ...]


@functools.lru_cache(maxsize=256)
def _insert_shape(
    alias: str, model: type[models.Model], columns: tuple[str, ...], shared: tuple[str, ...]
) -> _InsertShape:
    """:class:`_InsertShape` of ``model`` for ``columns`` and ``shared`` names on database ``alias``, cached:
    working it out for each call cost a one-row insert (an ``emit_event()``) more Python than its SQL took to
    build. Raises ``TypeError`` as :func:`rows_insert` documents."""
    connection = connections[alias]
    meta = model._meta
    by_attname = {f.attname: f for f in meta.concrete_fields}
    unknown = [name for name in [*columns, *shared] if name not in by_attname]
    if unknown:
        raise TypeError(f"{model.__name__} has no column(s) {unknown} (use attribute names such as 'user_id')")
    pk = meta.pk
    assert pk is not None
    if pk.attname not in columns and pk.attname not in shared and not isinstance(pk, AutoFieldMixin):
        # A default such as uuid4 would be called once for all the rows.
        raise TypeError(f"{model.__name__}: give the primary key {pk.attname!r} as a column")
    fixed: list[tuple[str, Any, _Source, Any]] = []
    for field in meta.concrete_fields:
        if field.attname in columns or (isinstance(field, AutoFieldMixin) and field.attname not in shared):
            continue
        if field.attname in shared:
            fixed.append((field.attname, field, _Source.SHARED, None))
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            fixed.append((field.attname, field, _Source.NOW, None))
        elif field.has_default() and callable(field.default):
            fixed.append((field.attname, field, _Source.DEFAULT, None))
        else:  # as a model instance gets it: "" for a string field without a default, else None
            constant = field.get_db_prep_save(field.get_default(), connection)
            fixed.append((field.attname, field, _Source.CONSTANT, constant))
    prepare = tuple(
        None if by_attname[name].get_internal_type() in _AS_IS else by_attname[name].get_db_prep_save
        for name in columns
    )
    return _InsertShape(by_attname, prepare, tuple(fixed))


@contextlib.contextmanager
def _bound_cursor(connection: Any) -> Iterator[tuple[Any, bool]]:
    """``(cursor, native)``: a cursor for statements with thousands of parameters, in the connection's current
    transaction; ``native``: it takes PostgreSQL's own ``$1, $2, …`` placeholders, not ``%s``.

    On PostgreSQL with psycopg 3.2+ it is a ``psycopg.RawCursor``: parameters bound on the server and no
    placeholder parsing. Django's cursor binds client-side (unless ``OPTIONS["server_side_binding"]``), and
    psycopg parses every ``%s`` of a query too long for its cache in Python: for the 10,000 notifications and
    deliveries of one event that was half of the pipeline's time (cProfile: 3.75 of 8.2 s in
    ``_split_query``). Database errors are raised as Django's (``wrap_database_errors``); Django's query
    logging and execute wrappers do not see these statements.

    Being bound on the server, these statements are also prepared once the connection has run one
    ``prepare_threshold`` times (``DATABASES[...]["OPTIONS"]``; ``DATABASE_PREPARE_THRESHOLD`` in
    :mod:`webapp.settings.base`): PostgreSQL then neither parses nor plans it again. Django's own cursor
    never prepares (it binds client-side).
    """
    raw_cursor = getattr(getattr(connection, "Database", None), "RawCursor", None)
    if connection.vendor != "postgresql" or raw_cursor is None:
        with connection.cursor() as cursor:
            yield cursor, False
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, raw_cursor(connection.connection) as cursor:
        yield cursor, True


def _statement(
    connection: Any,
    table: str,
    names: tuple[str, ...],
    returned: tuple[str, ...],
    count: int,
    fields: dict[str, Any],
    ignore_conflicts: bool,
    native: bool = False,
    condition: str = "",
) -> str:
    """The ``INSERT`` of ``count`` rows (``VALUES``), or of one row under ``condition`` (``SELECT ... WHERE``)."""
    key = (connection.alias, table, names, returned, count, ignore_conflicts, native, condition)
    sql = _SQL.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        if condition:
            source = f"SELECT {', '.join(['%s'] * len(names))} WHERE {condition} "
        elif native:  # $1, $2, ... numbered across the rows
            width = len(names)
            rows = ", ".join("(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(count))
            source = f"VALUES {rows} "
        else:
            source = f"VALUES {', '.join(['(' + ', '.join(['%s'] * len(names)) + ')'] * count)} "
        sql = (
            f"INSERT INTO {quote(table)} ({', '.join(quote(fields[n].column) for n in names)}) "
            f"{source}{'ON CONFLICT DO NOTHING ' if ignore_conflicts else ''}"
            f"RETURNING {', '.join(quote(fields[n].column) for n in returned)}"
        )
        if condition and native:
            sql = _numbered(sql)
        if len(_SQL) > 256:  # row counts vary: keep the cache bounded
            _SQL.clear()
        _SQL[key] = sql
    return sql


def _unnest_statement(
    connection: Any,
    table: str,
    columns: Sequence[str],
    fixed: tuple[str, ...],
    returned: tuple[str, ...],
    fields: dict[str, Any],
    ignore_conflicts: bool = False,
) -> str:
    """PostgreSQL's ``INSERT ... SELECT * FROM unnest($1::type[], ...)``: one array parameter per column of
    ``columns`` (at least one) and one scalar parameter per ``fixed`` column (the same for every row).

    The ``VALUES`` form binds one parameter per value: for 1,000 notifications, 13,000 parameters that the
    server parses, binds and plans on every statement (pg_stat_statements: a third of the statement's time
    in planning alone, at 100,000 recipients). The arrays make the statement's text and plan independent of
    the row count, as in the PostgreSQL wiki's bulk-loading advice (``unnest`` of arrays, "Populating a
    Database"). Placeholders are ``$n`` (a server-binding cursor)."""
    key = (connection.alias, table, ("unnest", *columns), (*fixed, "|", *returned), 0, ignore_conflicts, True, "")
    sql = _SQL.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        arrays = ", ".join(f"CAST(${i + 1} AS {fields[name].db_type(connection)}[])" for i, name in enumerate(columns))
        scalars = "".join(
            f", CAST(${len(columns) + i + 1} AS {fields[name].db_type(connection)})" for i, name in enumerate(fixed)
        )
        names = ", ".join(quote(fields[n].column) for n in (*columns, *fixed))
        sql = (
            f"INSERT INTO {quote(table)} ({names}) "  # noqa: S608 - quoted names from the model's _meta
            f"SELECT u.*{scalars} FROM unnest({arrays}) AS u "
            f"{'ON CONFLICT DO NOTHING ' if ignore_conflicts else ''}"
            f"RETURNING {', '.join(quote(fields[n].column) for n in returned)}"
        )
        _SQL[key] = sql
    return sql


_SELECTS: dict[tuple[str, str, tuple[int, ...]], tuple[str, list[Any]]] = {}


def _sentinel(k: int, i: int, like: Any) -> Any:
    return -(10**15 + k * 10**7 + i) if isinstance(like, int) else f"\x00notiflow:{k}:{i}"


def select_in(
    key: str, build: Callable[..., QuerySet[Any]], *lists: Sequence[Any], using: str = "default"
) -> tuple[str, list[Any]] | None:
    """The SQL and parameters of ``build(*lists)``, compiled by the ORM once per ``key``, database and lengths.

    ``build`` takes one list per ``lists`` (ids or strings, bound as given,
    e.g. ``pk__in``) and returns a queryset whose other parameters never
    change. It is compiled with stand-in values (very negative ints,
    ``\\x00``-prefixed strings) of the same lengths and kinds; each call then
    binds the real values in their place. Building a query through the ORM
    cost 0.3 to 0.6 ms per query, more than running it, for every batch of
    the hot path. Returns ``None`` when a list is empty (the ORM compiles no
    SQL for ``IN ()``): the caller knows what that means for its query.
    """
    if any(not values for values in lists):
        return None
    connection = connections[using]
    shape = (key, connection.alias, tuple(len(values) for values in lists))
    compiled = _SELECTS.get(shape)
    if compiled is None:
        stand_ins = [[_sentinel(k, i, values[0]) for i in range(len(values))] for k, values in enumerate(lists)]
        where = {value: (k, i) for k, values in enumerate(stand_ins) for i, value in enumerate(values)}
        sql, params = build(*stand_ins).using(connection.alias).query.sql_with_params()
        slots = [where.get(p, _Constant(p)) if isinstance(p, int | str) else _Constant(p) for p in params]
        if len(_SELECTS) > 1024:  # lengths vary: keep the cache bounded
            _SELECTS.clear()
        compiled = _SELECTS[shape] = (sql, slots)
    sql, slots = compiled
    return sql, [slot.value if isinstance(slot, _Constant) else lists[slot[0]][slot[1]] for slot in slots]


_M = TypeVar("_M", bound=models.Model)


def instances_select(
    model: type[_M], sql: str, params: Sequence[Any], *, extra: Sequence[str] = (), using: str = "default"
) -> list[_M]:
    """The ``model`` instances of the rows ``sql`` returns, as ``model.objects.raw(sql, params)`` builds them.

    ``sql`` selects columns of ``model``'s table by their names (the ORM's
    own SQL of a queryset of ``model``, from :func:`select_in` or
    ``query.sql_with_params()``); columns it leaves out are deferred, as
    with ``only()``. Each value goes through its field's converters (JSON
    text to a dict on PostgreSQL, text to a UUID on SQLite), worked out once
    per database, model and columns: ``RawQuerySet`` works them out, and
    maps the columns to fields, for every query, which cost the hot path
    more than running its one-event ``SELECT`` (0.3 of 0.68 ms).
    ``extra``: the names of the last columns, which are not the model's
    (annotations): each instance gets their raw values as attributes of
    those names, as ``raw()`` sets them. Raises ``TypeError`` for a column
    that is not a field of ``model`` (nor in ``extra``, in its place), and
    what the database raises.
    """
    connection = connections[using]
    names, rows = _fetched(connection, sql, params, names=True)
    fields = names[: len(names) - len(extra)]
    if tuple(names[len(fields) :]) != tuple(extra):
        raise TypeError(f"the statement's last columns are {names[len(fields) :]}, not {list(extra)}")
    attnames, order, converters = _loader(connection.alias, model, fields)
    instances = []
    for row in rows:
        values = [row[i] for i in order]
        for k, column, functions in converters:
            for function in functions:
                values[k] = function(values[k], column, connection)
        instance = model.from_db(connection.alias, attnames, values)
        for offset, name in enumerate(extra):
            setattr(instance, name, row[len(fields) + offset])
        instances.append(instance)
    return instances


def rows_fetch(sql: str, params: Sequence[Any], *, using: str = "default") -> list[tuple[Any, ...]]:
    """Run one statement written with Django's ``%s`` placeholders (``%%`` for a literal ``%``); return its rows
    (``[]`` for a statement that returns none) as raw database values.

    On PostgreSQL it goes through the cursor :func:`rows_insert` uses: bound on the server, so prepared once
    the connection has run it ``prepare_threshold`` times. Runs in the caller's transaction (or autocommit).
    Raises what the database raises, as Django's exceptions.

    Do not run through it a statement whose plan depends on the size of a table that grows fast (rows found
    by key in events or deliveries): PostgreSQL plans a prepared statement once (its generic plan, from the
    sixth run) and keeps that plan until the table's statistics change; planned while the table was small,
    it scans the whole table, and goes on doing so as the table grows until autovacuum next analyses it (a
    minute or more: in the hot path's benchmark, marking a batch's events done took 1.1 ms of a 1.5 ms
    statement at half load, hashing the 3,000 events of the table to find two). :func:`rows_update` is never
    prepared; :mod:`pipeline.storing` finds such rows by their address (a TID scan in any plan).
    """
    return [tuple(row) for row in _fetched(connections[using], sql, params)[1]]


def _fetched(
    connection: Any, sql: str, params: Sequence[Any], *, names: bool = False
) -> tuple[tuple[str, ...], list[Any]]:
    """Run ``sql`` (Django's ``%s`` placeholders) on :func:`_bound_cursor`; return its column names (only with
    ``names``; ``()`` otherwise) and rows (``[]`` for a statement that returns no rows).

    On psycopg the column names are read once per statement text and kept (:data:`_NAMES`): its
    ``cursor.description`` builds a ``Column`` object per column on every call, a tenth of a one-event
    batch's time in the client (py-spy)."""
    with _bound_cursor(connection) as (cursor, native):
        if not native:
            cursor.execute(sql, params)
            if cursor.description is None:
                return (), []
            return (tuple(column[0] for column in cursor.description) if names else ()), cursor.fetchall()
        cursor.execute(_numbered(sql), params)
        result = cursor.pgresult
        if result is None or result.status != _TUPLES_OK:
            return (), []
        found: tuple[str, ...] = ()
        if names:
            key = (connection.alias, sql)
            found = _NAMES.get(key, ())
            if not found:
                if len(_NAMES) > 1024:  # IN lists of every length: keep it bounded
                    _NAMES.clear()
                found = _NAMES[key] = tuple(column.name for column in cursor.description)
        return found, cursor.fetchall()


#: libpq's PGRES_TUPLES_OK: a statement that returned rows (possibly none), as psycopg's own ``description`` tests.
_TUPLES_OK = 2
#: ``{(alias, sql): column names}`` of the statements :func:`instances_select` has run (a statement's columns
#: are its text's).
_NAMES: dict[tuple[str, str], tuple[str, ...]] = {}


@functools.lru_cache(maxsize=256)
def _loader(
    alias: str, model: type[models.Model], names: tuple[str, ...]
) -> tuple[list[str], list[int], list[tuple[int, Any, list[Any]]]]:
    """For :func:`instances_select`: the attribute names of ``names`` (columns) in the model's field order,
    the position of each in a row, and ``(index, column, converters)`` of those with converters."""
    connection = connections[alias]
    fields = model._meta.concrete_fields
    by_column = {f.column: f for f in fields}
    unknown = [name for name in names if name not in by_column]
    if unknown:
        raise TypeError(f"{model.__name__} has no column(s) {unknown}")
    order = sorted(range(len(names)), key=lambda i: fields.index(by_column[names[i]]))
    converters = []
    for k, i in enumerate(order):
        column = by_column[names[i]].get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((k, column, found))
    return [by_column[names[i]].attname for i in order], order, converters


class _Constant:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def rows_update(
    model: type[models.Model],
    *,
    pks: Sequence[Any],
    values: Mapping[str, Any],
    keep: Sequence[str] = (),
    add_one: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
    unflushed: bool = False,
    using: str = "default",
) -> int:
    """``UPDATE`` the rows of ``model`` whose primary key is in ``pks``; return how many were updated.

    Sets each of ``values`` (attribute names; each value prepared once by its
    field), but those named in ``keep`` only where they are ``NULL``
    (``COALESCE``), and adds one to each field of ``add_one``; ``where``
    adds ``field = value`` conditions (the status check of a conditional
    update). One statement per as many ids as the bound-parameter limit
    allows, in the caller's transaction (or autocommit); ``auto_now`` fields
    are not touched unless given. Raises ``TypeError`` for an unknown field.
    Never prepared on PostgreSQL: rows found by primary key in tables that
    grow (see :func:`rows_fetch`).

    ``unflushed``: on PostgreSQL, each statement's commit returns before its
    WAL reaches the disk (``synchronous_commit`` off for that statement's own
    transaction, set by ``set_config(..., true)`` in the statement itself:
    one round trip, where ``BEGIN``, ``SET LOCAL``, the ``UPDATE`` and
    ``COMMIT`` were four; https://www.postgresql.org/docs/current/wal-async-commit.html).
    A server crash can lose the last fraction of a second of such updates
    (up to three times ``wal_writer_delay``), so only for records whose loss
    is harmless. Inside a transaction it changes nothing (it would make the
    whole transaction's commit unflushed), nor on SQLite.
    """
    if not pks:
        return 0
    connection = connections[using]
    meta = model._meta
    fields = {f.attname: f for f in meta.concrete_fields}
    unknown = [n for n in [*values, *add_one, *(where or {})] if n not in fields]
    if unknown:
        raise TypeError(f"{model.__name__} has no column(s) {unknown}")
    quote = connection.ops.quote_name
    sets, params = [], []
    for name, value in values.items():
        column = quote(fields[name].column)
        sets.append(f"{column} = COALESCE({column}, %s)" if name in keep else f"{column} = %s")
        params.append(fields[name].get_db_prep_save(value, connection))
    sets += [f"{quote(fields[name].column)} = {quote(fields[name].column)} + 1" for name in add_one]
    conditions, condition_params = [], []
    # On PostgreSQL a check of the rows found by primary key is written so that no index can serve it (IS NOT
    # DISTINCT FROM): with "status = 'queued'" the planner took the status index as its way in (statistics said
    # few rows were queued) and read its many dead entries, 1 ms for four rows found by key in 0.05. (SQLite
    # has the operator only from 3.39, and reads rows by a rowid list first anyway.)
    equals = "IS NOT DISTINCT FROM" if connection.vendor == "postgresql" else "="
    for name, value in (where or {}).items():
        conditions.append(f"{quote(fields[name].column)} {equals} %s")
        condition_params.append(fields[name].get_db_prep_save(value, connection))
    pk = meta.pk
    assert pk is not None
    prefix = source = ""
    if unflushed and connection.vendor == "postgresql" and connection.get_autocommit():
        # Evaluated by the UPDATE's join; local to the statement's own (implicit) transaction, whose commit reads
        # the setting before the transaction's settings are reset.
        prefix = "WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true)) "
        source = " FROM unflushed"
    ids = [pk.get_db_prep_value(value, connection) for value in pks]
    room = max(1, _max_params(connection) - len(params) - len(condition_params))
    updated = 0
    with _bound_cursor(connection) as (cursor, native):
        for start in range(0, len(ids), room):
            part = ids[start : start + room]
            marks = ", ".join(["%s"] * len(part))
            test = " AND ".join([f"{quote(pk.column)} IN ({marks})", *conditions])
            sql = f"{prefix}UPDATE {quote(meta.db_table)} SET {', '.join(sets)}{source} WHERE {test}"  # noqa: S608
            if native:  # never prepared: see rows_fetch
                cursor.execute(_numbered(sql), [*params, *part, *condition_params], prepare=False)
            else:
                cursor.execute(sql, [*params, *part, *condition_params])
            updated += cursor.rowcount
    return updated


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> str:
    """``sql`` with its ``%s`` placeholders as PostgreSQL's ``$1, $2, …``, and ``%%`` as ``%`` (the escaping of
    Django's SQL, whose placeholders are ``%s``)."""
    counter = iter(range(1, sql.count("%s") + 1))
    return _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else f"${next(counter)}", sql)


_PLACEHOLDER = re.compile("%[s%]")
