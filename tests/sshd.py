"""A real SSH server on loopback in which the guest command really runs (asyncssh).

It behaves like an OpenSSH server with a locked-down account: one user, one authorized key,
a fresh ed25519 host key, and exec requests run WITHOUT a shell (`shlex.split`, then a fixed
program map), so a test can see exactly which command line arrived. The production client
cannot tell it from a real guest.

`kill_on_hangup=False` behaves like OpenSSH without a pty: a client that hangs up leaves the
guest process running to its end. `reachable(address)` (e.g. the XAPI simulator's
`guest_reachable`) decides whether a guest exists at the address the client dialled; when
it says no, the connection is dropped before authentication, as for a VM that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import asyncssh

USERNAME = "bioxen"


def write_key_pair(private_path: Path) -> asyncssh.SSHKey:
    """A new ed25519 key: private key at `private_path` (0600), public key next to it."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(private_path))
    private_path.chmod(0o600)
    private_path.with_name(private_path.name + ".pub").write_bytes(key.export_public_key())
    return key


class _Server(asyncssh.SSHServer):
    """Public-key auth only, for one user and one key."""

    def __init__(self, owner: GuestSSHServer) -> None:
        self.owner = owner
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.owner._connections.add(conn)
        address = conn.get_extra_info("sockname")[0]
        refuse = self.owner.refuse_connections > 0
        self.owner.refuse_connections -= refuse
        reachable = self.owner.reachable
        if refuse or (reachable is not None and not reachable(address)):
            # an injected fault, or no guest at this address (its VM is gone): the client
            # sees the connection drop before the SSH handshake, as with a dead host
            asyncio.get_running_loop().call_soon(conn.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        self.owner.auth_attempts.append(username)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == USERNAME and key.public_data == self.owner._client_key.public_data


class GuestSSHServer:
    """Context manager: an SSH server on 127.0.0.1 with its own event loop in a thread."""

    def __init__(
        self,
        tmp_dir: Path,
        guest_env: dict[str, str] | None = None,
        program_map: dict[str, list[str]] | None = None,
        *,
        kill_on_hangup: bool = True,
        reachable: Callable[[str], bool] | None = None,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(guest_env or {})}
        self.program_map = program_map or {"bioxen": [sys.executable, "-m", "bioxen_flows"]}
        self.username = USERNAME
        self.kill_on_hangup = kill_on_hangup
        self.reachable = reachable
        # the next N guest runs finish, but their connection drops before the reply is sent
        self.lose_replies = 0
        self.refuse_connections = 0  # the next N connections drop before authentication
        self.commands: list[str] = []
        self.auth_attempts: list[str] = []  # usernames that began authentication
        self._host_key = write_key_pair(self.tmp_dir / "ssh_host_ed25519_key")
        self.client_key_path = self.tmp_dir / "client_ed25519_key"
        self._client_key = write_key_pair(self.client_key_path)
        self.host_key_line = self._host_key.export_public_key().decode("ascii").strip()
        self.host_fingerprint = self._host_key.get_fingerprint("sha256")
        self.known_hosts_path = self.tmp_dir / "known_hosts"
        self.port = 0
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._handlers: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def __enter__(self) -> GuestSSHServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        self.known_hosts_path.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        self._acceptor = await asyncssh.create_server(
            lambda: _Server(self),
            "127.0.0.1",
            0,
            server_host_keys=[self._host_key],
            process_factory=self._handle,
            encoding=None,
        )
        self.port = self._acceptor.get_port()

    async def _stop(self) -> None:
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        assert self._acceptor is not None
        self._acceptor.close()
        await self._acceptor.wait_closed()
        for conn in list(self._connections):
            conn.close()
            await conn.wait_closed()
        if self._handlers:  # let each handler reap its guest process before the loop stops
            await asyncio.wait(self._handlers, timeout=10)

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        """Run an exec request like sshd without a shell, and never outlive the channel."""
        command = process.command or ""
        self.commands.append(command)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        program = self.program_map.get(argv[0]) if argv else None
        if program is None:
            name = argv[0] if argv else command
            process.stderr.write(f"sshd: {name}: command not found\n".encode())
            process.exit(127)
            return
        proc = await asyncio.create_subprocess_exec(
            *program,
            *argv[1:],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._procs.add(proc)
        lose_reply = self.lose_replies > 0
        self.lose_replies -= lose_reply
        feeding = asyncio.ensure_future(_feed_stdin(process, proc))
        running = asyncio.ensure_future(_pump_output(process, proc, deliver=not lose_reply))
        closed = asyncio.ensure_future(process.channel.wait_closed())
        try:
            await asyncio.wait({running, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done() and self.kill_on_hangup:  # the client hung up: stop it
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            code = await running
            if lose_reply:  # the guest did its work; the client never hears of it
                process.channel.get_connection().abort()
                return
            process.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128+N
        finally:
            feeding.cancel()
            closed.cancel()
            self._procs.discard(proc)


async def _feed_stdin(process: asyncssh.SSHServerProcess, proc: asyncio.subprocess.Process) -> None:
    """Channel stdin → process stdin, closing it at the client's EOF."""
    assert proc.stdin is not None
    try:
        while data := await process.stdin.read(65536):
            proc.stdin.write(data)
            await proc.stdin.drain()
    except (OSError, asyncssh.Error):
        pass  # the guest stopped reading, or the client left; the exit status tells
    finally:
        proc.stdin.close()


async def _pump_output(
    process: asyncssh.SSHServerProcess, proc: asyncio.subprocess.Process, deliver: bool = True
) -> int:
    """Process stdout/stderr → channel, both at once and fully, then the exit code.

    If the channel goes away the output is still read (and dropped) to the end, so the guest
    never blocks on a full pipe and `proc.wait()` can finish.
    """
    assert proc.stdout is not None and proc.stderr is not None

    async def copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
        open_ = deliver
        while data := await source.read(65536):
            if open_:
                try:
                    sink.write(data)
                    await sink.drain()
                except (OSError, asyncssh.Error):
                    open_ = False

    await asyncio.gather(copy(proc.stdout, process.stdout), copy(proc.stderr, process.stderr))
    return await proc.wait()
