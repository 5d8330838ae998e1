"""Real small images made on the spot, with or without the metadata a phone camera writes."""

from __future__ import annotations

import io

from PIL import Image

GPS_IFD, ORIENTATION, MAKE = 0x8825, 0x0112, 0x010F


def photo(fmt: str = "JPEG", *, size: tuple[int, int] = (96, 64), camera_metadata: bool = False) -> bytes:
    """A picture (a gradient with a diagonal line) as a phone would save it; with `camera_metadata`: rotated
    (orientation 6), the maker's name and the GPS position of where it was taken."""
    image = Image.new("RGB", size, (230, 220, 200))
    for x in range(size[0]):
        image.putpixel((x, x % size[1]), (20, (x * 5) % 256, 120))
    out = io.BytesIO()
    if camera_metadata:
        exif = Image.Exif()
        exif[ORIENTATION] = 6
        exif[MAKE] = "FieldPhone"
        gps = exif.get_ifd(GPS_IFD)
        gps[1], gps[2], gps[3], gps[4] = "N", (27.0, 42.0, 1.5), "E", (85.0, 19.0, 26.0)
        image.save(out, fmt, exif=exif)
    else:
        image.save(out, fmt)
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


def metadata(data: bytes) -> tuple[dict[int, object], dict[int, object]]:
    """The EXIF entries of an image, and its GPS entries."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return dict(exif), dict(exif.get_ifd(GPS_IFD))
