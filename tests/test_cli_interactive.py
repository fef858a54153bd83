"""`bioxen interactive` driven as a person would: through a pseudo-terminal (questionary
menus, keys sent with pexpect), and as a script would: answers piped on stdin.

Between steps another `bioxen` process reads the state store, so the session's VMs are
real, shared VMs and not objects living in the session.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def vms() -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "bioxen_flows", "list", "--json"],
                         capture_output=True, encoding="utf-8", timeout=60, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def spawn() -> tuple[pexpect.spawn, io.StringIO]:
    """`bioxen interactive` on a pseudo-terminal, with everything it prints recorded."""
    # no cursor-position requests: pexpect is not a terminal that answers them
    env = {**os.environ.copy(), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    child = pexpect.spawn(sys.executable, ["-m", "bioxen_flows", "interactive"], env=env,
                          encoding="utf-8", timeout=30, dimensions=(50, 160))
    child.logfile_read = log = io.StringIO()
    return child, log


def select(child: pexpect.spawn, message: str, key: str) -> None:
    """Pick a menu entry by its shortcut, once the menu is active (an answered menu is
    redrawn as one line without the hint, so it cannot be mistaken for the next one)."""
    child.expect(re.escape(message) + r"[^\n]{0,80}\(Use shortcuts")
    child.send(key + "\r")


def reply(child: pexpect.spawn, prompt: str, keys: str) -> None:
    child.expect_exact(prompt)
    child.send(keys)


def run_line(child: pexpect.spawn, vm_id: str, line: str, result: str) -> None:
    """Type a process line at the VM prompt and wait for its result."""
    reply(child, f"{vm_id}>", line + "\r")
    child.expect_exact(result)


def transcript(log: io.StringIO) -> str:
    return ANSI.sub("", log.getvalue())


def test_create_run_metrics_destroy_session_through_a_pty():
    child, log = spawn()
    try:
        select(child, "What would you like to do?", "1")        # Create a VM
        select(child, "Organism", "2")                           # ecoli
        reply(child, "VM id", "\x15lab-e\r")                     # clear the suggestion
        select(child, "Infrastructure", "1")                     # basic
        reply(child, "Start it now?", "y")
        child.expect_exact("VM lab-e: running")
        assert [(v["vm_id"], v["state"]) for v in vms()] == [("lab-e", "running")]

        select(child, "What would you like to do?", "3")        # Attach
        select(child, "Attach to which VM?", "1")
        run_line(child, "lab-e", 'install("lac_operon")', "t = 0 min")
        run_line(child, "lab-e", 'manage_operons(["lac"], "induce")', "t = 0 min")
        run_line(child, "lab-e", "grow(minutes=60)", "t = 60 min")
        run_line(child, "lab-e", "start_transcription(['x'])",   # not an ecoli call
                 "error: line 1: 'start_transcription' is not available for ecoli")
        assert vms()[0]["simulated_time_min"] == pytest.approx(60)  # another process sees it
        run_line(child, "lab-e", "exit", "detached from lab-e")

        select(child, "What would you like to do?", "4")        # Metrics
        select(child, "Metrics of which VM?", "1")
        child.expect_exact("lac induced")
        select(child, "What would you like to do?", "2")        # List
        child.expect(r"lab-e\s+ecoli\s+basic\s+running")
        select(child, "What would you like to do?", "6")        # Destroy
        select(child, "Destroy which VM?", "1")
        reply(child, "Destroy lab-e?", "y")
        child.expect_exact("VM lab-e: destroyed")
        select(child, "What would you like to do?", "8")        # Exit
        child.expect(pexpect.EOF)
    finally:
        child.close()
    text = transcript(log)
    assert child.exitstatus == 0, text
    assert "lacZ" in text and "doubling time" in text and "Traceback" not in text
    assert vms() == []


def test_xcpng_by_hand_keeps_the_password_hidden_and_out_of_the_store(bioxen_home: Path):
    """The typed password is shown as stars, never printed, never stored."""
    password = "pw-Zq81-never-shown"
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    child, log = spawn()
    try:
        select(child, "What would you like to do?", "1")
        select(child, "Organism", "1")
        reply(child, "VM id", "\r")
        select(child, "Infrastructure", "2")                     # xcpng
        select(child, "XCP-ng configuration", "2")               # by hand
        reply(child, "XAPI URL", url + "\r")
        reply(child, "Username", "\r")
        reply(child, "Environment variable for the password", "\x15BIOXEN_TEST_PW\r")
        reply(child, "Password (kept in $BIOXEN_TEST_PW", password + "\r")
        for prompt in ("Guest template", "SSH user", "SSH private key", "known_hosts file"):
            reply(child, prompt, "\r")
        child.expect_exact("error: cannot reach XAPI at " + url)  # the session goes on
        select(child, "What would you like to do?", "8")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    text = transcript(log)
    assert child.exitstatus == 0, text
    assert password not in text and "*" * len(password) in text
    assert vms() == []
    for path in bioxen_home.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_piped_answers_script_a_session():
    """Not a TTY: numbered menus and line prompts, scriptable end to end."""
    answers = "\n".join([
        "1", "syn3a", "cell-a", "basic", "n",   # create (names work as well as numbers)
        "5", "1", "1",                          # lifecycle: start
        "3", "1", 'install("gfp_reporter")', "grow(minutes=30)", "grow(", "metrics", "exit",
        "6", "1", "n",                          # destroy, but answer no
        "2",                                    # list: still there
        "6", "1", "y",                          # destroy
        "9", "8",                               # an invalid choice, then exit
    ]) + "\n"
    run = subprocess.run([sys.executable, "-m", "bioxen_flows", "interactive"], input=answers,
                         capture_output=True, encoding="utf-8", timeout=120, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "created VM cell-a (syn3a on basic)" in out and "VM cell-a: created" in out
    assert "VM cell-a: running" in out
    assert "t = 30 min" in out and "proteins: gfp" in out
    assert "error: line 1: not a valid call" in out
    listed = re.search(r"cell-a +syn3a +basic", out)
    assert listed is not None, out
    assert out.index("Destroy cell-a?") < listed.start() < out.index("VM cell-a: destroyed")
    assert "please answer with a number from 1 to 8" in out
    assert out.rstrip().endswith("bye")
    assert vms() == []


def test_end_of_input_ends_the_session_cleanly():
    run = subprocess.run([sys.executable, "-m", "bioxen_flows", "interactive"], input="1\n",
                         capture_output=True, encoding="utf-8", timeout=60, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert "Organism" in run.stdout and run.stdout.rstrip().endswith("bye")
    assert vms() == []
