"""No database password printed in any URL form: a generated matrix of URL forms (userinfo
with an unescaped "@" or "%40", ``?password=``/``&sslpassword=`` query parameters,
``postgresql+psycopg://``/``+asyncpg://``, libpq key=value DSNs) x hosts (the local
PostgreSQL, which trusts and ignores the password, and the unreachable 127.0.0.1:1) x
commands (settings, doctor, db status, db backup), each a real in-process CLI run with
DEBUG logs; the password text never appears on stdout or stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioxen_flows import redaction, settings
from bioxen_flows.cli import main
from bioxen_flows.redaction import mask_url

PASSWORD = "Sekr3tPw9"
# (id, form): {pw} the password, {hostport}, {db}; each secret fragment must stay hidden
FORMS = {
    "userinfo": ("postgresql://postgres:{pw}@{hostport}/{db}", [PASSWORD]),
    "userinfo-psycopg": ("postgresql+psycopg://postgres:{pw}@{hostport}/{db}", [PASSWORD]),
    "unescaped-at": ("postgresql://postgres:Ab@{pw}@{hostport}/{db}", ["Ab@" + PASSWORD, PASSWORD]),
    "two-at": ("postgresql://postgres:x@y@{pw}@{hostport}/{db}", ["y@" + PASSWORD, PASSWORD]),
    "pct40": ("postgresql://postgres:Ab%40{pw}@{hostport}/{db}", [PASSWORD]),
    "query-first": ("postgresql://postgres@{hostport}/{db}?password={pw}", [PASSWORD]),
    "query-later": ("postgresql://postgres@{hostport}/{db}?connect_timeout=3&password={pw}",
                    [PASSWORD]),
    "sslpassword": ("postgresql://postgres@{hostport}/{db}?sslpassword={pw}&passfile=/nonexistent",
                    [PASSWORD]),
    "asyncpg": ("postgresql+asyncpg://postgres:{pw}@{hostport}/{db}", [PASSWORD]),
    "libpq-dsn": ("host=127.0.0.1 port=1 user=postgres password={pw} dbname={db}", [PASSWORD]),
    "libpq-quoted": ("host=127.0.0.1 password='{pw} x' dbname={db}", [PASSWORD]),
}
REACHABLE_OK = {"userinfo", "userinfo-psycopg", "pct40", "query-first", "query-later",
                "sslpassword"}  # trust auth ignores the password; these forms parse
HOSTS = {"reachable": None, "unreachable": "127.0.0.1:1"}
COMMANDS = {"settings": ["settings"], "settings-json": ["settings", "--json"],
            "doctor": ["doctor"], "db-status": ["db", "status"],
            "db-status-json": ["db", "status", "--json"], "db-backup": ["db", "backup"]}


@pytest.fixture(autouse=True)
def no_secrets_known_yet() -> None:
    """Each case starts as a fresh process would: no password registered by an earlier one."""
    redaction._secrets.clear()
    settings._cache.clear()  # read again, as at a process's start


def run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("command", COMMANDS, ids=str)
@pytest.mark.parametrize("host", HOSTS, ids=str)
@pytest.mark.parametrize("form", FORMS, ids=str)
def test_no_password_is_printed(form: str, host: str, command: str, capsys, monkeypatch,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    template, secrets = FORMS[form]
    if HOSTS[host] is None:
        base = request.getfixturevalue("postgres_url")  # postgresql://postgres@HOST:PORT/DB
        hostport, db = base.split("@", 1)[1].split("/", 1)
    else:
        hostport, db = HOSTS[host], "nothing"
    url = template.format(pw=PASSWORD, hostport=hostport, db=db)
    monkeypatch.setenv("BIOXEN_DATABASE_URL", url)
    monkeypatch.setenv("BIOXEN_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("COLUMNS", "400")  # no table wraps a password across lines
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    argv = COMMANDS[command] + ([str(tmp_path / "b.jsonl")] if command == "db-backup" else [])
    code, printed = run(capsys, argv)
    for secret in secrets:
        assert secret not in printed, printed
    if command.startswith("settings"):
        assert code == 0 and "***" in printed  # the URL is shown, masked
    elif form == "asyncpg" and command != "doctor":
        assert code == 1 and "unsupported BIOXEN_DATABASE_URL scheme" in printed
        assert "psycopg" in printed and len(printed.strip().splitlines()) == 1
    else:
        assert code in (0, 1)  # never an internal error (70)
    if host == "reachable" and command.startswith("db-") and form in REACHABLE_OK:
        assert code == 0  # the command worked, and printed its URL masked
        assert "***" in printed
    if command == "db-backup" and code == 0:
        assert PASSWORD not in (tmp_path / "b.jsonl").read_text()


@pytest.mark.parametrize("form", FORMS, ids=str)
def test_mask_url_hides_every_form(form: str) -> None:
    template, secrets = FORMS[form]
    url = template.format(pw=PASSWORD, hostport="db.example:5432", db="d")
    masked = mask_url(f"connection to {url} failed")
    assert all(secret not in masked for secret in secrets) and "***" in masked
    assert "db.example" in masked or "127.0.0.1" in masked  # the host stays, for the reader


@pytest.mark.parametrize("form", ["unescaped-at", "two-at", "query-later", "libpq-dsn"])
def test_a_fresh_process_prints_no_password(form: str, tmp_path: Path) -> None:
    """The same in a new `bioxen` process, with DEBUG logs on stderr."""
    import os
    import subprocess
    import sys

    template, secrets = FORMS[form]
    env = {**os.environ, "BIOXEN_HOME": str(tmp_path), "BIOXEN_LOG_LEVEL": "DEBUG",
           "BIOXEN_DATABASE_URL": template.format(pw=PASSWORD, hostport="127.0.0.1:1",
                                                  db="nothing")}
    run = subprocess.run([sys.executable, "-m", "bioxen_flows.cli", "db", "status"], env=env,
                         capture_output=True, encoding="utf-8", timeout=120)
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert all(secret not in run.stdout + run.stderr for secret in secrets), run.stderr
