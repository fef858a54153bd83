"""`bioxen interactive`: a menu session over the same library calls as the commands.

On a terminal questionary draws the menus; when stdin or stdout is not a TTY the session
falls back to plain numbered prompts read line by line, so it can be scripted
(`bioxen interactive < answers.txt`). VMs are re-read from the state store before every
action: another process may have changed them, and the store is the truth.

An XCP-ng password typed by hand is kept only in this process's environment, in the
variable named by `password_env`; it is never written to a config file or the store.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bioxen_flows.cli import output
from bioxen_flows.cli.commands import Commands
from bioxen_flows.errors import BioXenError, InputError

if TYPE_CHECKING:
    from rich.console import Console


Choices = list[tuple[str, str]]  # (value, title)
BACK = "<back>"  # not a valid VM id, so it cannot collide with one

MENU: Choices = [
    ("create", "Create a VM"),
    ("list", "List VMs"),
    ("attach", "Attach to a VM (run process lines)"),
    ("metrics", "Show a VM's metrics"),
    ("lifecycle", "Start, pause, resume or stop a VM"),
    ("destroy", "Destroy a VM"),
    ("performance", "Timings of this session"),
    ("exit", "Exit"),
]


class Prompter(Protocol):
    """Questions the session asks; None means the user gave up (Ctrl-C, Ctrl-D, end of input)."""

    def select(self, message: str, choices: Choices) -> str | None: ...
    def text(self, message: str, default: str = "") -> str | None: ...
    def password(self, message: str) -> str | None: ...
    def confirm(self, message: str, default: bool) -> bool | None: ...


class TerminalPrompter:
    """questionary prompts: arrow keys or the number shortcuts, hidden password input."""

    def select(self, message: str, choices: Choices) -> str | None:
        import questionary

        shortcuts = len(choices) <= 36  # questionary has 36 shortcut keys (1-9, a-z)
        return questionary.select(
            message, choices=[questionary.Choice(title, value) for value, title in choices],
            use_shortcuts=shortcuts, use_jk_keys=not shortcuts,
        ).ask()

    def text(self, message: str, default: str = "") -> str | None:
        import questionary

        return questionary.text(message, default=default).ask()

    def password(self, message: str) -> str | None:
        import questionary

        return questionary.password(message).ask()

    def confirm(self, message: str, default: bool) -> bool | None:
        import questionary

        return questionary.confirm(message, default=default).ask()


MAX_ANSWER_CHARS = 20_000  # one answer line (a process program is at most this long)


class PlainPrompter:
    """Numbered menus and line prompts on stdin/stdout, for pipes and scripts."""

    def __init__(self) -> None:
        self.echo = not sys.stdin.isatty()  # piped answers are shown, so the log reads well

    def _line(self, prompt: str, *, secret: bool = False) -> str | None:
        """One answer line; a line longer than MAX_ANSWER_CHARS is skipped (read in bounded
        pieces, never held whole) and the question asked again."""
        while True:
            sys.stdout.write(prompt)
            sys.stdout.flush()
            line = sys.stdin.readline(MAX_ANSWER_CHARS + 1)
            if len(line) <= MAX_ANSWER_CHARS or line.endswith("\n"):
                break
            while (rest := sys.stdin.readline(1 << 16)) and not rest.endswith("\n"):
                pass
            sys.stdout.write(f"\n  that answer is longer than {MAX_ANSWER_CHARS:,} characters; "
                             "please try again\n")
        if not line:
            sys.stdout.write("\n")
            return None
        line = line.rstrip("\r\n")
        if self.echo:
            sys.stdout.write(("" if secret else line) + "\n")
        return line

    def select(self, message: str, choices: Choices) -> str | None:
        print(message)
        for number, (_, title) in enumerate(choices, start=1):
            print(f"  {number}) {title}")
        while True:
            answer = self._line(f"choose 1-{len(choices)}: ")
            if answer is None:
                return None
            answer = answer.strip().lower()
            if re.fullmatch(r"[0-9]{1,6}", answer) and 1 <= int(answer) <= len(choices):
                return choices[int(answer) - 1][0]
            for value, title in choices:
                if answer in (value.lower(), title.lower()):
                    return value
            print(f"  please answer with a number from 1 to {len(choices)}")

    def text(self, message: str, default: str = "") -> str | None:
        answer = self._line(f"{message}{f' [{default}]' if default else ''}: ")
        if answer is None:
            return None
        return answer.strip() or default

    def password(self, message: str) -> str | None:
        # not getpass: it would read the controlling terminal, and scripts pipe their answers
        return self._line(f"{message}: ", secret=True)

    def confirm(self, message: str, default: bool) -> bool | None:
        while True:
            answer = self._line(f"{message} [{'Y/n' if default else 'y/N'}]: ")
            if answer is None:
                return None
            answer = answer.strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            print("  please answer y or n")


class Session:
    """The menu loop; every action is a method, errors are shown and the menu comes back."""

    def __init__(self, prompter: Prompter, out: Console) -> None:
        self.ask = prompter
        self.out = out

    def run(self) -> int:
        from bioxen_flows.state import bioxen_home

        self.out.print(f"BioXen interactive: bio-VMs in {bioxen_home()}", style="bold")
        actions = {
            "create": self.create, "list": self.list_vms, "attach": self.attach,
            "metrics": self.metrics, "lifecycle": self.lifecycle, "destroy": self.destroy,
            "performance": self.performance,
        }
        while True:
            choice = self.ask.select("What would you like to do?", MENU)
            if choice is None or choice == "exit":
                self.out.print("bye")
                return 0
            try:
                actions[choice]()
            except KeyboardInterrupt:
                self.out.print("cancelled")
            except (BioXenError, OSError) as exc:
                self.error(exc)  # bad input, unreadable files, an unreachable XCP-ng host

    def error(self, exc: BaseException) -> None:
        self.out.print(f"error: {output.error_text(exc)}", style="red")

    # ---- create --------------------------------------------------------------------------
    def create(self) -> None:
        from bioxen_flows.organisms.profiles import organism_profiles
        from bioxen_flows.vm import (
            create_bio_vm,
            infrastructure,
            infrastructure_names,
            list_bio_vms,
        )

        organism = self.ask.select("Organism", [
            (key, f"{key}: {p.name}, doubling ~{p.doubling_time_target_min:g} min")
            for key, p in organism_profiles().items()
        ])
        if organism is None:
            return
        taken = {vm["vm_id"] for vm in list_bio_vms()}
        suggestion = next(f"{organism}-{n}" for n in count(1) if f"{organism}-{n}" not in taken)
        vm_id = self.ask.text("VM id", default=suggestion)
        if not vm_id:
            return
        infra = self.ask.select("Infrastructure", [
            (name, f"{name}: {infrastructure(name).description}") for name in infrastructure_names()
        ])
        if infra is None:
            return
        needs_pool = infrastructure(infra).config_section is not None
        config = self._xcpng_config(organism) if needs_pool else None
        if needs_pool and config is None:
            return
        vm = create_bio_vm(vm_id, organism, infra, config)
        self.out.print(f"created VM {vm.vm_id} ({organism} on {infra})")
        if self.ask.confirm("Start it now?", True):
            vm.start()
        self.out.print(f"VM {vm.vm_id}: {vm.state}")

    def _answers(self, into: dict[str, Any], questions: tuple[tuple[str, str, str], ...]) -> bool:
        """Ask each (key, question, default) into `into`; False when the user backs out."""
        for key, question, default in questions:
            answer = self.ask.text(question, default=default)
            if answer is None:
                return False
            into[key] = answer
        return True

    def _xcpng_config(self, organism: str) -> dict[str, Any] | None:
        """XCP-ng settings from a config file or typed in; the password only goes to os.environ."""
        from bioxen_flows.config import ConfigManager

        source = self.ask.select("XCP-ng configuration", [
            ("file", "from a config file (JSON/YAML with xcpng_config)"),
            ("hand", "enter it by hand"),
        ])
        if source is None:
            return None
        manager = ConfigManager()
        if source == "file":
            path = self.ask.text("Config file")
            if not path:
                return None
            config = manager.load_from_file(Path(path).expanduser())
            config.pop("biological_type", None)
            config.pop("vm_type", None)
            if not config.get("xcpng_config"):
                raise InputError(f"{path} has no xcpng_config section")
            return config
        xcpng: dict[str, Any] = {}
        if not self._answers(xcpng, (
            ("url", "XAPI URL (https://...)", ""),
            ("username", "Username", "root"),
            ("password_env", "Environment variable for the password", "XCPNG_PASSWORD"),
        )):
            return None
        password = self.ask.password(f"Password (kept in ${xcpng['password_env']} "
                                     "for this session only)")
        if password is None or not self._answers(xcpng, (
            ("template", "Guest template", "bioxen-guest"),
            ("ssh_user", "SSH user in the guest", "bioxen"),
            ("ssh_key_path", "SSH private key", "~/.ssh/id_ed25519"),
            ("known_hosts_path", "known_hosts file (host keys are verified)", "~/.ssh/known_hosts"),
        )):
            return None
        config = {"xcpng_config": xcpng}
        ok, errors = manager.validate_config(config, "xcpng", organism)
        if not ok:
            raise InputError("invalid XCP-ng settings: " + "; ".join(errors))
        if password:
            os.environ[xcpng["password_env"]] = password
        return config

    # ---- inspect -------------------------------------------------------------------------
    def list_vms(self) -> None:
        from bioxen_flows.cli.vms import vms_table
        from bioxen_flows.vm import list_bio_vms

        vms = list_bio_vms()
        if vms:
            self.out.print(vms_table(vms))
        else:
            self.out.print("no VMs yet")

    def _pick(self, message: str) -> str | None:
        from bioxen_flows.vm import list_bio_vms

        vms = list_bio_vms()
        if not vms:
            self.out.print("no VMs yet: create one first")
            return None
        choice = self.ask.select(message, [
            *((vm["vm_id"], f"{vm['vm_id']} ({vm['biological_type']} on {vm['vm_type']}, "
                            f"{vm['state']})") for vm in vms),
            (BACK, "back"),
        ])
        return None if choice in (None, BACK) else choice

    def metrics(self, vm_id: str | None = None) -> None:
        from bioxen_flows.vm import load_bio_vm

        vm_id = vm_id or self._pick("Metrics of which VM?")
        if vm_id is None:
            return
        vm = load_bio_vm(vm_id)
        title = f"VM {vm_id} ({vm.get_biological_type()}, {vm.state})"
        self.out.print(output.key_values(title, output.metrics_rows(vm.get_biological_metrics())))

    def performance(self) -> None:
        from bioxen_flows.performance import performance_monitor

        stats = performance_monitor.stats()
        if not stats:
            self.out.print("nothing timed yet in this session")
            return
        self.out.print(output.table(
            "VM operations in this session", ("operation", "calls", "failures", "mean ms",
                                              "max ms"),
            [(name, s["calls"], s["failures"], f"{1000 * s['mean_seconds']:.1f}",
              f"{1000 * s['max_seconds']:.1f}") for name, s in stats.items()],
        ))

    # ---- act -----------------------------------------------------------------------------
    def attach(self) -> None:
        """A prompt that runs each line as a process program on the VM."""
        from bioxen_flows.engine.process_language import ALLOWED_CALLS
        from bioxen_flows.vm import load_bio_vm

        vm_id = self._pick("Attach to which VM?")
        if vm_id is None:
            return
        vm = load_bio_vm(vm_id)
        if vm.state != "running":
            verb = "resume" if vm.state == "paused" else "start"
            if not self.ask.confirm(f"VM {vm_id} is {vm.state}; {verb} it?", True):
                return
            getattr(vm, verb)()
        calls = ", ".join(sorted(ALLOWED_CALLS[vm.get_biological_type()]))
        help_text = (f"one process call per line, e.g. grow(minutes=60); calls: {calls}; "
                     "also: metrics, help, exit")
        self.out.print(f"attached to {vm_id} ({vm.get_biological_type()}): {help_text}")
        while True:
            line = self.ask.text(f"{vm_id}>")
            command = (line or "").strip()
            if line is None or command in ("exit", "quit", "detach"):
                self.out.print(f"detached from {vm_id}")
                return
            if not command:
                continue
            if command == "help":
                self.out.print(help_text)
            elif command == "metrics":
                self.metrics(vm_id)
            else:
                self._run_line(vm_id, command)

    def _run_line(self, vm_id: str, line: str) -> None:
        from bioxen_flows.vm import load_bio_vm

        try:
            summary = load_bio_vm(vm_id).execute_biological_process(line)["summary"]
        except InputError as exc:  # a bad line: the prompt stays
            self.error(exc)
            return
        proteins = summary.get("protein_molecules") or {}
        self.out.print(
            f"t = {output.number(summary['simulated_time_min'])} min, growth "
            f"{output.number(summary['growth_rate_per_min'])} 1/min, doubling "
            f"{output.doubling(summary['doubling_time_min'])}, ribosomes "
            f"{output.number(summary['ribosomes_total'])}, atp_percent "
            f"{output.number(summary['atp_percent'])} %"
            + (f", proteins: {output.per_gene(proteins)}" if proteins else "")
        )

    def lifecycle(self) -> None:
        from bioxen_flows.vm import load_bio_vm
        from bioxen_flows.vm.base import TRANSITIONS

        vm_id = self._pick("Which VM?")
        if vm_id is None:
            return
        vm = load_bio_vm(vm_id)
        possible = [action for action, moves in TRANSITIONS.items() if vm.state in moves]
        action = self.ask.select(f"VM {vm_id} is {vm.state}", [
            *((a, a) for a in possible), (BACK, "back"),
        ])
        if action in (None, BACK):
            return
        getattr(vm, action)()
        self.out.print(f"VM {vm_id}: {vm.state}")

    def destroy(self) -> None:
        from bioxen_flows.vm import load_bio_vm

        vm_id = self._pick("Destroy which VM?")
        if vm_id is None:
            return
        if not self.ask.confirm(f"Destroy {vm_id}? Its cell and record are deleted", False):
            return
        load_bio_vm(vm_id).destroy()
        self.out.print(f"VM {vm_id}: destroyed")


def run() -> int:
    """questionary on a terminal, plain prompts otherwise (scripts, pipes)."""
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    prompter: Prompter = TerminalPrompter() if terminal else PlainPrompter()
    return Session(prompter, output.console()).run()


def register(commands: Commands) -> None:
    commands.add("interactive", cmd_interactive,
                 "menu-driven session (plain prompts when not a TTY)", json=False)


def cmd_interactive(args: argparse.Namespace) -> int:
    return run()
