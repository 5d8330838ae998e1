"""Students: bulk import (JSON and CSV) all or nothing and idempotent by (school, roster code), reads, status,
lookup and erasure."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import (
    all_students,
    assert_problem,
    create_partner,
    create_school,
    import_students,
    roster_csv,
)
from tests.roster_codes import MARK, roster_code, roster_codes


@pytest.fixture
async def school(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    partner = await create_partner(client, admin)
    return await create_school(client, admin, partner_id=partner["id"])


async def _db(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))


async def _student_rows(database_url: str) -> list[asyncpg.Record]:
    connection = await _db(database_url)
    try:
        return list(await connection.fetch("SELECT * FROM students ORDER BY registration_number"))
    finally:
        await connection.close()


async def _post(
    client: httpx.AsyncClient, admin: dict[str, str], school_id: str, content: bytes, media: str
) -> httpx.Response:
    return await client.post(
        f"/v1/schools/{school_id}/students", content=content, headers=admin | {"content-type": media}
    )


def _codes_in(response: httpx.Response) -> bool:
    return MARK in response.text


# ---- importing ----


@pytest.mark.parametrize("as_csv", [False, True], ids=["json", "csv"])
async def test_an_import_registers_students_in_file_order(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], as_csv: bool
) -> None:
    rows = [(code, grade) for code, grade in zip(roster_codes(5), ["K", "1", "2", "12", "3"], strict=True)]
    response = await import_students(client, admin, school["id"], rows, as_csv=as_csv)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "school_id": school["id"],
        "received": 5,
        "created": 5,
        "updated": 0,
        "unchanged": 0,
    }
    assert not _codes_in(response)  # the answer is counts only

    students = await all_students(client, admin, school["id"])
    assert [(s["roster_code"], s["grade"]) for s in students] == rows
    assert all(s["status"] == "active" and s["school_id"] == school["id"] for s in students)
    assert all(s["id"].startswith("stu_") and s["erased_at"] is None for s in students)
    numbers = [s["registration_number"] for s in students]
    assert numbers == sorted(numbers)


async def test_a_re_import_updates_grades_and_never_duplicates(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    a, b, c, d = roster_codes(4)
    first = await import_students(client, admin, school["id"], [(a, "1"), (b, "2"), (c, "3")])
    assert first.json()["created"] == 3
    ids = {s["roster_code"]: s["id"] for s in await all_students(client, admin, school["id"])}

    # b moves up a grade, c stays, d is new; JSON in, CSV again: the same students either way.
    second = await import_students(client, admin, school["id"], [(b, "3"), (c, "3"), (d, "K")], as_csv=True)
    assert second.status_code == 200, second.text
    assert second.json() == {
        "school_id": school["id"],
        "received": 3,
        "created": 1,
        "updated": 1,
        "unchanged": 1,
    }
    again = await import_students(client, admin, school["id"], [(a, "1"), (b, "3"), (c, "3"), (d, "K")])
    assert again.json() | {"school_id": None} == {
        "school_id": None,
        "received": 4,
        "created": 0,
        "updated": 0,
        "unchanged": 4,
    }
    students = await all_students(client, admin, school["id"])
    assert [(s["roster_code"], s["grade"]) for s in students] == [(a, "1"), (b, "3"), (c, "3"), (d, "K")]
    assert {s["roster_code"]: s["id"] for s in students if s["roster_code"] != d} == ids
    assert len(await _student_rows(database_url)) == 4


async def test_roster_codes_are_read_as_one_spelling(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    # Outer spaces are spreadsheet noise and Unicode has two spellings of "é": the same student each time.
    code = roster_code("café-07")
    decomposed = code.replace("é", "e\u0301")
    assert (await import_students(client, admin, school["id"], [(code, "4")])).json()["created"] == 1
    again = await import_students(client, admin, school["id"], [(f"  {decomposed} ", " 5 ")])
    assert again.json()["updated"] == 1
    [student] = await all_students(client, admin, school["id"])
    assert student["roster_code"] == code and student["grade"] == "5"


async def test_one_code_at_two_schools_is_two_students(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    partner = await create_partner(client, admin, name="Second carrier")
    other = await create_school(client, admin, partner_id=partner["id"])
    code = roster_code()
    for target in (school, other):
        assert (await import_students(client, admin, target["id"], [(code, "2")])).json()["created"] == 1
    rows = await _student_rows(database_url)
    assert len(rows) == 2 and rows[0]["roster_code_hash"] != rows[1]["roster_code_hash"]


@pytest.mark.parametrize("as_csv", [False, True], ids=["json", "csv"])
async def test_ten_thousand_students_in_one_request(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str, as_csv: bool
) -> None:
    grades = ["K", *map(str, range(1, 13))]
    rows = [(code, grades[i % 13]) for i, code in enumerate(roster_codes(10_000))]
    response = await import_students(client, admin, school["id"], rows, as_csv=as_csv)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 10_000
    again = await import_students(
        client, admin, school["id"], [(c, "K" if g != "K" else "1") for c, g in rows], as_csv=as_csv
    )
    assert again.json() == {
        "school_id": school["id"],
        "received": 10_000,
        "created": 0,
        "updated": 10_000,
        "unchanged": 0,
    }
    stored = await _student_rows(database_url)
    assert len(stored) == 10_000 and {r["grade"] for r in stored} == {"K", "1"}
    assert [r["id"] for r in stored][:3] == [
        s["id"]
        for s in (
            await client.get(f"/v1/schools/{school['id']}/students", params={"limit": 3}, headers=admin)
        ).json()["data"]
    ]


async def test_csv_headers_in_any_order_and_case_with_bom_quotes_and_blank_lines(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    a, b = roster_code("A,1"), roster_code('B "2"')
    body = (
        f'\ufeff Grade ,ROSTER_CODE\r\n\r\n3,"{a}"\n"K","{b.replace(chr(34), chr(34) * 2)}"\n\n,\n'.encode()
    )
    response = await _post(client, admin, school["id"], body, "text/csv; charset=UTF-8")
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert [(s["roster_code"], s["grade"]) for s in await all_students(client, admin, school["id"])] == [
        (a, "3"),
        (b, "K"),
    ]


# ---- refusals: all or nothing, by row, never quoting a roster code ----


async def _assert_nothing_changed(database_url: str, before: list[asyncpg.Record]) -> None:
    assert [dict(r) for r in await _student_rows(database_url)] == [dict(r) for r in before]


@pytest.mark.parametrize(
    ("row", "field", "kind"),
    [
        ({"grade": "13"}, "grade", "literal_error"),
        ({"grade": 3}, "grade", "literal_error"),
        ({"grade": None}, "grade", "literal_error"),
        ({"roster_code": ""}, "roster_code", "string_too_short"),
        ({"roster_code": "x" * 65}, "roster_code", "string_too_long"),
        ({"roster_code": "tab\there"}, "roster_code", "string_pattern_mismatch"),
        ({"roster_code": 1007}, "roster_code", "string_type"),
        ({"name": "Asha"}, "name", "extra_forbidden"),
        ({"birth_date": "2015-04-01"}, "birth_date", "extra_forbidden"),
        ({"photo": "https://example.org/a.jpg"}, "photo", "extra_forbidden"),
    ],
)
async def test_a_bad_json_row_refuses_the_whole_import_naming_row_and_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    school: dict[str, Any],
    database_url: str,
    row: dict[str, Any],
    field: str,
    kind: str,
) -> None:
    known = roster_code()
    await import_students(client, admin, school["id"], [(known, "1")])
    before = await _student_rows(database_url)
    students = [{"roster_code": known, "grade": "2"}, {"roster_code": roster_code(), "grade": "1"}]
    students.append({"roster_code": roster_code(), "grade": "4"} | row)
    response = await client.post(
        f"/v1/schools/{school['id']}/students", json={"students": students}, headers=admin
    )
    body = assert_problem(response, 422, "invalid-roster")
    assert body["rows"] == [3] and body["error_count"] == 1
    [error] = body["errors"]
    assert error["row"] == 3 and error["loc"] == ["body", "students", 2, field] and error["type"] == kind
    assert body["detail"].startswith(f"row 3: {field}: ") and "Nothing was imported" in body["detail"]
    if kind == "extra_forbidden":
        assert "no names, birth dates, photos" in error["msg"]
    assert not _codes_in(response)
    await _assert_nothing_changed(database_url, before)  # not even the valid grade change of row 1


async def test_every_bad_row_is_listed_and_duplicates_point_at_the_first(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    a, b = roster_codes(2)
    rows = [(a, "1"), (b, "2"), (a, "3"), (roster_code(), "X"), (b, "2")]
    for as_csv in (False, True):
        response = await import_students(client, admin, school["id"], rows, as_csv=as_csv)
        body = assert_problem(response, 422, "invalid-roster")
        assert not _codes_in(response)
        if as_csv:
            # Only the bad grade is found first; duplicates are checked once every row reads well.
            assert body["rows"] == [4] and body["errors"][0]["line"] == 5
        else:
            assert body["rows"] == [4]
    ok_rows = [(a, "1"), (b, "2"), (a, "3"), (b, "2")]
    for as_csv in (False, True):
        body = assert_problem(
            await import_students(client, admin, school["id"], ok_rows, as_csv=as_csv), 422, "invalid-roster"
        )
        assert body["rows"] == [3, 4] and body["error_count"] == 2
        assert [e["msg"] for e in body["errors"]] == [
            "repeats the roster code of row 1; each student once per import",
            "repeats the roster code of row 2; each student once per import",
        ]
    assert await _student_rows(database_url) == []


async def test_many_bad_rows_are_counted_and_the_list_is_bounded(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    body = {"students": [{"roster_code": code, "grade": "1", "name": "x"} for code in roster_codes(500)]}
    response = await client.post(f"/v1/schools/{school['id']}/students", json=body, headers=admin)
    problem = assert_problem(response, 422, "invalid-roster")
    assert (
        problem["error_count"] == 500
        and len(problem["errors"]) == 100
        and problem["rows"] == list(range(1, 101))
    )


@pytest.mark.parametrize(
    ("content", "loc", "kind"),
    [
        (b"roster_code,grade,name\r\nrc~x1,1,Asha\r\n", ["body", "header", "name"], "extra_forbidden"),
        (
            b"roster_code,grade,Birth_Date,photo\r\nrc~x1,1,2015-01-01,p.jpg\r\n",
            ["body", "header", "Birth_Date"],
            "extra_forbidden",
        ),
        (b"roster_code\r\nrc~x1\r\n", ["body", "header", "grade"], "missing"),
        (b"roster_code,grade,grade\r\nrc~x1,1,1\r\n", ["body", "header", "grade"], "csv_header"),
        (b"rc~x1,1\r\nrc~x2,2\r\n", ["body", "line", 1], "csv_header"),
        (b"roster_code,grade\r\nrc~x1,1,extra\r\n", ["body", "line", 2, "*"], "csv_field_count"),
        (b'roster_code,grade\r\n"rc~x1,1\r\n', ["body", "line", 2], "csv_syntax"),
        (b'roster_code,grade\r\n"rc~x"1,1\r\n', ["body", "line", 2], "csv_syntax"),
        (b"roster_code,grade\r\nrc~\xff1,1\r\n", ["body"], "csv_encoding"),
        (b"", ["body"], "csv_empty"),
        (b"\r\n\r\n", ["body"], "csv_empty"),
        (b"roster_code,grade\r\n", ["body"], "too_short"),
        (b"roster_code,grade\r\n,3\r\n", ["body", "line", 2, "roster_code"], "string_too_short"),
    ],
)
async def test_bad_csv_is_a_422_that_says_where_without_quoting_codes(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    school: dict[str, Any],
    database_url: str,
    content: bytes,
    loc: list[Any],
    kind: str,
) -> None:
    response = await _post(client, admin, school["id"], content, "text/csv")
    body = assert_problem(response, 422, "invalid-roster")
    assert any(e["loc"] == loc and e["type"] == kind for e in body["errors"]), body
    assert not _codes_in(response)
    assert await _student_rows(database_url) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"students": []}, ["body", "students"]),
        ({}, ["body", "students"]),
        ({"students": [], "school": "x"}, ["body", "school"]),
        ([], ["body"]),
    ],
)
async def test_bad_json_documents_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], body: Any, loc: list[Any]
) -> None:
    response = await client.post(f"/v1/schools/{school['id']}/students", json=body, headers=admin)
    assert loc in [e["loc"] for e in assert_problem(response, 422, "invalid-roster")["errors"]]
    malformed = await _post(client, admin, school["id"], b'{"students": [', "application/json")
    assert assert_problem(malformed, 422, "invalid-roster")["errors"][0]["type"] == "json_invalid"


async def test_imports_are_bounded_in_rows_and_bytes(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    too_many = [(code, "1") for code in roster_codes(50_001)]
    for as_csv in (False, True):
        response = await import_students(client, admin, school["id"], too_many, as_csv=as_csv)
        body = assert_problem(response, 422, "invalid-roster")
        assert body["errors"][0]["type"] == "too_many_students" and "50000" in body["detail"]
    huge = await client.post(
        f"/v1/schools/{school['id']}/students",
        content=b"roster_code,grade\n" + b"x" * (16 * 1024 * 1024),
        headers=admin | {"content-type": "text/csv"},
    )
    assert_problem(huge, 413, "payload-too-large")
    # Within the byte limit but not the shape: refused before a single object is built.
    many = b'{"students":[' + b",".join([b"[]"] * 200_000) + b"]}"
    assert_problem(
        await _post(client, admin, school["id"], many, "application/json"), 413, "payload-too-large"
    )
    deep = b'{"students":[' + b"[" * 40 + b"]" * 40 + b"]}"
    assert_problem(await _post(client, admin, school["id"], deep, "application/json"), 422, "invalid-request")
    assert await _student_rows(database_url) == []


async def test_only_json_and_utf8_csv_are_accepted(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    csv_body = roster_csv([(roster_code(), "1")])
    for media in ("text/plain", "application/xml", "text/csv; charset=latin-1", ""):
        assert_problem(
            await _post(client, admin, school["id"], csv_body, media), 415, "unsupported-media-type"
        )


async def test_an_unknown_school_is_404_whatever_the_body(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for content, media in ((b"garbage", "text/csv"), (b"{}", "application/json"), (b"x", "text/plain")):
        assert_problem(await _post(client, admin, "sch_missing", content, media), 404, "not-found")
    assert_problem(await client.get("/v1/schools/sch_missing/students", headers=admin), 404, "not-found")


async def test_an_import_honours_idempotency_keys(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    rows = [(code, "2") for code in roster_codes(3)]
    body = {"students": [{"roster_code": c, "grade": g} for c, g in rows]}
    headers = admin | {"Idempotency-Key": "roster-2026"}
    first = await client.post(f"/v1/schools/{school['id']}/students", json=body, headers=headers)
    again = await client.post(f"/v1/schools/{school['id']}/students", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert (
        again.json()
        == first.json()
        == {"school_id": school["id"], "received": 3, "created": 3, "updated": 0, "unchanged": 0}
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        f"/v1/schools/{school['id']}/students",
        content=roster_csv(rows),
        headers=headers | {"content-type": "text/csv"},
    )
    assert_problem(other, 409, "idempotency-key-reused")


async def test_overlapping_imports_at_once_register_each_student_once(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    codes = roster_codes(300)
    batches = [[(c, "1") for c in codes[i : i + 200]] for i in (0, 50, 100)] + [
        [(c, "2") for c in reversed(codes)]
    ]
    responses = await asyncio.gather(
        *(
            import_students(client, admin, school["id"], batch, as_csv=i % 2 == 1)
            for i, batch in enumerate(batches)
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sum(r.json()["created"] for r in responses) == 300
    rows = await _student_rows(database_url)
    assert len(rows) == 300 and len({r["roster_code_hash"] for r in rows}) == 300


# ---- reading, status, lookup ----


async def test_lookup_by_roster_code_finds_the_student_and_misses_say_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    code, missing = roster_code(), roster_code()
    await import_students(client, admin, school["id"], [(code, "6")])
    found = await client.post(
        f"/v1/schools/{school['id']}/students/lookup", json={"roster_code": f" {code}"}, headers=admin
    )
    assert found.status_code == 200 and found.json()["roster_code"] == code and found.json()["grade"] == "6"
    miss = await client.post(
        f"/v1/schools/{school['id']}/students/lookup", json={"roster_code": missing}, headers=admin
    )
    assert_problem(miss, 404, "not-found")
    assert not _codes_in(miss)
    elsewhere = await client.post(
        "/v1/schools/sch_other/students/lookup", json={"roster_code": code}, headers=admin
    )
    assert_problem(elsewhere, 404, "not-found")
    bad = await client.post(
        f"/v1/schools/{school['id']}/students/lookup", json={"roster_code": "a\nb"}, headers=admin
    )
    assert_problem(bad, 422, "invalid-request")


async def test_students_become_inactive_by_patch_and_imports_leave_status_alone(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any]
) -> None:
    a, b = roster_codes(2)
    await import_students(client, admin, school["id"], [(a, "1"), (b, "1")])
    student = (await all_students(client, admin, school["id"]))[0]
    response = await client.patch(f"/v1/students/{student['id']}", json={"active": False}, headers=admin)
    assert response.status_code == 200 and response.json()["status"] == "inactive"
    assert response.json()["roster_code"] == a

    again = await import_students(client, admin, school["id"], [(a, "1"), (b, "1")])
    assert again.json()["unchanged"] == 2
    assert [s["roster_code"] for s in await all_students(client, admin, school["id"], status="inactive")] == [
        a
    ]
    assert [s["roster_code"] for s in await all_students(client, admin, school["id"], status="active")] == [b]

    back = await client.patch(
        f"/v1/students/{student['id']}", json={"active": True, "grade": "2"}, headers=admin
    )
    assert back.json()["status"] == "active" and back.json()["grade"] == "2"
    assert [s["roster_code"] for s in await all_students(client, admin, school["id"], grade="2")] == [a]
    read = await client.get(f"/v1/students/{student['id']}", headers=admin)
    assert read.status_code == 200 and read.json() == back.json()

    for patch, field in (
        ({"active": "no"}, "active"),
        ({"active": None}, "active"),
        ({"grade": "13"}, "grade"),
        ({"roster_code": "x"}, "roster_code"),
    ):
        refused = await client.patch(f"/v1/students/{student['id']}", json=patch, headers=admin)
        assert ["body", field] in [
            e["loc"][:2] for e in assert_problem(refused, 422, "invalid-request")["errors"]
        ]
    assert_problem(
        await client.patch("/v1/students/stu_nope", json={"active": False}, headers=admin), 404, "not-found"
    )
    assert_problem(await client.get("/v1/students/stu_nope", headers=admin), 404, "not-found")


# ---- erasure ----


async def test_erasure_leaves_a_tombstone_without_the_roster_code(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    code, kept = roster_codes(2)
    await import_students(client, admin, school["id"], [(code, "4"), (kept, "5")])
    student, other = await all_students(client, admin, school["id"])
    erased = await client.delete(f"/v1/students/{student['id']}", headers=admin)
    assert erased.status_code == 200
    tombstone = erased.json()
    assert tombstone["roster_code"] is None and tombstone["status"] == "erased" and tombstone["erased_at"]
    assert {k: tombstone[k] for k in ("id", "school_id", "grade", "registration_number", "created_at")} == {
        k: student[k] for k in ("id", "school_id", "grade", "registration_number", "created_at")
    }
    again = await client.delete(f"/v1/students/{student['id']}", headers=admin)
    assert again.status_code == 200 and again.json() == tombstone
    assert (await client.get(f"/v1/students/{student['id']}", headers=admin)).json() == tombstone

    rows = {r["id"]: r for r in await _student_rows(database_url)}
    assert (
        rows[student["id"]]["roster_code_hash"] is None
        and rows[student["id"]]["roster_code_encrypted"] is None
    )
    assert not rows[student["id"]]["active"]
    assert rows[other["id"]]["roster_code_hash"] is not None

    # Nothing can find the erased student by the code again, nor change it.
    lookup = await client.post(
        f"/v1/schools/{school['id']}/students/lookup", json={"roster_code": code}, headers=admin
    )
    assert_problem(lookup, 404, "not-found")
    assert_problem(
        await client.patch(f"/v1/students/{student['id']}", json={"active": True}, headers=admin),
        409,
        "student-erased",
    )
    # The same code imported again is someone new to us: nothing links them.
    reimport = await import_students(client, admin, school["id"], [(code, "4"), (kept, "5")])
    assert reimport.json() | {"school_id": None} == {
        "school_id": None,
        "received": 2,
        "created": 1,
        "updated": 0,
        "unchanged": 1,
    }
    listed = await all_students(client, admin, school["id"])
    assert [s["status"] for s in listed] == ["erased", "active", "active"] and listed[2][
        "roster_code"
    ] == code
    assert listed[2]["id"] != student["id"]
    assert [s["id"] for s in await all_students(client, admin, school["id"], status="erased")] == [
        student["id"]
    ]
    assert_problem(await client.delete("/v1/students/stu_nope", headers=admin), 404, "not-found")


async def test_the_database_refuses_a_half_erased_student(
    client: httpx.AsyncClient, admin: dict[str, str], school: dict[str, Any], database_url: str
) -> None:
    await import_students(client, admin, school["id"], [(roster_code(), "4")])
    connection = await _db(database_url)
    try:
        for statement in (
            "UPDATE students SET erased_at = now(), active = false",  # codes kept
            "UPDATE students SET roster_code_hash = NULL",  # no tombstone
            "UPDATE students SET roster_code_hash = NULL, roster_code_encrypted = NULL, erased_at = now()",  # active
            "UPDATE students SET grade = 'PK'",
        ):
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(statement)
    finally:
        await connection.close()
    assert json.dumps([r["status"] for r in await all_students(client, admin, school["id"])]) == '["active"]'
