"""Start a real stac-fastapi-pgstac (PostgreSQL + PostGIS + pypgstac + uvicorn) on loopback.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is
created and started as the ``postgres`` user.  Everything lives in a temporary
directory and listens only on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def missing() -> str | None:
    """Why this machine cannot run the server, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing)"
    if not list(Path("/usr/share/postgresql/15/extension").glob("postgis.control")):
        return "PostGIS for PostgreSQL 15 is not installed (postgresql-15-postgis-3)"
    bindir = Path(sys.executable).parent
    if not (bindir / "pypgstac").exists() or not (bindir / "uvicorn").exists():
        return "pypgstac / uvicorn are not installed (pip install '.[server]')"
    return None


class PgStac:
    def __init__(self) -> None:
        # not under pytest's tmp dir: the postgres user must be able to reach it
        self.workdir = Path(tempfile.mkdtemp(prefix="shaperesolver-pgstac-"))
        self.pg_port = free_port()
        self.api_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.root = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgis"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/"

    def _as_pg(self, args: list[str], **kw):
        cmd = (["runuser", "-u", "postgres", "--"] if self.root else []) + args
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kw)

    def start(self, collection: dict, items: list[dict]) -> PgStac:
        data = self.workdir / "pgdata"
        data.mkdir(parents=True)
        sock = self.workdir / "sock"
        sock.mkdir()
        if self.root:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
            shutil.chown(sock, "postgres")
        self._as_pg([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        log = self.workdir / "pg.log"
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                     f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {sock} -c fsync=off", "start"])
        self._started_pg = True
        self._as_pg([str(PG_BIN / "psql"), "-h", "127.0.0.1",
                     "-p", str(self.pg_port), "-U", "postgres", "-c", "CREATE DATABASE postgis"])
        bindir = Path(sys.executable).parent
        env = dict(os.environ)
        subprocess.run([str(bindir / "pypgstac"), "migrate", "--dsn", self.dsn], check=True, capture_output=True,
                       text=True, timeout=300, env=env)
        cfile = self.workdir / "collection.json"
        cfile.write_text(json.dumps(collection))
        ifile = self.workdir / "items.ndjson"
        ifile.write_text("".join(json.dumps(i) + "\n" for i in items))
        for kind, f in (("collections", cfile), ("items", ifile)):
            subprocess.run([str(bindir / "pypgstac"), "load", kind, str(f), "--dsn", self.dsn, "--method", "insert"],
                           check=True, capture_output=True, text=True, timeout=300, env=env)
        api_env = dict(env, PGUSER="postgres", PGPASSWORD="", PGHOST="127.0.0.1", PGPORT=str(self.pg_port),
                       PGDATABASE="postgis", POSTGRES_USER="postgres", POSTGRES_PASS="",
                       POSTGRES_HOST_READER="127.0.0.1", POSTGRES_HOST_WRITER="127.0.0.1",
                       POSTGRES_PORT=str(self.pg_port), POSTGRES_DBNAME="postgis")
        api_log = open(self.workdir / "api.log", "w")
        self.procs.append(subprocess.Popen(
            [str(bindir / "uvicorn"), "stac_fastapi.pgstac.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.api_port)], env=api_env, stdout=api_log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stac-fastapi-pgstac did not start:\n" + (self.workdir / "api.log").read_text()[-3000:])
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if getattr(self, "_started_pg", False):
            try:
                self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.workdir / "pgdata"), "-m", "immediate", "-w", "stop"])
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)
