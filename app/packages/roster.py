"""Reading a student import (JSON or CSV) into validated rows, all or nothing.

Every problem is reported by its row (the student's position in the import, from 1; for CSV also the line in
the file) and never quotes a roster code: an error message may end up anywhere, a roster code may not."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.core.errors import InvalidRequest
from app.core.json_body import JsonLimits, check_shape
from app.packages.schemas import (
    MAX_ROSTER_CODE_LENGTH,
    MAX_STUDENTS_PER_IMPORT,
    StudentImportIn,
    StudentRowIn,
)

MAX_ERRORS_SHOWN = 100
COLUMNS = ("roster_code", "grade")

_NOT_A_STUDENT_FIELD = (
    "not accepted: a student is only a roster_code and a grade (no names, birth dates, photos or other data)"
)
# A full import is 3 values a student (the row, its code, its grade): room for a few too many students, so
# those get the row-count message below rather than a bare 413.
ROSTER_LIMITS = JsonLimits(depth=32, values=4 * MAX_STUDENTS_PER_IMPORT)
_ROSTER_CODE_RULE = f"must be 1 to {MAX_ROSTER_CODE_LENGTH} characters, without control characters"


@dataclass(frozen=True, slots=True)
class RosterRow:
    roster_code: str
    grade: str


class InvalidRoster(InvalidRequest):
    kind, title = "invalid-roster", "The student import is invalid; nothing was imported"


def _message(error: Any) -> str:
    field = error["loc"][-1] if error["loc"] else None
    if error["type"] == "extra_forbidden":
        return _NOT_A_STUDENT_FIELD
    if field == "roster_code" and error["type"] in (
        "string_pattern_mismatch",
        "string_too_long",
        "string_too_short",
    ):
        return _ROSTER_CODE_RULE
    return str(error["msg"])


def _refuse(errors: list[dict[str, Any]]) -> InvalidRoster:
    errors.sort(key=lambda e: (e.get("row") or 0, [str(part) for part in e["loc"]]))
    rows = sorted({e["row"] for e in errors if e.get("row")})
    first = errors[0]
    where = f"row {first['row']}: " if first.get("row") else ""
    field = first["loc"][-1] if len(first["loc"]) > 1 and isinstance(first["loc"][-1], str) else None
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    detail = f"{where}{field + ': ' if field else ''}{first['msg']}{more}. Nothing was imported."
    return InvalidRoster(
        detail,
        errors=errors[:MAX_ERRORS_SHOWN],
        error_count=len(errors),
        rows=rows[:MAX_ERRORS_SHOWN],
    )


def _too_many(count_text: str) -> InvalidRoster:
    return _refuse(
        [
            {
                "loc": ["body"],
                "msg": f"at most {MAX_STUDENTS_PER_IMPORT} students per request ({count_text}); split the import",
                "type": "too_many_students",
            }
        ]
    )


def _duplicates(rows: list[RosterRow], locate: Any) -> list[dict[str, Any]]:
    first_row: dict[str, int] = {}
    errors = []
    for index, row in enumerate(rows):
        earlier = first_row.setdefault(row.roster_code, index)
        if earlier != index:
            errors.append(
                {
                    **locate(index, "roster_code"),
                    "msg": f"repeats the roster code of row {earlier + 1}; each student once per import",
                    "type": "duplicate_roster_code",
                }
            )
    return errors


def read_json(body: bytes) -> list[RosterRow]:
    """`{"students": [{"roster_code", "grade"}, ...]}`."""
    check_shape(body, ROSTER_LIMITS)
    try:
        parsed = StudentImportIn.model_validate_json(body)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = list(error["loc"])
            entry: dict[str, Any] = {"loc": ["body", *loc], "msg": _message(error), "type": error["type"]}
            if len(loc) >= 2 and loc[0] == "students" and isinstance(loc[1], int):
                entry["row"] = loc[1] + 1
            if loc == ["students"] and error["type"] == "too_long":
                raise _too_many("the list is longer") from None
            errors.append(entry)
        raise _refuse(errors) from None
    rows = [RosterRow(s.roster_code, s.grade) for s in parsed.students]

    def locate(index: int, field: str) -> dict[str, Any]:
        return {"loc": ["body", "students", index, field], "row": index + 1}

    duplicates = _duplicates(rows, locate)
    if duplicates:
        raise _refuse(duplicates)
    return rows


_ROWS = TypeAdapter(list[StudentRowIn])


def read_csv(body: bytes) -> list[RosterRow]:
    """A header line naming the columns `roster_code` and `grade` (any order, any case), then one student a
    line. UTF-8 (a byte-order mark is fine), RFC 4180 quoting; blank lines are skipped."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refuse([{"loc": ["body"], "msg": "CSV must be UTF-8 text", "type": "csv_encoding"}]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    header_line = 0
    try:
        for record in reader:
            if not record or all(not field.strip() for field in record):
                continue
            if header is None:
                header, header_line = record, reader.line_num
                continue
            if len(records) == MAX_STUDENTS_PER_IMPORT:
                raise _too_many("the file has more rows")
            records.append(record)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise _refuse(
            [{"loc": ["body", "line", reader.line_num], "msg": f"malformed CSV: {exc}", "type": "csv_syntax"}]
        ) from None
    if header is None:
        raise _refuse(
            [{"loc": ["body"], "msg": "empty: expected the header roster_code,grade", "type": "csv_empty"}]
        )
    columns = _read_header(header, header_line)
    if not records:
        raise _refuse([{"loc": ["body"], "msg": "no students after the header", "type": "too_short"}])

    def locate(index: int, field: str) -> dict[str, Any]:
        return {"loc": ["body", "line", lines[index], field], "row": index + 1, "line": lines[index]}

    errors: list[dict[str, Any]] = []
    candidates: list[dict[str, str]] = []
    for index, record in enumerate(records):
        if len(record) != len(columns):
            errors.append(
                {
                    **locate(index, "*"),
                    "msg": f"expected {len(columns)} fields like the header, found {len(record)}",
                    "type": "csv_field_count",
                }
            )
            candidates.append({"roster_code": "-", "grade": "K"})  # keeps indexes aligned; never stored
            continue
        candidates.append(dict(zip(columns, record, strict=True)))
    try:
        parsed = _ROWS.validate_python(candidates)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            position, field = error["loc"][0], error["loc"][-1]
            assert isinstance(position, int)
            errors.append({**locate(position, str(field)), "msg": _message(error), "type": error["type"]})
    if errors:
        raise _refuse(errors)
    rows = [RosterRow(s.roster_code, s.grade) for s in parsed]
    duplicates = _duplicates(rows, locate)
    if duplicates:
        raise _refuse(duplicates)
    return rows


def _read_header(header: list[str], line: int) -> list[str]:
    columns = [name.strip().lower() for name in header]
    known = [name for name in columns if name in COLUMNS]
    if not known:
        # Not a header at all (likely a first student): say so without repeating what it holds.
        raise _refuse(
            [
                {
                    "loc": ["body", "line", line],
                    "msg": "the first line must be the header roster_code,grade",
                    "type": "csv_header",
                }
            ]
        )
    errors: list[dict[str, Any]] = []
    for original, name in zip(header, columns, strict=True):
        if name not in COLUMNS:
            label = original.strip()[:64] or "(blank)"
            errors.append(
                {"loc": ["body", "header", label], "msg": _NOT_A_STUDENT_FIELD, "type": "extra_forbidden"}
            )
    for name in COLUMNS:
        count = columns.count(name)
        if count == 0:
            errors.append({"loc": ["body", "header", name], "msg": "column missing", "type": "missing"})
        elif count > 1:
            errors.append({"loc": ["body", "header", name], "msg": "column repeated", "type": "csv_header"})
    if errors:
        raise _refuse(errors)
    return columns
