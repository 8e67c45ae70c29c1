"""One SQLite database shared by the stores of a server (artifacts, jobs).

Durability comes first: the database runs in WAL mode with ``synchronous=FULL``, so a row that
:meth:`Database.execute` has returned from is on disk and survives ``kill -9`` or a power cut.
Every statement runs under one re-entrant lock, so the connection may be shared by all the
server's threads; a thread inside :meth:`Database.transaction` may keep calling
:meth:`Database.execute`, and those statements join its transaction.

Tables belong to the modules that use them: each creates its own with :meth:`executescript`
(``CREATE TABLE IF NOT EXISTS``), so this module knows no schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Database"]

Params = Sequence[Any] | dict[str, Any]


class Database:
    """A thread-safe SQLite connection with durable commits.

    Statements outside :meth:`transaction` commit on their own (autocommit). Rows come back as
    :class:`sqlite3.Row`, indexable by column name.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        """Open (creating if needed) the database file at ``path``.

        ``busy_timeout`` bounds how long a statement waits for another process holding the write
        lock (one server per data directory is the supported shape; this only covers tools
        reading the same file).
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        # isolation_level=None: the sqlite3 module never opens transactions behind our back;
        # single statements autocommit and transaction() issues BEGIN/COMMIT itself.
        self._conn = sqlite3.connect(
            str(self.path),
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"SQLite at {self.path} refused WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, params: Params = (), *, synced: bool = True) -> list[sqlite3.Row]:
        """Run one statement and return all its rows (empty for writes).

        Outside a transaction the statement is committed before this returns, and synced to disk
        unless ``synced`` is False. An unsynced commit survives the process being killed (WAL
        pages are in the OS's hands) and becomes durable against power loss with the next synced
        commit, since the WAL is written in order; it costs no fsync.
        """
        with self._lock:
            relax = not synced and not self._conn.in_transaction
            if relax:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                return self._conn.execute(sql, params).fetchall()
            finally:
                if relax:
                    self._conn.execute("PRAGMA synchronous=FULL")

    def execute_rowcount(self, sql: str, params: Params = ()) -> int:
        """Run one writing statement and return how many rows it changed.

        Lets a caller that races others (two sweeps removing the same row) act only when its
        own statement did the change.
        """
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> int:
        """Run one statement for each parameter set, atomically; return the rows changed."""
        with self.transaction() as conn:
            return conn.executemany(sql, seq_of_params).rowcount

    def executescript(self, sql: str) -> None:
        """Run a script of statements (schema creation), atomically.

        Must not be called inside :meth:`transaction`: the script carries its own BEGIN/COMMIT.
        """
        with self._lock:
            if self._depth:
                raise RuntimeError("executescript() inside a transaction")
            try:
                self._conn.executescript(f"BEGIN IMMEDIATE;\n{sql.rstrip().rstrip(';')};\nCOMMIT;")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the database for a group of statements that commit together or not at all.

        Yields the connection; :meth:`execute` from the same thread joins the transaction.
        An exception rolls everything back and propagates. Nested use joins the outer
        transaction. Other threads wait until it ends, so keep the body short and free of I/O.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection (checkpointing the WAL); later calls raise ProgrammingError."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
