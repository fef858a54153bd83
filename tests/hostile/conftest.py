"""The hostile-input corpus: one state store for the whole session, dumped around every case.

Every case must be refused (CLI: exit 1, one line on stderr, no traceback; API: a
`BioXenError`) and leave the store byte-for-byte as it was. The VMs (named in
tests/helpers.py) are created once; cases that would change them are exactly what the
corpus is there to catch.

`dump_store` (tests/helpers.py) is the one place that knows how the store is laid out: swap
it for the new store's dump when the state layer changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bioxen_flows.cli import main
from tests.helpers import (
    CREATED,
    PAUSED,
    RUNNING_ECOLI,
    RUNNING_SYN3A,
    WITH_GFP,
    dump_store,
)


@pytest.fixture(scope="session")
def hostile_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the corpus's VMs (created through the API once per session)."""
    home = tmp_path_factory.mktemp("hostile_home")
    old = os.environ.get("BIOXEN_HOME")
    os.environ["BIOXEN_HOME"] = str(home)
    try:
        from bioxen_flows.vm import create_bio_vm

        syn = create_bio_vm(RUNNING_SYN3A, "syn3a")
        syn.start()
        syn.execute_biological_process("grow(minutes=60)")
        eco = create_bio_vm(RUNNING_ECOLI, "ecoli")
        eco.start()
        eco.execute_biological_process('install("lac_operon")\ngrow(minutes=10)')
        gfp = create_bio_vm(WITH_GFP, "syn3a", config={"packages": ["gfp_reporter"]})
        gfp.start()
        paused = create_bio_vm(PAUSED, "minimal_cell")
        paused.start()
        paused.pause()
        create_bio_vm(CREATED, "syn3a")
    finally:
        if old is None:
            os.environ.pop("BIOXEN_HOME", None)
        else:
            os.environ["BIOXEN_HOME"] = old
    return home


@pytest.fixture(autouse=True)
def bioxen_home(hostile_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Overrides tests/conftest.py: every corpus case runs against the shared store."""
    monkeypatch.setenv("BIOXEN_HOME", str(hostile_home))
    return hostile_home


@pytest.fixture
def store_dump(hostile_home: Path) -> Callable[[], list[str]]:
    return lambda: dump_store(hostile_home)


@pytest.fixture
def refused_cli(
    capsys: pytest.CaptureFixture[str], store_dump: Callable[[], list[str]]
) -> Callable[..., str]:
    """Run `bioxen ARGV` in-process; assert exit 1, one stderr line, no traceback, no change."""

    def run(*argv: str, stdin: str | None = None) -> str:
        import io
        import sys

        before = store_dump()
        capsys.readouterr()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = main(list(argv))
        finally:
            sys.stdin = old_stdin
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 1, (argv, out[:500], err[:500])
        assert "Traceback" not in err
        assert len(lines) == 1, err
        assert lines[0].startswith("bioxen: error: "), err
        assert "internal error" not in lines[0], err
        assert store_dump() == before, f"store changed by {argv}"
        return lines[0]

    return run


@pytest.fixture
def refused_api(store_dump: Callable[[], list[str]]) -> Callable[[Callable[[], object]], str]:
    """Call `fn`; assert it raises a BioXenError and changes nothing in the store."""
    from bioxen_flows.errors import BioXenError

    def run(fn: Callable[[], object]) -> str:
        before = store_dump()
        with pytest.raises(BioXenError) as info:
            fn()
        assert store_dump() == before, "store changed"
        return str(info.value)

    return run


@pytest.fixture(scope="session")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for files that are not regular files (FIFOs, directories, devices)."""
    folder = tmp_path_factory.mktemp("hostile_files")
    for name in ("fifo.yaml", "fifo.json", "fifo.ant", "fifo.gb", "fifo.csv", "fifo.txt"):
        os.mkfifo(folder / name)
    for name in ("dir.yaml", "dir.json", "dir.ant", "dir.xml", "dir.gb", "dir.txt"):
        (folder / name).mkdir()
    for name in ("zero.yaml", "zero.json", "zero.ant", "zero.xml", "zero.gb", "zero.txt",
                 "zero.csv"):
        (folder / name).symlink_to("/dev/zero")
    for name in ("urandom.yaml", "urandom.ant"):
        (folder / name).symlink_to("/dev/urandom")
    for name in ("loop.yaml", "loop.ant", "loop.gb"):
        (folder / name).symlink_to(folder / name)
    for name, size in (("huge.yaml", 2 << 20), ("huge.json", 2 << 20), ("huge.ant", 1 << 20),
                       ("huge.xml", 2 << 20), ("huge.gb", 40 << 20), ("huge.txt", 1 << 20)):
        with open(folder / name, "wb") as handle:  # sparse: costs no disk
            handle.truncate(size)
    yield folder
