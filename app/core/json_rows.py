"""Rows for a set-based statement, sent as one `jsonb` parameter instead of an array parameter per column.

asyncpg encodes an array parameter element by element, checking each element against the abstract base classes
`Iterable` and `Sized` (a Python call each), and every array parameter costs ~2.5 µs even when empty: for the
order inbox's write, ~60 arrays a batch, that was ~6 % of the process's CPU. One JSON text parameter, made by
orjson (a compiled encoder: a seventh of the standard library's time on the inbox's batches), costs a fraction of
that, and PostgreSQL reads it back as fast as it unnests arrays.

A table travels as a JSON array of rows, each row an array of its values in column order: `rows_param` makes the
parameter from several named tables, and `rows_from` the `SELECT` that reads one of them back, with each column's
name and type. Values: text, integers (exact, within 64 bits: every integer column is at most a `bigint`), `None`,
datetimes (ISO 8601 with their offset, read back as `timestamptz`) and bytes (hex, read back as `bytea`). A `jsonb`
column's value travels as text holding its JSON: sent as a JSON value instead (`x -> i`), it cost PostgreSQL 5 %
more an order event than parsing that text back, for less than it saved here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson


def _plain(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # it would be read in the session's time zone
            raise ValueError("a naive datetime can't be sent as timestamptz")
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} can't be sent in a rows parameter")


def rows_param(tables: Mapping[str, Sequence[Sequence[Any]]]) -> str:
    """The parameter holding each named table's rows."""
    try:  # datetimes are passed to `_plain`, which refuses a naive one
        return orjson.dumps(tables, default=_plain, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except orjson.JSONEncodeError as exc:  # say what `_plain` said, not that orjson could not go on
        raise exc.__cause__ or exc from None


def rows_from(source: str, columns: str) -> str:
    """A `SELECT` of the rows of the JSON array `source` (a SQL expression, e.g. `$1::jsonb -> 'orders'`), one
    column per position as `columns` names and types them: `"id text, amount bigint, hash bytea"`."""
    selected = []
    for position, column in enumerate(columns.split(",")):
        name, sql_type = column.split()
        value = f"x ->> {position}"
        selected.append(
            f"decode({value}, 'hex') AS {name}" if sql_type == "bytea" else f"({value})::{sql_type} AS {name}"
        )
    return f"SELECT {', '.join(selected)} FROM jsonb_array_elements({source}) AS x"  # noqa: S608 - our SQL only
