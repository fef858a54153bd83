"""Identities of local processes that survive pid reuse: what gc and leases use to tell
that the process which owned a VM or a lease is gone (``kill -9`` included)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its ')'
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start`` of this (or a given) process."""
    pid = os.getpid() if pid is None else pid
    return f"{HOST}:{pid}:{_start_ticks(pid) or '-'}"


def process_is_gone(identity: str | None) -> bool:
    """True when ``identity`` names a process of this host that no longer runs (its pid is
    free, or now belongs to a process started at another time); False when it runs, or
    when it is another host's or unreadable (we cannot know, so we assume it lives)."""
    if not identity:
        return False
    host, _, rest = identity.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    current = _start_ticks(pid)
    return bool(start) and start != "-" and current is not None and current != start
