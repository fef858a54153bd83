"""Shell completion: the `bioxen completion` command and the completers of VM ids and
organisms that other commands attach to their arguments (argcomplete calls them)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bioxen_flows.cli.commands import Commands


def vm_ids(prefix: str, **_: Any) -> list[str]:
    """VM ids from the state store (reads SQLite, builds no cell)."""
    from bioxen_flows.vm import list_bio_vms

    return [vm["vm_id"] for vm in list_bio_vms() if vm["vm_id"].startswith(prefix)]


def organisms(prefix: str, **_: Any) -> list[str]:
    """Organisms of organisms/profiles.yaml."""
    from bioxen_flows.organisms.profiles import get_supported_biological_types

    return [o for o in get_supported_biological_types() if o.startswith(prefix)]


def register(commands: Commands) -> None:
    completion = commands.add("completion", cmd_completion,
                              "print a shell completion script (bash, zsh, fish)", json=False)
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))


def cmd_completion(args: argparse.Namespace) -> int:
    """The argcomplete hook for `bioxen`; eval it in the shell's startup file."""
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["bioxen"], shell=args.shell))
    return 0
