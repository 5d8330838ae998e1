"""Encryption of secrets at rest, and keyed hashes for lookups, with keys held outside the database."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from app.core.settings import Settings


def key_file(settings: Settings) -> Path:
    return (settings.data_dir / "data.key").resolve()


def key_source(settings: Settings) -> str:
    """Where the data key comes from, for messages: the variable, or the key file's full path."""
    return "G4G_DATA_KEY" if settings.data_key is not None else f"the key file {key_file(settings)}"


def _key_file_keys(data_dir: Path) -> list[str]:
    path = data_dir / "data.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    return [path.read_text().strip()]


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def cipher_for(settings: Settings) -> MultiFernet:
    """The cipher for secrets at rest: `G4G_DATA_KEY` if set, else the key file under the data dir."""
    if settings.data_key is not None:
        keys = [k.strip() for k in settings.data_key.get_secret_value().split(",") if k.strip()]
    else:
        keys = _key_file_keys(settings.data_dir)
    return _cipher(tuple(keys))


def encrypt(cipher: MultiFernet, plaintext: str) -> str:
    return cipher.encrypt(plaintext.encode()).decode()


def decrypt(cipher: MultiFernet, token: str) -> str:
    return cipher.decrypt(token.encode()).decode()


LOOKUP_KEY_MIN_BYTES = 32


def decode_lookup_key(text: str) -> bytes:
    """The raw bytes of a lookup key written as base64url (padding optional); at least 32 bytes."""
    text = text.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("must be base64url text, e.g. from `secrets.token_urlsafe(32)`") from None
    if len(key) < LOOKUP_KEY_MIN_BYTES:
        raise ValueError(f"must encode at least {LOOKUP_KEY_MIN_BYTES} random bytes")
    return key


def _lookup_key_file(data_dir: Path) -> str:
    """The key file beside the data, created once. Written to a temporary file and linked into place, so
    processes starting together all end up reading the same complete key."""
    path = data_dir / "lookup.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".lookup.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(LOOKUP_KEY_MIN_BYTES))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            draft.unlink()
    return path.read_text()


def lookup_key_for(settings: Settings) -> bytes:
    """The key of keyed hashes: `G4G_LOOKUP_KEY` if set, else the key file under the data dir."""
    if settings.lookup_key is not None:
        return decode_lookup_key(settings.lookup_key.get_secret_value())
    return decode_lookup_key(_lookup_key_file(settings.data_dir))


def keyed_hash(key: bytes, *parts: str) -> bytes:
    """HMAC-SHA256 of `parts`, each length-prefixed (so ("ab", "c") and ("a", "bc") differ): finds a value again
    without storing it, and without the key a copy of the database cannot test guesses against it."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode()
        mac.update(len(data).to_bytes(4, "big"))
        mac.update(data)
    return mac.digest()
