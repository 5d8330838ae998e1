"""Checks a process makes before it starts work, each failing with one line an operator can act on.

Exit codes of `g4g` (documented in the README): 0 success, 1 the command's own failure (e.g. `audit` found a
broken invariant), 2 an invalid setting, 3 the database can't be reached, 4 the schema isn't current (run
`g4g migrate`), 5 the data key can't read the data encrypted in this database, 6 the address to serve on is taken."""

from __future__ import annotations

import socket

import asyncpg

from app.core.database import driver_dsn
from app.core.migrations import head_revision
from app.core.settings import Settings

EXIT_DATABASE_UNREACHABLE = 3
EXIT_SCHEMA_NOT_CURRENT = 4
EXIT_DATA_KEY_MISMATCH = 5
EXIT_ADDRESS_IN_USE = 6


class PreflightError(Exception):
    """A reason not to start, with the exit code that names its kind."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def port_is_free(host: str, port: int) -> bool:
    """Whether `g4g serve` could listen there (uvicorn reuses an address whose old connections are closing)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def check_address_free(host: str, port: int, *, variable: str = "G4G_PORT") -> None:
    """Refuse to start where another process already listens (another `g4g serve`?), before the database is
    touched, rather than start the workers and stop again."""
    if not port_is_free(host, port):
        raise PreflightError(
            f"{host}:{port} is already in use (another g4g serve?); stop it, or choose a port with {variable}",
            EXIT_ADDRESS_IN_USE,
        )


async def connect(url: str) -> asyncpg.Connection:
    """A connection, or a PreflightError saying in one line why there is none (never the URL's password)."""
    try:
        # No statement cache: a few statements, and they work through a transaction pooler too.
        return await asyncpg.connect(driver_dsn(url), timeout=10.0, statement_cache_size=0)
    except asyncpg.InvalidCatalogNameError as exc:
        raise PreflightError(
            f"the database does not exist ({exc}); create it, or point DATABASE_URL at one that does",
            EXIT_DATABASE_UNREACHABLE,
        ) from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise PreflightError(f"the database refused the login ({exc})", EXIT_DATABASE_UNREACHABLE) from None
    except (OSError, socket.gaierror, TimeoutError, asyncpg.PostgresError) as exc:
        reason = str(exc) or type(exc).__name__
        raise PreflightError(f"cannot reach the database: {reason}", EXIT_DATABASE_UNREACHABLE) from None


async def schema_revision(connection: asyncpg.Connection) -> str | None:
    exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    revision: str | None = await connection.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    return revision


async def check_schema(connection: asyncpg.Connection) -> None:
    expected = head_revision()
    revision = await schema_revision(connection)
    if revision is None:
        raise PreflightError(
            "the database has no schema yet: run `g4g migrate` first", EXIT_SCHEMA_NOT_CURRENT
        )
    if revision != expected:
        raise PreflightError(
            f"the database schema is at revision {revision}, this code needs {expected}: "
            "run `g4g migrate` first",
            EXIT_SCHEMA_NOT_CURRENT,
        )


async def check_database(url: str) -> None:
    """The database answers and its schema is the one this code expects."""
    connection = await connect(url)
    try:
        await check_schema(connection)
    finally:
        await connection.close()


CANARY_PLAINTEXT = "g4g data key check"


async def check_data_key(connection: asyncpg.Connection, settings: Settings) -> None:
    """The data key reads what this database holds encrypted. A database remembers a canary encrypted with the
    key it was first served with; a process that would start with another key (say, from another working
    directory, where a fresh key file would be made) refuses instead of failing every request that needs one."""
    from cryptography.fernet import InvalidToken

    from app.core.secrets import cipher_for, decrypt, encrypt, key_file, key_source

    canary = await connection.fetchval("SELECT token FROM data_key_canaries WHERE id = 1")
    # Databases from before the canary: any encrypted platform secret says the same.
    sample = canary or await connection.fetchval(
        "SELECT secret_encrypted FROM platform_webhook_secrets LIMIT 1"
    )
    advice = "set G4G_DATA_KEY, or G4G_DATA_DIR to the directory holding the key file it was served with"
    if sample is not None and settings.data_key is None and not key_file(settings).exists():
        raise PreflightError(
            f"this database holds secrets encrypted with a data key, and there is no key file at "
            f"{key_file(settings)}: {advice}",
            EXIT_DATA_KEY_MISMATCH,
        )
    cipher = cipher_for(settings)
    if sample is not None:
        try:
            decrypt(cipher, sample)
        except InvalidToken:
            raise PreflightError(
                f"the data key ({key_source(settings)}) cannot read the secrets in this database, which were "
                f"encrypted with another key: {advice}",
                EXIT_DATA_KEY_MISMATCH,
            ) from None
    if canary is None:
        await connection.execute(
            "INSERT INTO data_key_canaries (id, token) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            encrypt(cipher, CANARY_PLAINTEXT),
        )


async def check_ready_to_serve(url: str, settings: Settings) -> None:
    """What `g4g serve` and `g4g worker` check before starting: database, schema, data key."""
    connection = await connect(url)
    try:
        await check_schema(connection)
        await check_data_key(connection, settings)
    finally:
        await connection.close()
