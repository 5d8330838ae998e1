"""Random sequences of imports (JSON and CSV, good and bad), status changes and erasures against a model of
what each school's roster must be.

After every step the API's list of each school's students equals the model: the live students by roster code
with their grade and status, in registration order, and the erased ones as tombstones that kept id, grade and
place. Every import's counts equal the model's."""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.helpers import all_students, create_partner, create_school, import_students
from tests.machine import ServiceLoop
from tests.postgres import TestServer
from tests.roster_codes import MARK, roster_code

WORLD: ServiceLoop | None = None
_examples = itertools.count()
GRADES = ["K", *map(str, range(1, 13))]
POOL = 10

# Printable text in any script: no control characters or lone surrogates (never valid in a roster code).
suffixes = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=16)


def spelling(code: str) -> str:
    """How the service reads a roster code: NFC, outer whitespace dropped."""
    return unicodedata.normalize("NFC", code).strip()


@dataclass
class ModelStudent:
    code: str | None  # None once erased
    grade: str
    active: bool = True
    id: str | None = None


class RosterLifecycle(RuleBasedStateMachine):
    live = Bundle("live")

    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.tag = next(_examples)
        self.students: list[list[ModelStudent]] = [[], []]  # per school, in registration order

    @initialize(pool=st.lists(suffixes, min_size=POOL, max_size=POOL, unique_by=lambda s: spelling(MARK + s)))
    def set_up_schools(self, pool: list[str]) -> None:
        world = self.world
        partner = world.run(create_partner(world.client, world.admin, name=f"Carrier {self.tag}"))
        self.schools = [
            world.run(create_school(world.client, world.admin, partner_id=partner["id"])) for _ in range(2)
        ]
        # Codes as a school might type them; the model knows each by the service's spelling.
        self.pool = [roster_code(suffix) for suffix in pool]

    def _call(self, coroutine: Any) -> httpx.Response:
        response: httpx.Response = self.world.run(coroutine)
        assert response.status_code < 500, response.text
        return response

    def _live(self, school: int) -> dict[str, ModelStudent]:
        return {s.code: s for s in self.students[school] if s.code is not None}

    @rule(
        school=st.integers(0, 1),
        picks=st.lists(
            st.tuples(st.integers(0, POOL - 1), st.sampled_from(GRADES)),
            min_size=1,
            max_size=6,
            unique_by=lambda p: p[0],
        ),
        as_csv=st.booleans(),
    )
    def import_rows(self, school: int, picks: list[tuple[int, str]], as_csv: bool) -> None:
        rows = [(self.pool[i], grade) for i, grade in picks]
        live = self._live(school)
        expected = {"created": 0, "updated": 0, "unchanged": 0}
        for code, grade in rows:
            known = live.get(spelling(code))
            if known is None:
                expected["created"] += 1
                self.students[school].append(ModelStudent(spelling(code), grade))
            elif known.grade != grade:
                expected["updated"] += 1
                known.grade = grade
            else:
                expected["unchanged"] += 1
        response = self._call(
            import_students(
                self.world.client, self.world.admin, self.schools[school]["id"], rows, as_csv=as_csv
            )
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"school_id": self.schools[school]["id"], "received": len(rows), **expected}

    @rule(
        school=st.integers(0, 1),
        picks=st.lists(st.integers(0, POOL - 1), min_size=1, max_size=5, unique=True),
        bad=st.sampled_from(["grade", "long", "control", "duplicate", "field"]),
        at=st.integers(0, 5),
        as_csv=st.booleans(),
    )
    def import_with_a_bad_row(self, school: int, picks: list[int], bad: str, at: int, as_csv: bool) -> None:
        rows: list[Any] = [(self.pool[i], "1") for i in picks]
        at = min(at, len(rows))
        code = self.pool[picks[0]]
        if bad == "field":
            if as_csv:
                return  # a CSV has no per-row fields; unknown columns are refused whole (tested elsewhere)
            body = {"students": [{"roster_code": c, "grade": g} for c, g in rows]}
            body["students"].insert(
                at, {"roster_code": roster_code(), "grade": "2", "birth_date": "2016-01-01"}
            )
            response = self._call(
                self.world.client.post(
                    f"/v1/schools/{self.schools[school]['id']}/students", json=body, headers=self.world.admin
                )
            )
        else:
            bad_row = {
                "grade": (roster_code(), "13"),
                "long": (code + "x" * 64, "1"),
                "control": (f"{code}\u0007x", "1"),
                "duplicate": (code, "2"),
            }[bad]
            if bad == "duplicate":
                at = max(at, 1)  # after the first sight of the code
            rows.insert(at, bad_row)
            response = self._call(
                import_students(
                    self.world.client, self.world.admin, self.schools[school]["id"], rows, as_csv=as_csv
                )
            )
        assert response.status_code == 422, response.text
        assert response.json()["rows"] == [at + 1]
        assert MARK not in response.text

    @rule(target=live, school=st.integers(0, 1), pick=st.integers(0, POOL - 1))
    def find(self, school: int, pick: int) -> Any:
        code = spelling(self.pool[pick])
        response = self._call(
            self.world.client.post(
                f"/v1/schools/{self.schools[school]['id']}/students/lookup",
                json={"roster_code": code},
                headers=self.world.admin,
            )
        )
        known = self._live(school).get(code)
        if known is None:
            assert response.status_code == 404
            return (school, None)
        assert response.status_code == 200 and response.json()["grade"] == known.grade
        known.id = response.json()["id"]
        return (school, known.id)

    def _model(self, school: int, student_id: str | None) -> ModelStudent | None:
        return next((s for s in self.students[school] if student_id is not None and s.id == student_id), None)

    @rule(found=live, active=st.booleans())
    def set_status(self, found: tuple[int, str | None], active: bool) -> None:
        school, student_id = found
        student = self._model(school, student_id)
        if student is None or student.code is None:
            return
        response = self._call(
            self.world.client.patch(
                f"/v1/students/{student_id}", json={"active": active}, headers=self.world.admin
            )
        )
        assert response.status_code == 200
        student.active = active

    @rule(found=consumes(live))
    def erase(self, found: tuple[int, str | None]) -> None:
        school, student_id = found
        student = self._model(school, student_id)
        if student is None:
            return
        response = self._call(
            self.world.client.delete(f"/v1/students/{student_id}", headers=self.world.admin)
        )
        assert response.status_code == 200 and response.json()["roster_code"] is None
        student.code, student.active = None, False

    @invariant()
    def each_roster_matches_the_model(self) -> None:
        if not hasattr(self, "schools"):
            return
        for school, expected in zip(self.schools, self.students, strict=True):
            listed = self.world.run(all_students(self.world.client, self.world.admin, school["id"]))
            assert [(s["roster_code"], s["grade"]) for s in listed] == [(m.code, m.grade) for m in expected]
            statuses = [
                "erased" if m.code is None else "active" if m.active else "inactive" for m in expected
            ]
            assert [s["status"] for s in listed] == statuses
            for student, model in zip(listed, expected, strict=True):
                if model.id is not None:
                    assert student["id"] == model.id


def test_random_roster_histories_match_the_model(
    pg_server: TestServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global WORLD
    request.node.uses_postgres = True
    with ServiceLoop(pg_server, tmp_path, "roster_machine") as service:
        WORLD = service
        try:
            run_state_machine_as_test(
                RosterLifecycle,
                settings=settings(
                    max_examples=25,
                    stateful_step_count=20,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            WORLD = None
