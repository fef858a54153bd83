"""How a command group adds its commands to `bioxen`.

`app.build_parser` hands a `Commands` to each group module's ``register``; the group adds
its commands (handler, help, options) and nests its subcommands, so a command is described
next to the code that runs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class Commands:
    """The subcommands of one parser (`bioxen` itself, or a command with subcommands)."""

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self._subparsers = subparsers

    def add(self, name: str, handler: Handler, help: str, *, description: str | None = None,
            json: bool = True, events: bool = False, **options: Any) -> argparse.ArgumentParser:
        """One command: `handler(args)` runs it and returns the exit code; `json` adds
        --json; `events`: it changes VMs, so it sends their events to Prefect when an API
        is configured."""
        sub = self._subparsers.add_parser(name, help=help, description=description or help,
                                          **options)
        sub.set_defaults(handler=handler, subparser=sub, sends_events=events)
        if json:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    def group(self, name: str, help: str, subcommands: tuple[str, ...]) -> Commands:
        """A command that only holds `subcommands` (`bioxen xcpng gc`): given alone it is a
        usage error; returns where its subcommands are added (dest ``<name>_command``)."""
        parent = self.add(name, needs_subcommand(*subcommands), help, json=False)
        return Commands.nested(parent, f"{name}_command")

    @staticmethod
    def nested(parent: argparse.ArgumentParser, dest: str, *,
               required: bool = False) -> Commands:
        """The subcommands of `parent` (`bioxen db status`); `dest` names the one given."""
        return Commands(parent.add_subparsers(dest=dest, metavar="SUBCOMMAND",
                                              required=required))


def needs_subcommand(*names: str) -> Handler:
    """The handler of a command given without its subcommand: a usage error (exit 2)."""

    def handler(args: argparse.Namespace) -> int:
        args.subparser.error(f"choose a subcommand: {' or '.join(names)}")
        return 2

    return handler
