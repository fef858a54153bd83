"""Log lines for people (text) or for log pipelines (JSON), with secrets masked.

Every JSON line carries the VM it is about (``vm_id``, set by `vm_context` around VM
operations) and the Prefect flow run (``flow_run_id``) when there is one. Known secrets — the
password in ``BIOXEN_DATABASE_URL``, the XCP-ng password once read — are replaced by ``***``
in every line, on the console and in what Prefect ships to its API.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from bioxen_flows.redaction import redact, register_secret
from bioxen_flows.run_identity import current_flow_run_id

_vm_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("bioxen_vm_id", default=None)


@contextmanager
def vm_context(vm_id: str) -> Iterator[None]:
    """Lines logged inside carry ``vm_id``."""
    token = _vm_id.set(vm_id)
    try:
        yield
    finally:
        _vm_id.reset(token)


class RedactingFilter(logging.Filter):
    """Masks known secrets in the record's message (and its arguments, once formatted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, vm_id, flow_run_id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "vm_id": getattr(record, "vm_id", None) or _vm_id.get(),
            "flow_run_id": str(getattr(record, "flow_run_id", None) or current_flow_run_id()
                               or "") or None,
        }
        task_run_id = getattr(record, "task_run_id", None)
        if task_run_id:
            entry["task_run_id"] = str(task_run_id)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``bioxen: warning: message``, the CLI's own voice for what the library logs."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"bioxen: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def _handler_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def quiet_numerical_libraries() -> None:
    """libroadrunner's console log and SUNDIALS' logger (CVODE warnings go to stdout,
    errors to stderr) would print ahead of bioxen's own output, into `--json` too; what
    they say reaches the user in the exception bioxen reports. Set SUNLOGGER_ERROR_FILENAME
    or SUNLOGGER_WARNING_FILENAME (e.g. to stderr) to see SUNDIALS' messages again."""
    import roadrunner

    for variable in ("SUNLOGGER_ERROR_FILENAME", "SUNLOGGER_WARNING_FILENAME"):
        os.environ.setdefault(variable, os.devnull)  # read when an integrator is made
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_CRITICAL)


# Prefect reads these when it sets its logging up (on import, in this process and in every
# flow-run and worker process started from it): its console handler then writes our JSON
# lines from its first line ("Starting temporary server ...", "Beginning flow run ...")
PREFECT_JSON_ENV = {
    "PREFECT_LOGGING_FORMATTERS_JSON_CLASS": "bioxen_flows.logs.JsonFormatter",
    "PREFECT_LOGGING_FORMATTERS_JSON_FORMAT": "%(message)s",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER": "json",
}


def notice(message: str) -> None:
    """A line for the person at the terminal (stderr), whatever the log level: as is, or
    as a JSON record when the log format is JSON (so that stderr stays all JSON)."""
    if os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER") == "json":
        record = logging.makeLogRecord({"name": "bioxen_flows", "levelname": "INFO",
                                        "levelno": logging.INFO, "msg": message})
        message = JsonFormatter().format(record)
    print(message, file=sys.stderr)


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """BioXen's own loggers to stderr in ``log_format`` (default: the settings'); Prefect's
    console lines in the same format, from its first (see PREFECT_JSON_ENV); secrets
    masked everywhere. Safe to call again."""
    from bioxen_flows.settings import get_settings

    settings = get_settings()
    log_format = log_format or settings.log_format
    for variable, value in PREFECT_JSON_ENV.items():
        if log_format == "json":
            os.environ[variable] = value
        elif os.environ.get(variable) == value:  # ours: back to Prefect's text lines
            del os.environ[variable]
    register_secret(_database_password(settings.database_url))
    ours = logging.getLogger("bioxen_flows")
    ours.setLevel(level or settings.log_level)
    handler = next((h for h in ours.handlers if getattr(h, "_bioxen", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._bioxen = True  # type: ignore[attr-defined]
        handler.addFilter(RedactingFilter())
        ours.addHandler(handler)
        ours.propagate = False
    handler.stream = sys.stderr  # the current one (a CLI run in-process, tests); no flush
    handler.setFormatter(_handler_formatter(log_format))
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for prefect_handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in prefect_handler.filters):
                prefect_handler.addFilter(RedactingFilter())
            console = getattr(prefect_handler, "console", None)  # Prefect's rich console
            if console is not None and getattr(console.file, "closed", False):
                console.file = sys.stderr  # its stream closed (a finished in-process CLI run)
            if not isinstance(prefect_handler, logging.StreamHandler):
                continue
            original = getattr(prefect_handler, "_bioxen_original", None)
            if log_format == "json":
                if original is None:
                    prefect_handler._bioxen_original = prefect_handler.formatter  # type: ignore[attr-defined]
                prefect_handler.setFormatter(JsonFormatter())
            elif original is not None:  # back to Prefect's own text lines
                prefect_handler.setFormatter(original)


def _database_password(url: str | None) -> str | None:
    if not url:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError:
        return None
