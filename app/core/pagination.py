"""Cursor pagination: `{"data": [...], "next_cursor": "..."}` over rows ordered by their time-sortable id.

The cursor is the id of the last row served; any well-formed cursor is a valid position, so a page request
never fails on a cursor that merely points nowhere (it returns the rows after that position)."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from app.core.patterns import pattern

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


class PageRequest(BaseModel):
    limit: int
    after: str | None


def _page_request(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=pattern(
                r"^[A-Za-z0-9_-]{1,400}$", "must be the next_cursor of the previous page, as it was"
            ),
            description="`next_cursor` of the previous page",
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, after=cursor)


PageParams = Annotated[PageRequest, Depends(_page_request)]


def page_of(rows: list[T], ids: list[str], limit: int) -> Page[T]:
    """Rows fetched with `limit + 1`: the extra one only tells whether a next page exists."""
    if len(rows) > limit:
        return Page(data=rows[:limit], next_cursor=ids[limit - 1])
    return Page(data=rows, next_cursor=None)
