"""The one module that owns database connections.

Everything else calls these helpers with a query *name* (see `spool.queries`) and
bound parameters. psycopg errors are translated here, once, into the datarun tree:
a server that cannot be reached becomes `DatabaseUnavailable` with the host named
and the password masked; anything else becomes `DatabaseError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from spool.errors import Conflict, DatabaseError, DatabaseUnavailable, Deadlock
from spool.queries import query
from spool.urls import describe_host, mask_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
Params = Mapping[str, Any] | None
Conn = psycopg.Connection[dict[str, Any]]
T = TypeVar("T")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def unreachable(url: str, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"cannot reach the database at {describe_host(url)} ({mask_url(url)}): {_first_line(exc)}"
    )


@contextmanager
def translated(url: str, conn: psycopg.Connection[Any] | None = None) -> Iterator[None]:
    """Turn psycopg errors raised inside the block into datarun errors."""
    try:
        yield
    except psycopg.errors.DeadlockDetected as exc:  # an OperationalError too: first
        raise Deadlock(f"database error: {_first_line(exc)}") from exc
    except psycopg.OperationalError as exc:
        if conn is None or conn.broken or conn.closed:
            raise unreachable(url, exc) from exc
        raise DatabaseError(f"database error: {_first_line(exc)}") from exc
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"database error: {_first_line(exc)}", exc.diag.constraint_name) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"database error: {_first_line(exc)}") from exc


NOT_DURABLE: dict[str, Any] = {"options": "-c synchronous_commit=off"}


def connect(
    url: str, *, autocommit: bool = True, application_name: str = "datarun",
    durable: bool = True,
) -> Conn:  # fmt: skip
    """One connection, rows as dicts. The caller closes it (use it as a context manager).
    `durable=False`: commits do not wait for the disk (see Database)."""
    with translated(url):
        return psycopg.connect(
            url,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=application_name,
            **({} if durable else NOT_DURABLE),
        )


def fetch_all(conn: Conn, name: str, params: Params = None) -> list[dict[str, Any]]:
    with translated(_url_of(conn), conn), conn.cursor() as cur:
        cur.execute(query(name), params)
        return cur.fetchall() if cur.description else []


def fetch_one(conn: Conn, name: str, params: Params = None) -> dict[str, Any] | None:
    rows = fetch_all(conn, name, params)
    return rows[0] if rows else None


def fetch_as(conn: Conn, cls: type[T], name: str, params: Params = None) -> list[T]:
    """Rows as instances of a dataclass or pydantic model."""
    with translated(_url_of(conn), conn), conn.cursor(row_factory=class_row(cls)) as cur:
        cur.execute(query(name), params)
        return cur.fetchall() if cur.description else []


def execute(conn: Conn, name: str, params: Params = None) -> int:
    """Run a named statement; returns the number of rows it touched."""
    with translated(_url_of(conn), conn), conn.cursor() as cur:
        cur.execute(query(name), params)
        return cur.rowcount


def execute_many(conn: Conn, name: str, params: Sequence[Mapping[str, Any]]) -> None:
    """One statement for many parameter sets, pipelined: a round trip for all."""
    if not params:
        return
    with translated(_url_of(conn), conn), conn.cursor() as cur:
        cur.executemany(query(name), params)


def execute_script(conn: Conn, text: str) -> None:
    """Run a whole .sql file (a migration); several statements, no parameters."""
    with translated(_url_of(conn), conn), conn.cursor() as cur:
        cur.execute(text.encode())


def execute_composed(
    conn: Conn,
    name: str,
    identifiers: Mapping[str, str] | None = None,
    literals: Mapping[str, str] | None = None,
) -> None:
    """Run a utility statement whose {placeholders} cannot be bound parameters.

    CREATE DATABASE {name}, ALTER ROLE {role} PASSWORD {password}: identifiers are
    quoted as identifiers and literals as literals, by psycopg, never by hand.
    """
    parts: dict[str, sql.Composable] = {
        k: sql.Identifier(v) for k, v in (identifiers or {}).items()
    }
    parts.update({k: sql.Literal(v) for k, v in (literals or {}).items()})
    composed = sql.SQL(query(name)).format(**parts)
    with translated(_url_of(conn), conn), conn.cursor() as cur:
        cur.execute(composed)


def _url_of(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


def with_database(url: str, dbname: str) -> str:
    """The same server URL, pointing at another database."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def ensure_database(url: str, name: str, template: str = "template1") -> bool:
    """Create database `name` on the server of `url` unless it exists; True if created."""
    with connect(with_database(url, "postgres")) as conn:
        row = fetch_one(conn, "database_exists", {"name": name})
        if row and row["present"]:
            return False
        try:
            execute_composed(
                conn, "database_create", identifiers={"name": name, "template": template}
            )
        except Conflict:
            return False  # another process created it first
        except DatabaseError as exc:
            if isinstance(exc.__cause__, psycopg.errors.DuplicateDatabase):
                return False
            raise
        log.info("created database %s", name)
        return True


def drop_database(url: str, name: str) -> None:
    with connect(with_database(url, "postgres")) as conn:
        execute_composed(conn, "database_drop", identifiers={"name": name})


def set_role_password(url: str, role: str, password: str) -> None:
    with connect(url) as conn:
        execute_composed(
            conn, "role_password", identifiers={"role": role}, literals={"password": password}
        )


def listen(
    url: str, channel: str, woken: Callable[[str | None], None], stop: threading.Event
) -> None:
    """Call `woken(payload)` for each NOTIFY on `channel` until `stop`; reconnect with
    back-off. Also calls `woken(None)` after each (re)connection: notifications sent
    meanwhile are lost, so whatever they were about may be waiting."""
    backoff = 0.5
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                 application_name="datarun listener") as conn:  # fmt: skip
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                woken(None)
                backoff = 0.5
                while not stop.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        woken(notify.payload)
        except psycopg.Error as exc:
            log.warning("listener: %s; reconnecting in %.1f s", _first_line(exc), backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)


class Database:
    """A pool of connections to one database, for a long-running daemon.

    `connection()` hands out an autocommit connection; `transaction()` one inside a
    transaction that commits when the block ends and rolls back on error.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 4, name: str = "datarun",
        durable: bool = True,
    ) -> None:  # fmt: skip
        self.url = url
        self._pool = ConnectionPool[Conn](
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            timeout=CONNECT_TIMEOUT * 2,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": name,
                # not durable: a commit may be lost if the server crashes right after it
                # (a clean or fast shutdown loses nothing); callers whose writes are fenced
                # and leased, like executors, only redo work then.
                **({} if durable else NOT_DURABLE),
            },
        )

    def open(self) -> Database:
        # one direct attempt first: it fails at once and names the cause, where the
        # pool would retry silently until its timeout
        with connect(self.url):
            pass
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except PoolTimeout as exc:
            raise unreachable(self.url, exc) from exc
        return self

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise unreachable(self.url, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        with self.connection() as conn, translated(self.url, conn), conn.transaction():
            yield conn
