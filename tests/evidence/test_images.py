"""What the service keeps of a photo, on the bytes themselves: metadata gone, pixels untouched, bombs refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from app.evidence.images import NotAnImage, clean
from tests.evidence.photos import metadata, photo, pixels


def test_a_jpeg_loses_comments_xmp_and_whatever_follows_the_image() -> None:
    original = photo("JPEG")
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>GPS 27.7,85.3</x:xmpmeta>"
    comment = b"taken by driver 42"
    segments = (
        b"\xff\xe1"
        + struct.pack(">H", len(xmp) + 2)
        + xmp
        + b"\xff\xfe"
        + struct.pack(">H", len(comment) + 2)
    )
    tampered = original[:2] + segments + comment + original[2:] + b"appended after the end"
    kept = clean(tampered).content
    assert kept == original  # exactly the photo without what was added
    assert b"xmpmeta" not in kept and b"driver 42" not in kept and b"appended" not in kept


def test_a_png_loses_its_text_chunks() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Shree Janata School, 27.6710 85.4298")
    info.add_itxt("Author", "Sita Sharma")
    out = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(out, "PNG", pnginfo=info)
    kept = clean(out.getvalue()).content
    assert b"Sita Sharma" not in kept and b"27.6710" not in kept
    assert pixels(kept) == pixels(out.getvalue())
    assert metadata(kept) == ({}, {})


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(20_000, 20_000), (60_000, 60_000)])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(size: tuple[int, int]) -> None:
    with pytest.raises(NotAnImage):
        clean(_png_header_only(*size))
