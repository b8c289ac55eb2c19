"""A throw-away PostgreSQL cluster for tests and benchmarks: initdb into a temp folder, start, stop, remove.

initdb refuses to run as root, so under root (as in CI containers) the cluster belongs to an
unprivileged system user: ``postgres`` (Debian's package creates it), else ``nobody``, else one made
with ``useradd``; commands run through ``runuser -u USER --``. The server listens on a free loopback
port and a Unix socket inside the temp folder, with trust authentication, and is reached as
``postgresql+psycopg://postgres@127.0.0.1:PORT/DB``.

Binaries: ``$FASHATTR_PG_BIN``, else ``/usr/lib/postgresql/15/bin`` (Debian's PostgreSQL 15; ``tools/system-deps.sh``
installs it), else ``pg_config --bindir``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN_DEFAULT = Path("/usr/lib/postgresql/15/bin")


def pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    for cand in (os.environ.get("FASHATTR_PG_BIN"), str(PG_BIN_DEFAULT)):
        if cand and (Path(cand) / "initdb").is_file():
            return Path(cand)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_user() -> str | None:
    """The unprivileged account that owns the cluster when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    subprocess.run(["useradd", "--system", "--no-create-home", "fashattr-pg"], check=True)
    return "fashattr-pg"


class PgCluster:
    """A running throw-away cluster (use as a context manager, or call :meth:`stop`).

    Args:
        durable: keep fsync and synchronous commit on (benchmarks); tests turn them off for speed
            (a killed client, which the crash tests do, never needs them: the server survives).
    """

    def __init__(self, durable: bool = False) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise FileNotFoundError(
                f"PostgreSQL server binaries not found ({PG_BIN_DEFAULT}, $FASHATTR_PG_BIN, pg_config); "
                "tools/system-deps.sh installs Debian's postgresql"
            )
        self.bin = bindir
        self.user = cluster_user()
        # Not under pytest's tmp folder: that is 0700 root, and the cluster's owner must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="fashattr-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}", "-c max_connections=100"]
        if not durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", " ".join(opts), "-w", "-t", "60", "start")
        self.running = True

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (dropping an old one); returns its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self.running:
            self.running = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(cluster: PgCluster, seconds: float = 10.0) -> None:
    """Wait until the server accepts connections (pg_ctl -w already does; for restarts)."""
    import psycopg

    deadline = time.monotonic() + seconds
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres").close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
