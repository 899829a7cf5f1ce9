"""Bring an existing database's tables up to the models: add the columns they lack.

The store has no migration tool (``create_all`` creates missing tables only), so a database
made by an older gateway lacks the columns added since (``calls.node_id``,
``calls.recording_status``, ``api_keys.tenant`` …) and every query naming them fails. At
start-up :func:`add_missing_columns` adds each missing column with ``ALTER TABLE … ADD
COLUMN``, which SQLite and PostgreSQL both support for a column that is nullable or has a
constant default (existing rows get the default), and creates the indexes they lack. Nothing
is dropped, renamed or retyped.
"""

from __future__ import annotations

import logging

from sqlalchemy import Column, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from gateway.store.models import Base

__all__ = ["add_missing_columns"]

log = logging.getLogger("gateway.store")


def add_missing_columns(engine: Engine) -> list[str]:
    """Add to each existing table the model columns it lacks. Idempotent.

    Indexes the models declare on those tables are created too when missing.

    Returns:
        The columns and indexes added, as ``table.name``.

    Raises:
        ValueError: a missing column is ``NOT NULL`` without a constant default (existing
            rows would have no value for it: such a change needs a real migration).
        sqlalchemy.exc.SQLAlchemyError: the ``ALTER TABLE`` failed.
    """
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    added: list[str] = []
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in present:
                continue  # create_all makes it whole
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                conn.execute(text(_add_column_sql(engine, table.name, column)))
                added.append(f"{table.name}.{column.name}")
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn)
                    added.append(f"{table.name}.{index.name}")
    if added:
        log.warning("database upgraded: added columns %s", ", ".join(added))
    return added


def _add_column_sql(engine: Engine, table: str, column: Column) -> str:
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote
    sql = f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {column.type.compile(dialect=dialect)}"
    default = column.default
    if isinstance(default, ScalarElementColumnDefault) and isinstance(default.arg, (str, int, float, bool)):
        sql += f" DEFAULT {_literal(default.arg, dialect.name)}"
        if not column.nullable:
            sql += " NOT NULL"
    elif not column.nullable:
        raise ValueError(f"cannot add NOT NULL column {table}.{column.name} without a constant default")
    return sql


def _literal(value: str | int | float | bool, dialect: str) -> str:
    if isinstance(value, bool):
        return ("1" if value else "0") if dialect == "sqlite" else ("TRUE" if value else "FALSE")
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"
