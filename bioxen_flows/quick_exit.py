"""Ending a process without tearing the interpreter down module by module.

Freeing compiled models, numpy and Prefect module by module took ~0.4 s after every CLI
command and as long for every simulation worker when its pool shut down, with nothing
left to do: exit handlers (Prefect sending its last logs and events, a temporary server
stopping) have run by then."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable


def exit_after_handlers(code: Callable[[], int] = lambda: 0) -> None:
    """End the process with `code()` once every exit handler registered after this call
    has run. Call it early: handlers registered before it would be skipped."""
    atexit.register(_exit_now, code)


def _exit_now(code: Callable[[], int]) -> None:
    logging.shutdown()  # its own exit handler was registered earlier, so it would not run
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code())
