"""Photo proof as the service keeps it: a real JPEG, PNG or WebP (decoded by Pillow, whatever the request's
headers say), with its metadata removed except the orientation.

Metadata is removed from the file's structure, not by re-encoding: the pixels stay exactly as the phone took
them, and a photo that carried nothing to remove is stored byte for byte, so its SHA-256 is the one the sender
computed. What goes: JPEG APP1 (EXIF, XMP), APP13 (IPTC), the other application segments but JFIF, the ICC
profile and Adobe's colour marker, comments, and anything after the end of the image; PNG text, EXIF and time
chunks; WebP EXIF and XMP chunks. GPS, camera serial numbers and names go with them — the event says where the
delivery happened, the file does not. An orientation other than "upright" comes back as a one-entry EXIF block."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# A phone photo is 12–50 megapixels; beyond this it is not a photo but a decompression bomb.
MAX_PIXELS = 80_000_000
ORIENTATION = 0x0112


class NotAnImage(ValueError):
    """Not a JPEG, PNG or WebP image that decodes (the message says why, for the 422)."""


@dataclass(frozen=True, slots=True)
class CleanImage:
    content: bytes
    media_type: str
    width: int
    height: int


def clean(data: bytes) -> CleanImage:
    """The image in `data` without its metadata (see the module), or `NotAnImage`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
            if image.width * image.height > MAX_PIXELS:
                raise NotAnImage(f"{image.width}×{image.height} pixels is more than a photo needs")
            image.load()  # every pixel decoded: a truncated or forged file stops here
            orientation = image.getexif().get(ORIENTATION, 1)
    except NotAnImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NotAnImage("not a JPEG, PNG or WebP image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise NotAnImage(f"the image does not decode ({type(exc).__name__})") from None
    kept = orientation if isinstance(orientation, int) and 2 <= orientation <= 8 else 1
    fmt = image.format or ""
    try:
        if fmt == "JPEG":
            content = _jpeg(data, kept)
        elif fmt == "PNG":
            content = _png(data, kept)
        else:
            content = _webp(data, kept)
    except (IndexError, ValueError, struct.error) as exc:  # a structure Pillow tolerated but we can't walk
        raise NotAnImage(f"the image's structure is damaged ({type(exc).__name__})") from None
    return CleanImage(content, FORMATS[fmt], image.width, image.height)


def _orientation_exif(orientation: int) -> bytes:
    """`Exif\\0\\0` and a TIFF block with one entry: the orientation."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


# ---- JPEG: a list of marker segments, entropy-coded data after each SOS ----

_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0–7: no length
_SOS, _EOI, _COM, _APP0, _APP2, _APP14 = 0xDA, 0xD9, 0xFE, 0xE0, 0xE2, 0xEE


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == _COM or 0xE0 <= marker <= 0xEF:
        return (
            (marker == _APP0 and payload.startswith((b"JFIF\0", b"JFXX\0")))
            or (marker == _APP2 and payload.startswith(b"ICC_PROFILE\0"))
            or (marker == _APP14 and payload.startswith(b"Adobe"))
        )
    return True


def _jpeg(data: bytes, orientation: int) -> bytes:
    out = bytearray(data[:2])  # SOI
    position = 2
    inserted = orientation == 1
    while position < len(data):
        if data[position] != 0xFF:
            raise IndexError("marker expected")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == _EOI:
            out += b"\xff\xd9"
            return bytes(out)  # anything after the image's end is dropped
        if marker in _STANDALONE:
            out += data[position : position + 2]
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        end = position + 2 + length
        if length < 2 or end > len(data):
            raise IndexError("segment runs past the end")
        payload = data[position + 4 : end]
        if not inserted and not (marker == _APP0 and _keep_jpeg_segment(marker, payload)):
            segment = _orientation_exif(orientation)
            out += b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
            inserted = True
        if _keep_jpeg_segment(marker, payload):
            out += data[position:end]
        position = end
        if marker == _SOS:  # entropy-coded data up to the next marker that is not a stuffed byte or a restart
            scan = position
            while True:
                scan = data.index(b"\xff", scan)
                following = data[scan + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    scan += 2 if following != 0xFF else 1
                    continue
                break
            out += data[position:scan]
            position = scan
    raise IndexError("no end-of-image marker")


# ---- PNG: chunks (length, type, data, CRC) after an 8-byte signature ----

_PNG_DROPPED = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(data: bytes, orientation: int) -> bytes:
    out = bytearray(data[:8])
    position = 8
    inserted = orientation == 1
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise IndexError("chunk runs past the end")
        if not inserted and kind in (b"IDAT", b"IEND"):
            out += _png_chunk(b"eXIf", _orientation_exif(orientation)[6:])  # PNG's eXIf has no Exif\0\0
            inserted = True
        if kind not in _PNG_DROPPED:
            out += data[position:end]
        position = end
        if kind == b"IEND":
            return bytes(out)
    raise IndexError("no IEND chunk")


# ---- WebP: RIFF chunks (fourcc, little-endian size, data padded to an even length) ----

_WEBP_EXIF_FLAG, _WEBP_XMP_FLAG = 0x08, 0x04


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _webp(data: bytes, orientation: int) -> bytes:
    (riff_size,) = struct.unpack("<I", data[4:8])
    end_of_riff = min(len(data), 8 + riff_size)
    chunks: list[tuple[bytes, bytes]] = []
    position = 12
    while position + 8 <= end_of_riff:
        fourcc = data[position : position + 4]
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        payload = data[position + 8 : position + 8 + size]
        if len(payload) != size:
            raise IndexError("chunk runs past the end")
        chunks.append((fourcc, payload))
        position += 8 + size + (size % 2)
    kept = [(f, p) for f, p in chunks if f not in (b"EXIF", b"XMP ")]
    if kept and kept[0][0] == b"VP8X":
        header = bytearray(kept[0][1])
        header[0] &= ~(_WEBP_EXIF_FLAG | _WEBP_XMP_FLAG) & 0xFF
        if orientation != 1:
            header[0] |= _WEBP_EXIF_FLAG
            kept.append((b"EXIF", _orientation_exif(orientation)[6:]))
        kept[0] = (b"VP8X", bytes(header))
    # A simple WebP (no VP8X header) can't carry EXIF: its orientation, if any, was in a chunk it couldn't have.
    body = b"WEBP" + b"".join(_riff_chunk(f, p) for f, p in kept)
    return b"RIFF" + struct.pack("<I", len(body)) + body
