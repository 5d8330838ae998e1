"""Encryption of secrets at rest with keys held outside the database."""

from __future__ import annotations

import os
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
