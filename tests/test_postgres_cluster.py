"""The throwaway PostgreSQL server the tests run the service against (tests/conftest.py)."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import psycopg
import pytest
from postgres_cluster import PostgresCluster, PostgresClusterError


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=10)


def test_cluster_starts(postgres_cluster: PostgresCluster) -> None:
    assert postgres_cluster.running
    assert postgres_cluster.url("x") == f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/x"
    assert str(postgres_cluster.dir).startswith("/tmp/")
    with _connect(postgres_cluster.url()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 150000
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        assert conn.execute("SHOW max_connections").fetchone()[0] == "300"
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    if os.geteuid() == 0:  # initdb and postgres refuse root: they ran as `postgres`
        assert postgres_cluster.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid


def test_connection_works(postgres_url: str) -> None:
    with _connect(postgres_url) as conn:
        conn.execute("CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO t (name) VALUES (%s), (%s)", ["ä", "b"])
        conn.commit()
        assert conn.execute("SELECT upper(name) FROM t ORDER BY id").fetchall() == [("Ä",), ("B",)]


def test_fresh_databases_are_independent(postgres_cluster: PostgresCluster) -> None:
    a, b = postgres_cluster.create_database(), postgres_cluster.create_database()
    assert a != b
    try:
        with _connect(a) as conn:
            conn.execute("CREATE TABLE only_in_a (x int)")
        with _connect(b) as conn:
            found = conn.execute("SELECT to_regclass('only_in_a')").fetchone()[0]
            assert found is None
    finally:
        for url in (a, b):
            postgres_cluster.drop_database(url.rsplit("/", 1)[1], force=True)
    with pytest.raises(psycopg.OperationalError, match="does not exist"), _connect(a):
        pass


def test_drop_database_forces_out_open_connections(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database("lingering")
    with pytest.raises(PostgresClusterError, match="already exists"):
        postgres_cluster.create_database("lingering")
    # (Without force, DROP DATABASE waits 5 s for other sessions, then fails.)
    with _connect(url) as conn:
        postgres_cluster.drop_database("lingering", force=True)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    postgres_cluster.drop_database("lingering")  # IF EXISTS: gone already, no error


def test_for_update_skip_locked(postgres_url: str) -> None:
    """Two workers claiming jobs: the row one holds is skipped by the other, not waited on."""
    with _connect(postgres_url) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY)")
        setup.execute("INSERT INTO jobs SELECT generate_series(1, 3)")
    claim = "SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with _connect(postgres_url) as first, _connect(postgres_url) as second:
        assert first.execute(claim).fetchone() == (1,)  # in first's open transaction
        second.execute("SET lock_timeout = '2s'")  # a bug waits 2 s, not forever
        assert second.execute(claim).fetchone() == (2,)
        remaining = "SELECT id FROM jobs ORDER BY id FOR UPDATE SKIP LOCKED"
        assert [r[0] for r in second.execute(remaining)] == [2, 3]
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        second.rollback()
        first.commit()  # released: the next claim gets it
        assert second.execute(claim).fetchone() == (1,)


def test_stop_removes_everything(postgres_cluster: PostgresCluster) -> None:
    with PostgresCluster(postgres_cluster.bindir) as cluster:
        folder, port = cluster.dir, cluster.port
        assert folder is not None and port is not None
        assert port != postgres_cluster.port
        assert (folder / "data" / "postmaster.pid").is_file()
        with _connect(cluster.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not cluster.running
    assert not folder.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    cluster.stop()  # twice is fine
    with pytest.raises(PostgresClusterError, match="not started"):
        cluster.url()


def test_missing_binaries_are_a_clear_error() -> None:
    cluster = PostgresCluster(Path("/nonexistent"))
    with pytest.raises(PostgresClusterError, match="apt-get install -y postgresql"):
        cluster.start()
    assert cluster.dir is None
