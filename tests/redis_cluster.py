"""A throwaway Redis Cluster of three masters, started from Debian's ``redis-server`` for tests.

Each node runs on two free ports the OS hands out (client and cluster bus, ``cluster-port``),
in its own temporary directory, with persistence off, so it never touches another Redis on
this machine (the local stack's 16379, a system Redis on 6379) or leaves data behind. The
slots are split evenly over the masters (no replicas), the nodes are introduced with
``CLUSTER MEET``, and :func:`start` returns once every node reports ``cluster_state:ok``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["ClusterStartError", "LocalRedisCluster", "running_cluster"]

HOST = "127.0.0.1"
SLOTS = 16384
START_TIMEOUT_S = 30.0
# A port picked free can be taken by another process before the server binds it.
PORT_ATTEMPTS = 3


class ClusterStartError(RuntimeError):
    """The local Redis Cluster did not come up."""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on (all held until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class _Node:
    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=1)


@dataclass
class LocalRedisCluster:
    """Three ``redis-server --cluster-enabled yes`` processes forming one cluster."""

    masters: int = 3
    nodes: list[_Node] = field(default_factory=list)
    root: Path | None = None
    timeout: float = START_TIMEOUT_S

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node; cluster clients discover the others from it."""
        return f"redis://{HOST}:{self.nodes[0].port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the servers and form the cluster; stops what it started if that fails."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterStartError(
                "redis-server is not installed, so the Redis Cluster tests cannot start one; "
                "run scripts/setup.sh and retry."
            )
        self.timeout = timeout
        self.root = root = Path(tempfile.mkdtemp(prefix="usp-redis-cluster-"))
        deadline = time.monotonic() + timeout
        try:
            clients = [
                self._start_node(binary, root / f"node{index}", deadline)
                for index in range(self.masters)
            ]
            self._form(clients, deadline)
        except BaseException:
            # Keep the directory: the error names a log file in it.
            self._stop_processes()
            raise

    def _start_node(self, binary: str, base: Path, deadline: float) -> redis.Redis:
        """Start one server on fresh ports and wait until it answers."""
        attempt = 0
        while True:
            attempt += 1
            directory = base.with_name(f"{base.name}-{attempt}")
            directory.mkdir()
            port, bus_port = _free_ports(2)
            process = subprocess.Popen(
                [binary, *self._options(port, bus_port, directory)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            node = _Node(port, bus_port, directory, process)
            self.nodes.append(node)
            client = self._answering(node, deadline)
            if client is not None:
                return client
            log = node.log.read_text(errors="replace") if node.log.is_file() else ""
            taken = "Address already in use" in log
            if not taken or attempt == PORT_ATTEMPTS:
                raise ClusterStartError(
                    f"redis-server for the test cluster exited with code "
                    f"{process.returncode} on port {port}; see its log {node.log}"
                )
            self.nodes.remove(node)

    @staticmethod
    def _options(port: int, bus_port: int, directory: Path) -> list[str]:
        return [
            "--bind",
            HOST,
            "--port",
            str(port),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus_port),
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]

    def _form(self, clients: list[redis.Redis], deadline: float) -> None:
        share = SLOTS // len(self.nodes)
        for index, client in enumerate(clients):
            first = index * share
            last = SLOTS - 1 if index == len(clients) - 1 else first + share - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            # Distinct epochs up front, as redis-cli does, so no epoch collision must settle.
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", HOST, node.port, node.bus_port)
        for node, client in zip(self.nodes, clients, strict=True):
            while True:
                info = client.cluster("INFO")
                if info.get("cluster_state") == "ok" and int(
                    info.get("cluster_known_nodes", 0)
                ) == len(self.nodes):
                    break
                if time.monotonic() > deadline:
                    raise ClusterStartError(
                        f"the Redis Cluster node on port {node.port} did not reach "
                        f"cluster_state:ok within {self.timeout:.0f} s (last CLUSTER INFO: "
                        f"{info}); see its log {node.log}"
                    )
                time.sleep(0.1)
            client.close()

    def _answering(self, node: _Node, deadline: float) -> redis.Redis | None:
        """A client of the node once its server answers; None if that server exited first.

        What answers must be the process started here (its pid), never whatever else took the
        port meanwhile.
        """
        client = node.client()
        while True:
            if node.process.poll() is not None:
                client.close()
                return None
            try:
                if client.info("server")["process_id"] == node.process.pid:
                    return client
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                client.close()
                raise ClusterStartError(
                    f"redis-server on port {node.port} did not answer within "
                    f"{self.timeout:.0f} s; see its log {node.log}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every server this object started and remove their directories."""
        self._stop_processes()
        if self.root is not None:
            with suppress(OSError):
                shutil.rmtree(self.root)
            self.root = None

    def _stop_processes(self) -> None:
        for node in self.nodes:
            if node.process.poll() is not None:
                continue
            node.process.terminate()
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
        self.nodes = []


@contextmanager
def running_cluster(masters: int = 3) -> Iterator[LocalRedisCluster]:
    """A started :class:`LocalRedisCluster`, stopped on exit."""
    cluster = LocalRedisCluster(masters)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
