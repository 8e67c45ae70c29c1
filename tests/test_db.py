"""The SQLite helper: unsynced commits are still commits, and the connection stays synced after."""

from __future__ import annotations

from pathlib import Path

from exportd.server.db import Database


def test_unsynced_commit_is_kept_and_full_sync_is_restored(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.sqlite3")
    db.executescript("CREATE TABLE t (v INTEGER)")  # no trailing ";" needed
    db.execute("INSERT INTO t VALUES (1)", synced=False)
    assert db.execute("PRAGMA synchronous")[0][0] == 2  # FULL again
    db.close()
    again = Database(tmp_path / "x.sqlite3")
    assert [r[0] for r in again.execute("SELECT v FROM t")] == [1]
    again.close()
