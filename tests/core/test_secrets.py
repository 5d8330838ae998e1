"""The lookup key: held outside the database, never the data key, required in production."""

from __future__ import annotations

import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.secrets import decode_lookup_key, keyed_hash, lookup_key_for
from app.core.settings import Settings
from tests.conftest import DATA_KEY
from tests.live import g4g_env, run_g4g

LOOKUP_KEY = secrets.token_urlsafe(32)


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings.model_validate({"database_url": "postgresql://unused/db", "data_dir": tmp_path, **values})


def test_a_configured_lookup_key_is_used_as_given(tmp_path: Path) -> None:
    settings = _settings(tmp_path, lookup_key=LOOKUP_KEY, data_key=DATA_KEY)
    assert lookup_key_for(settings) == decode_lookup_key(LOOKUP_KEY) and len(lookup_key_for(settings)) == 32
    assert not (tmp_path / "lookup.key").exists()


def test_without_one_a_private_key_file_is_made_once_and_shared(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: lookup_key_for(settings), range(16)))
    assert len(keys) == 1
    path = tmp_path / "data" / "lookup.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["lookup.key"]  # no drafts left behind
    assert lookup_key_for(settings) == keys.pop()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lookup_key": "c2hvcnQ"}, "at least 32"),  # base64url of b"short"
        ({"lookup_key": "short"}, "base64url"),
        ({"environment": "production", "data_key": DATA_KEY}, "G4G_LOOKUP_KEY: required"),
        ({"lookup_key": DATA_KEY, "data_key": DATA_KEY}, "must not be one of the data keys"),
    ],
)
def test_bad_lookup_keys_are_refused(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(tmp_path, **values)


def test_production_with_both_keys_starts(tmp_path: Path) -> None:
    settings = _settings(tmp_path, environment="production", data_key=DATA_KEY, lookup_key=LOOKUP_KEY)
    assert settings.lookup_key is not None


def test_a_bad_lookup_key_stops_the_process_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_g4g("migrate", env=g4g_env(G4G_LOOKUP_KEY="short"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("g4g: invalid setting G4G_LOOKUP_KEY:") and "short" not in result.stderr
    result = run_g4g(
        "migrate", env=g4g_env(G4G_ENVIRONMENT="production", G4G_DATA_KEY=DATA_KEY), cwd=tmp_path
    )
    assert result.returncode == 2 and "G4G_LOOKUP_KEY: required" in result.stderr


def test_keyed_hashes_depend_on_the_key_and_on_where_parts_begin() -> None:
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    assert keyed_hash(key, "sch_1", "A-7") == keyed_hash(key, "sch_1", "A-7")
    assert keyed_hash(key, "sch_1", "A-7") != keyed_hash(other, "sch_1", "A-7")
    assert keyed_hash(key, "sch_1", "A-7") != keyed_hash(key, "sch_1A", "-7")
    assert keyed_hash(key, "sch_1", "A-7") != keyed_hash(key, "sch_2", "A-7")
