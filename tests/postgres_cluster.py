"""A throwaway PostgreSQL server for tests and benchmarks.

It runs the binaries of Debian's `postgresql` package (/usr/lib/postgresql/<ver>/bin, the
highest version; or `pg_config --bindir` where pg_config is on PATH and that folder holds a
server) on a free loopback port, with its data, socket and log in a fresh folder under /tmp,
tuned for speed over durability (fsync off): nothing in it survives `stop()`.

initdb and postgres refuse to run as root, so as root they run as the `postgres` system
user (the package creates it) through `runuser`, and the folder is handed to that user.

No pytest in here: bench/ scripts import this file by path (tests/conftest.py has the
fixtures)::

    with PostgresCluster() as cluster:
        url = cluster.create_database()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
SYSTEM_USER = "postgres"  # the server's system user (as root) and its superuser role
MISSING_REASON = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in "
    f"{DEBIAN_GLOB} nor in `pg_config --bindir`: install Debian's PostgreSQL server "
    "with `apt-get install -y postgresql` (or `make system-deps`)"
)

# Bounds on every step, in seconds.
INITDB_TIMEOUT = 120
START_WAIT = 60  # pg_ctl -t: how long pg_ctl waits for the server to accept connections
STOP_WAIT = 30
CONNECT_TIMEOUT = 10
SQL_TIMEOUT_MS = 60_000  # statement_timeout for CREATE/DROP DATABASE


class PostgresClusterError(RuntimeError):
    """A step of starting, using or stopping the cluster failed; `log` is the tail of the
    command's output and of the server's log."""

    def __init__(self, message: str, log: str = ""):
        self.log = log
        super().__init__(f"{message}\n--- log tail ---\n{log}" if log else message)


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); 9.6 -> (9, 6)
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def find_postgres_bin() -> Path | None:
    """The folder with initdb, pg_ctl and postgres, or None.

    `pg_config --bindir` first where pg_config is on PATH and its folder holds the server
    (libpq-dev's pg_config names one even without the server installed), then the highest
    version under /usr/lib/postgresql."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server(Path(out)):
            return Path(out)
    found = [Path(p) for p in Path("/").glob(DEBIAN_GLOB.lstrip("/")) if _has_server(Path(p))]
    return max(found, key=_version_key) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class PostgresCluster:
    """One initdb'd PostgreSQL server on 127.0.0.1, trust authentication, user `postgres`.

    `start()` it (or use it as a context manager), then `create_database()` for a fresh
    database's URL; `stop()` stops the server and deletes everything. A started cluster is
    also stopped at interpreter exit, should its owner never get to `stop()`."""

    def __init__(self, bindir: Path | None = None, *, prefix: str = "pgtest-"):
        self.bindir = Path(bindir) if bindir else find_postgres_bin()
        self.prefix = prefix
        self.dir: Path | None = None
        self.port: int | None = None
        self._as_user: list[str] = []  # runuser prefix when root

    # -- paths ------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self._require_dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_dir() / "log"

    def _require_dir(self) -> Path:
        if self.dir is None:
            raise PostgresClusterError("the cluster is not started")
        return self.dir

    @property
    def running(self) -> bool:
        return self.dir is not None and self.port is not None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> PostgresCluster:
        if self.running:
            return self
        if self.bindir is None or not _has_server(self.bindir):
            raise PostgresClusterError(MISSING_REASON)
        self._as_user = self._run_as_prefix()
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))
        atexit.register(self.stop)
        try:
            if self._as_user:
                entry = pwd.getpwnam(SYSTEM_USER)
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._initdb()
            # A free port can be taken between our probe and the server's bind: try again.
            for attempt in range(3):
                self.port = _free_port()
                try:
                    self._pg_ctl_start()
                    break
                except PostgresClusterError as e:
                    self.port = None
                    if attempt == 2 or "Address already in use" not in e.log:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown; immediate, then SIGKILL, if that hangs) and
        remove its folder. Safe to call twice, and on a cluster that never started."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.dir is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._shutdown()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self.port = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases --------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        if not self.running:
            raise PostgresClusterError("the cluster is not started")
        return f"postgresql://{SYSTEM_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database (a unique name unless given); return its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        self._admin_sql("CREATE DATABASE {}", name)
        return self.url(name)

    def drop_database(self, name: str, *, force: bool = False) -> None:
        """Drop the database if it exists; `force` ends its open connections first."""
        self._admin_sql("DROP DATABASE IF EXISTS {}" + (" WITH (FORCE)" if force else ""), name)

    def _admin_sql(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        query = sql.SQL(statement).format(sql.Identifier(name))
        try:
            with psycopg.connect(
                self.url("postgres"),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={SQL_TIMEOUT_MS}",
            ) as conn:
                conn.execute(query)
        except psycopg.Error as e:
            shown = statement.replace("{}", f'"{name}"')
            raise PostgresClusterError(f"{shown} failed: {e}", self._log_tail()) from e

    # -- internals --------------------------------------------------------------------
    def _run_as_prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresClusterError(
                f"running as root, and PostgreSQL refuses to: it must run as the "
                f"{SYSTEM_USER!r} system user, which does not exist (Debian's postgresql "
                "package creates it: apt-get install -y postgresql)"
            ) from None
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", SYSTEM_USER, "--"]

    def _run(self, args: list[str], timeout: float, what: str) -> str:
        assert self.bindir is not None and self.dir is not None
        cmd = [*self._as_user, str(self.bindir / args[0]), *args[1:]]
        try:
            # cwd: the system user may not be able to enter ours (e.g. /root).
            # stdin: pg_ctl's server must not hold on to ours.
            done = subprocess.run(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"") + (e.stderr or b"")
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            raise PostgresClusterError(
                f"{what} timed out after {timeout:.0f} s", _tail(out) + "\n" + self._log_tail()
            ) from None
        except OSError as e:
            raise PostgresClusterError(f"{what} could not run: {e}") from e
        if done.returncode != 0:
            raise PostgresClusterError(
                f"{what} failed (exit {done.returncode}): {' '.join(cmd)}",
                _tail(done.stdout + done.stderr) + "\n" + self._log_tail(),
            )
        return done.stdout

    def _initdb(self) -> None:
        base = ["initdb", "-D", str(self.data_dir), "--auth=trust", "-U", SYSTEM_USER]
        base += ["--encoding=UTF8", "--no-sync"]
        try:
            # C.UTF-8: code-point collation as C, but lower()/upper() know non-ASCII letters.
            self._run([*base, "--locale=C.UTF-8"], INITDB_TIMEOUT, "initdb")
        except PostgresClusterError as e:
            if "locale" not in e.log:
                raise
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._run([*base, "--locale=C"], INITDB_TIMEOUT, "initdb")

    def _pg_ctl_start(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            # pg_ctl hands -o to a shell: the quotes keep the folder one word.
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "64MB",
        }
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        self._run(
            [
                *("pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(START_WAIT)),
                *("-l", str(self.log_path), "start", "-o", options),
            ],
            START_WAIT + 30,
            "pg_ctl start",
        )

    def _shutdown(self) -> None:
        for mode in ("fast", "immediate"):
            try:
                stop = ["stop", "-m", mode]
                self._run(
                    ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(STOP_WAIT), *stop],
                    STOP_WAIT + 15,
                    f"pg_ctl stop -m {mode}",
                )
                return
            except PostgresClusterError as e:
                if "Is server running?" in e.log:  # already gone (e.g. killed by Ctrl-C)
                    return
        # Both hung: kill the postmaster (if that pid is still a postgres: the file may be
        # stale); its backends exit when they notice.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                os.kill(pid, signal.SIGKILL)

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            return _tail(self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = f"port {self.port}, {self.dir}" if self.running else "stopped"
        return f"PostgresCluster({self.bindir}, {state})"
