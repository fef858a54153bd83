"""Bounded inputs (issue 23, item 7): user files size-checked before reading and never
blocking, interactive answers bounded, the guest agent always answering in JSON."""

from __future__ import annotations

import io
import itertools
import json
import sys

import pytest

from tests.helpers import RUNNING_SYN3A


# ---- user-named module files on every path that reads them -----------------------------------
def _sweep_read(path):
    from bioxen_flows.orchestration.sweep import _module_bytes

    return _module_bytes(str(path))


def _package_read(path):
    from bioxen_flows.model.packages import resolve_package

    return resolve_package(str(path))


def _xcpng_read(path):
    """The XCP-ng driver reads a module on the host before sending it to the guest."""
    from bioxen_flows.vm.guest import GuestHost

    return GuestHost.install(object.__new__(GuestHost), str(path), None)


READERS = {"sweep": _sweep_read, "package": _package_read, "xcpng": _xcpng_read}
BAD_FILES = ["fifo.ant", "dir.ant", "dir.xml", "zero.ant", "zero.xml", "urandom.ant",
             "loop.ant", "huge.ant", "huge.xml", "sparse.ant", "sparse.xml"]
FILE_CASES = list(itertools.product(READERS, BAD_FILES))


@pytest.fixture(scope="module")
def sparse_files(hostile_files):
    """Issue 23: `sweep --package big.ant` on a 1.5 GiB sparse file read 1.8 GB first."""
    for name in ("sparse.ant", "sparse.xml"):
        path = hostile_files / name
        if not path.exists():
            with open(path, "wb") as handle:
                handle.truncate(3 << 29)  # 1.5 GiB, sparse: costs no disk
    return hostile_files


@pytest.mark.parametrize(("reader", "name"), FILE_CASES)
def test_module_files_are_checked_before_reading(reader, name, sparse_files):
    from bioxen_flows.errors import InputError

    with pytest.raises(InputError) as info:
        READERS[reader](sparse_files / name)
    assert "\n" not in str(info.value)


# ---- bioxen interactive ----------------------------------------------------------------------
ODD_ANSWERS = ["²", "١", "٣", "½", "Ⅷ", "𝟚", "0", "9", "-1", "1e1", " ", "\x00", "١٢",
               "99999999999999999999", "x" * 30_000]


def _interactive(answers: str, capsys) -> tuple[int, str]:
    from bioxen_flows.cli import main

    old = sys.stdin
    sys.stdin = io.StringIO(answers)
    try:
        code = main(["interactive"])
    finally:
        sys.stdin = old
    return code, capsys.readouterr().out


@pytest.mark.parametrize("answer", ODD_ANSWERS, ids=[repr(a[:8]) for a in ODD_ANSWERS])
def test_an_invalid_menu_answer_is_asked_again(answer, capsys):
    """Issue 23: answering `²` ended the session; now it is not valid and asked again."""
    code, out = _interactive(f"{answer}\n2\n8\n", capsys)
    assert code == 0
    assert "please" in out  # the answer was refused, the question asked again
    assert out.rstrip().endswith("bye")
    assert "VMs" in out or "no VMs yet" in out  # the next answer (2: list) was carried out


def test_an_overlong_answer_line_is_skipped_not_held(capsys):
    code, out = _interactive("1" * 5_000_000 + "\n8\n", capsys)
    assert code == 0
    assert "longer than" in out
    assert out.rstrip().endswith("bye")


def test_an_overlong_line_in_attach_mode_is_skipped(capsys):
    code, out = _interactive(f"3\n{RUNNING_SYN3A}\n" + "g" * 100_000 + "\nexit\n8\n", capsys)
    assert code == 0
    assert "longer than" in out
    assert f"detached from {RUNNING_SYN3A}" in out


# ---- the guest agent -------------------------------------------------------------------------
def _nested(kind: str, depth: int) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


REQUESTS = (
    [(f"{kind}_{depth}", _nested(kind, depth))
     for kind in ("array", "object") for depth in (33, 200, 5_000, 200_000)]
    + [(f"{where}_{constant}", text.replace("{c}", constant))
       for constant in ("NaN", "Infinity", "-Infinity")
       for where, text in (
           ("caps", '{"operation": "create", "vm_id": "g1", "biological_type": "syn3a", '
                    '"resources": {"ribosomes": {c}, "atp_percent": {c}}}'),
           ("deadline", '{"operation": "metrics", "vm_id": "g1", "deadline_seconds": {c}}'),
           ("copies", '{"operation": "install", "vm_id": "g1", "package": "gfp_reporter", '
                      '"copies": {c}}'))]
    + [("oversized", '{"operation": "metrics", "vm_id": "' + "x" * 10_000_001 + '"}'),
       ("not_utf8_like", "\udcff"), ("empty", ""), ("garbage", "{{{"), ("list", "[1]"),
       ("number", "1e999999"), ("no_vm", '{"operation": "metrics"}'),
       ("unknown_vm", '{"operation": "metrics", "vm_id": "nope"}'),
       ("bad_operation", '{"operation": "rm", "vm_id": "' + RUNNING_SYN3A + '"}')]
)


@pytest.mark.parametrize("text", [t for _, t in REQUESTS], ids=[n for n, _ in REQUESTS])
def test_guest_answers_every_bad_request_with_a_json_error(text, capsys, store_dump):
    """Issue 23: the guest agent exited 70 with no JSON reply on deeply nested JSON or NaN."""
    from bioxen_flows.cli import main

    before = store_dump()
    old = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        code = main(["guest"])
    finally:
        sys.stdin = old
    out = capsys.readouterr().out
    reply = json.loads(out)
    assert code == 1
    assert reply["ok"] is False and reply["error"]
    assert len(reply["error"]) <= 500
    assert store_dump() == before
