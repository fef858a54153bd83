"""A test bed of separate hosts on one Linux machine: network, mount and UTS namespaces.

Each "host" is a network namespace on a private bridge (its own address, reached over a
veth pair, never over loopback), and every process started on it runs in a mount namespace
of its own with a private tmpfs over the bed's root folder and its own host name. So two
hosts share no BIOXEN_HOME, model cache, result storage or Dask scratch space, and a process
on one cannot be seen as local by another (``processes.process_is_gone`` compares host
names). Services of the machine itself (PostgreSQL, a Prefect server) are reached through
TCP forwarders listening on the bridge's address, as a database behind its own host name
would be.

Needs root and ``ip`` (iproute2); `unavailable()` says why a machine cannot make one.

    with TestBed(root, hosts=["sched", "w1", "w2"]) as bed:
        db = bed.forward(5432)                  # "10.231.7.1:40123" -> 127.0.0.1:5432
        bed.start("sched", [python, "-m", "distributed.cli.dask_scheduler", ...])
        bed.link_down("w1", 10)                 # a network partition of one host

Run as ``python -m bioxen_flows.testing.multihost host ROOT NAME -- CMD...`` it is the
entry of a host's process: it mounts the tmpfs, sets the host name and execs CMD.
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BRIDGE_HOST = 1  # the machine's own address on the bridge: .1; hosts from .11 up


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (iproute2 / util-linux)"
    probe = f"bxprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")


class Forwarder:
    """A TCP forwarder: connections to ``listen`` are relayed to ``target`` (threads)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.address = self.server.getsockname()[:2]
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="bed-forward").start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                self._sockets.discard(s)
                s.close()

    def close(self) -> None:
        self._closing.set()
        self.server.close()
        for s in list(self._sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TestBed:
    """Hosts as namespaces on a private bridge; see the module docstring."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path, hosts: Sequence[str], subnet: str = "10.231.7") -> None:
        self.root = Path(root)
        self.hosts = list(hosts)
        self.subnet = subnet
        self.tag = "bx" + secrets.token_hex(2)  # interface names stay under 15 characters
        self.bridge = f"{self.tag}br"
        self.address = {host: f"{subnet}.{11 + i}" for i, host in enumerate(self.hosts)}
        self.gateway = f"{subnet}.{BRIDGE_HOST}"
        self.processes: dict[str, list[subprocess.Popen]] = {h: [] for h in self.hosts}
        self._forwarders: list[Forwarder] = []
        self._made: list[tuple[str, ...]] = []

    def netns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def __enter__(self) -> TestBed:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", "del", self.bridge))
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, host in enumerate(self.hosts):
                ns, outside = self.netns(host), f"{self.tag}v{i}"
                _ip("netns", "add", ns)
                self._made.append(("netns", "del", ns))
                _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._made.append(("link", "del", outside))
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("addr", "add", f"{self.address[host]}/24", "dev", "eth0", netns=ns)
                _ip("link", "set", "eth0", "up", netns=ns)
                _ip("link", "set", "lo", "up", netns=ns)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, port: int, target_host: str = "127.0.0.1") -> str:
        """Serve ``target_host:port`` of this machine on the bridge; returns ``addr:port``."""
        forwarder = Forwarder((self.gateway, 0), (target_host, port))
        self._forwarders.append(forwarder)
        return f"{forwarder.address[0]}:{forwarder.address[1]}"

    def start(self, host: str, command: Sequence[str], env: dict[str, str] | None = None,
              cpu: int | None = None, log: Path | None = None) -> subprocess.Popen:
        """Start ``command`` on ``host`` (its own session, so `kill_host` reaches the whole
        tree), optionally pinned to one CPU with taskset."""
        pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
        argv = ["ip", "netns", "exec", self.netns(host), "unshare", "--mount", "--uts",
                "--propagation", "private", *pinned, sys.executable, "-m", __name__, "host",
                str(self.root), self.netns(host), "--", *command]
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child's)
        try:
            process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.processes[host].append(process)
        return process

    def kill_host(self, host: str) -> None:
        """``kill -9`` of every process tree started on ``host``."""
        for process in self.processes[host]:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def link_down(self, host: str, seconds: float) -> None:
        """Take ``host``'s network link down for ``seconds`` (blocks), then up again."""
        _ip("link", "set", "eth0", "down", netns=self.netns(host))
        try:
            time.sleep(seconds)
        finally:
            _ip("link", "set", "eth0", "up", netns=self.netns(host))

    def close(self) -> None:
        for host in self.hosts:
            for process in self.processes[host]:
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        continue
            for process in self.processes[host]:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for forwarder in self._forwarders:
            forwarder.close()
        for args in reversed(self._made):
            subprocess.run(["ip", *args], capture_output=True)
        self._made.clear()


def bridged_url(url: str, address: str) -> str:
    """A database `url` with its host and port replaced by `address` (``host:port``, a
    forwarder on the bridge): the same database as the hosts reach it."""
    from sqlalchemy.engine import make_url

    host, port = address.rsplit(":", 1)
    return make_url(url).set(host=host, port=int(port)).render_as_string(hide_password=False)


class DaskHosts:
    """A Dask scheduler on one host of `bed` and workers on others, each worker a single
    thread whose environment holds only what a real worker host would be given: the state
    store's URL and the Prefect API's, homes inside its own tmpfs."""

    def __init__(self, bed: TestBed, scheduler: str, database_url: str, api_url: str,
                 port: int = 8786) -> None:
        self.bed = bed
        self.database_url = database_url
        self.api_url = api_url
        self.address = f"tcp://{bed.address[scheduler]}:{port}"
        bed.start(scheduler, [sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--host", bed.address[scheduler], "--port", str(port),
                              "--no-dashboard"], log=bed.root.parent / f"{scheduler}.log")

    def start_worker(self, host: str, cpu: int | None = None) -> None:
        root = self.bed.root
        env = {"BIOXEN_HOME": str(root / "home"), "HOME": str(root / "user"),
               "PREFECT_HOME": str(root / "prefect"), "BIOXEN_DATABASE_URL": self.database_url,
               "PREFECT_API_URL": self.api_url,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                          os.environ.get("PYTHONPATH")]))}
        self.bed.start(host, [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                              "--name", host, "--host", self.bed.address[host], "--nthreads",
                              "1", "--no-dashboard", "--local-directory", str(root / "dask")],
                       env=env, cpu=cpu, log=root.parent / f"{host}.log")

    def wait_for_workers(self, n: int, timeout: float = 120) -> dict[str, str]:
        """Block until exactly `n` workers are up; returns worker address -> host name."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout="30s") as client:
            while len(client.nthreads()) != n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n} Dask workers never joined {self.address}")
                time.sleep(0.5)
            return client.run(socket.gethostname)


def _host_main(root: Path, name: str, command: list[str]) -> None:
    """The entry of a host's process (already in its own mount and UTS namespaces)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", f"{name}-root", str(root)],
                   check=True)
    socket.sethostname(name)
    os.chdir(root)
    os.execvp(command[0], command)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bioxen_flows.testing.multihost")
    sub = parser.add_subparsers(dest="action", required=True)
    host = sub.add_parser("host", help="(internal) become a host's process and run CMD")
    host.add_argument("root", type=Path)
    host.add_argument("name")
    host.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _host_main(args.root, args.name, command)


if __name__ == "__main__":
    main()
