"""Evidence storage benchmark: what keeping delivery photos in PostgreSQL (bytea) costs.

    .venv/bin/python bench/evidence.py [--repeat 20]

Makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres), migrates
it, then for images of 100 KiB, 1 MiB, 4 MiB and 8 MiB (random bytes: a JPEG is as incompressible) times, over
`--repeat` runs each: one insert into `evidence_blobs` with its commit (as `POST …/evidence` does), one read of
the bytes back (as `GET …/evidence/{id}` does), and the same insert into a copy of the table with PostgreSQL's
default storage (`MAIN`: it tries pglz compression first) to show what `STORAGE EXTERNAL` saves. Then the time
`app.evidence.images.clean` takes on a 12-megapixel phone-sized JPEG with camera EXIF (decode every pixel,
rewrite the metadata). Prints medians and the 90th percentile in milliseconds. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import statistics
import time
import uuid

import asyncpg
from PIL import Image

from app.core.database import asyncpg_url
from app.core.migrations import upgrade_to_head
from app.evidence.images import clean

SIZES = [
    ("100 KiB", 100 * 1024),
    ("1 MiB", 1024 * 1024),
    ("4 MiB", 4 * 1024 * 1024),
    ("8 MiB", 8 * 1024 * 1024),
]
INSERT = (
    "INSERT INTO {table} (sha256, media_type, byte_size, width, height, content)"
    " VALUES ($1, 'image/jpeg', $2, 1, 1, $3)"
)


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(ordered) * 1000:7.1f} ms (p90 {p90 * 1000:7.1f})"


async def timed_insert(db: asyncpg.Connection, table: str, content: bytes) -> float:
    started = time.perf_counter()
    async with db.transaction():
        await db.execute(INSERT.format(table=table), hashlib.sha256(content).digest(), len(content), content)
    return time.perf_counter() - started


async def storage(dsn: str, repeat: int) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("CREATE TABLE evidence_blobs_main (LIKE evidence_blobs INCLUDING ALL)")
        await db.execute("ALTER TABLE evidence_blobs_main ALTER COLUMN content SET STORAGE MAIN")
        print(f"{'size':>8} | {'insert + commit':>28} | {'read back':>28} | {'insert, default storage':>28}")
        for label, size in SIZES:
            inserts, reads, compressed = [], [], []
            for _ in range(repeat):
                content = os.urandom(size)
                inserts.append(await timed_insert(db, "evidence_blobs", content))
                compressed.append(await timed_insert(db, "evidence_blobs_main", content))
                started = time.perf_counter()
                back = await db.fetchval(
                    "SELECT content FROM evidence_blobs WHERE sha256 = $1", hashlib.sha256(content).digest()
                )
                reads.append(time.perf_counter() - started)
                assert back == content
            print(f"{label:>8} | {ms(inserts):>28} | {ms(reads):>28} | {ms(compressed):>28}")
    finally:
        await db.close()


def camera_photo() -> bytes:
    """A 4000×3000 JPEG of noise-like detail (as large as a real photo of that size) with camera EXIF and GPS."""
    image = Image.frombytes("RGB", (4000, 3000), os.urandom(4000 * 3000 * 3)).reduce(4).resize((4000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "FieldPhone"
    exif.get_ifd(0x8825)[2] = (27.0, 42.0, 1.5)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88, exif=exif)
    return out.getvalue()


async def bench(args: argparse.Namespace) -> None:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_dsn = asyncpg_url(server).replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"g4g_bench_evidence_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    try:
        await asyncio.to_thread(upgrade_to_head, asyncpg_url(dsn))
        await storage(dsn, args.repeat)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    photo = camera_photo()
    runs = []
    for _ in range(max(3, args.repeat // 4)):
        started = time.perf_counter()
        cleaned = clean(photo)
        runs.append(time.perf_counter() - started)
    print(
        f"clean() of a 12 MP JPEG ({len(photo) / 2**20:.1f} MiB → {len(cleaned.content) / 2**20:.1f} MiB): {ms(runs)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
