"""Student import benchmark: 10,000 (and 50,000) rows in one request, JSON and CSV, end to end.

Run from the repository root:

    .venv/bin/python bench/students.py [--rows 10000] [--repeat 3] [--big 50000]

It makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres),
runs the service as an operator would (`g4g migrate`, `g4g create-api-key`, `g4g serve`, one worker), registers
a logistics partner and schools through the API, then times single import requests from a client in this
process (body built before the clock starts; the time is request sent → answer read):

- `new`: every row a new student (a fresh school each repetition);
- `unchanged`: the same rows again;
- `regrade`: the same rows, every grade changed;
for JSON and for CSV, then one request of `--big` new rows. It checks every answer's counts and the number of
students stored, and prints where the time goes in-process for one 10,000-row body (parsing and validation,
encryption and keyed hashing), so the rest is the database statement and HTTP.

Exit status 1 if a request fails or a count is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from served import served

ROOT = Path(__file__).resolve().parent.parent
GRADES = ["K", *map(str, range(1, 13))]


def _rows(count: int, tag: str, shift: int = 0) -> list[tuple[str, str]]:
    return [(f"{tag}-{i:06d}", GRADES[(i + shift) % len(GRADES)]) for i in range(count)]


def _json_body(rows: list[tuple[str, str]]) -> bytes:
    return json.dumps({"students": [{"roster_code": c, "grade": g} for c, g in rows]}).encode()


def _csv_body(rows: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["roster_code", "grade"])
    writer.writerows(rows)
    return out.getvalue().encode()


def _in_process_costs(rows: list[tuple[str, str]]) -> dict[str, float]:
    """Where one import's CPU goes before the database: parsing + validation, then encryption + hashing."""
    sys.path.insert(0, str(ROOT))
    from cryptography.fernet import Fernet, MultiFernet

    from app.core.secrets import encrypt
    from app.packages import roster
    from app.packages.service import roster_code_hash

    costs: dict[str, float] = {}
    body = _json_body(rows)
    started = time.perf_counter()
    parsed = roster.read_json(body)
    costs["parse JSON"] = time.perf_counter() - started
    body = _csv_body(rows)
    started = time.perf_counter()
    roster.read_csv(body)
    costs["parse CSV"] = time.perf_counter() - started
    cipher, key = MultiFernet([Fernet(Fernet.generate_key())]), secrets.token_bytes(32)
    started = time.perf_counter()
    for row in parsed:
        encrypt(cipher, row.roster_code)
    costs["encrypt"] = time.perf_counter() - started
    started = time.perf_counter()
    for row in parsed:
        roster_code_hash(key, "sch_bench", row.roster_code)
    costs["keyed hash"] = time.perf_counter() - started
    return costs


async def _count(url: str, school_id: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM students WHERE school_id = $1", school_id))
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", type=int, default=50_000)
    args = parser.parse_args()

    with served("students") as service:
        failed = _run(service.http, service.database_url, args)
    costs = _in_process_costs(_rows(args.rows, "COST"))
    print(
        f"\nin-process, one {args.rows}-row body: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in costs.items())
    )
    return 1 if failed else 0


def _run(http: httpx.Client, url: str, args: argparse.Namespace) -> bool:
    partner = http.post("/v1/logistics-partners", json={"name": "Bench freight"}).json()

    def new_school(n: int) -> str:
        body = {
            "name": f"Bench school {n}",
            "country": "NP",
            "region": "Bagmati",
            "logistics_partner_id": partner["id"],
            "teacher_contact": {"name": "Teacher", "email": "teacher@example.org"},
        }
        response = http.post("/v1/schools", json=body)
        response.raise_for_status()
        return str(response.json()["id"])

    failed = False
    print(f"{'format':<6} {'phase':<10} {'rows':>7}  {'median':>8}  {'rows/s':>8}  runs (s)")
    schools = 0
    for fmt, build, media in (("json", _json_body, "application/json"), ("csv", _csv_body, "text/csv")):
        timings: dict[str, list[float]] = {"new": [], "unchanged": [], "regrade": []}
        for repetition in range(args.repeat):
            schools += 1
            school = new_school(schools)
            rows = _rows(args.rows, f"NP{repetition}")
            phases = [
                ("new", build(rows), {"created": args.rows}),
                ("unchanged", build(rows), {"unchanged": args.rows}),
                ("regrade", build(_rows(args.rows, f"NP{repetition}", shift=1)), {"updated": args.rows}),
            ]
            for phase, body, expected in phases:
                started = time.perf_counter()
                response = http.post(
                    f"/v1/schools/{school}/students", content=body, headers={"content-type": media}
                )
                elapsed = time.perf_counter() - started
                answer: dict[str, Any] = response.json()
                if response.status_code != 200 or any(answer.get(k) != v for k, v in expected.items()):
                    print(f"FAILED {fmt} {phase}: {response.status_code} {answer}")
                    failed = True
                timings[phase].append(elapsed)
            if asyncio.run(_count(url, school)) != args.rows:
                print(f"FAILED {fmt}: stored count differs")
                failed = True
        for phase, runs in timings.items():
            median = statistics.median(runs)
            shown = " ".join(f"{t:.2f}" for t in runs)
            print(
                f"{fmt:<6} {phase:<10} {args.rows:>7}  {median:>7.2f}s  {args.rows / median:>8.0f}  {shown}"
            )
    if args.big:
        school = new_school(schools + 1)
        body = _json_body(_rows(args.big, "BIG"))
        started = time.perf_counter()
        response = http.post(
            f"/v1/schools/{school}/students", content=body, headers={"content-type": "application/json"}
        )
        elapsed = time.perf_counter() - started
        ok = response.status_code == 200 and response.json().get("created") == args.big
        failed |= not ok
        print(
            f"{'json':<6} {'new':<10} {args.big:>7}  {elapsed:>7.2f}s  {args.big / elapsed:>8.0f}  "
            f"({len(body) / 1e6:.1f} MB body){'' if ok else '  FAILED'}"
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
