"""The one error hierarchy of BioXen Flows.

The API raises these; the CLI maps them to exit codes in one place. Bad input is an
`InputError` (also a `ValueError`, so callers that catch ``ValueError`` keep working);
a lost race is a `ConflictError`; a refused allocation a `BudgetError`; a fault of the
XCP-ng pool or the guest an `InfrastructureError`, retryable when transient.
"""

from __future__ import annotations


class BioXenError(Exception):
    """Base of every error BioXen Flows raises on purpose."""


class InputError(BioXenError, ValueError):
    """A bad argument, config, program, module or file: refused before anything changes."""


class NotFoundError(InputError):
    """No such VM (or other named thing)."""


class ConflictError(BioXenError):
    """Another caller changed the VM first (its version or state moved on): nothing was written."""


class BudgetError(InputError):
    """An allocation or creation would exceed the host budget or an owner's quota."""


class StoreError(BioXenError):
    """The state store is unreachable, damaged or at a schema this version cannot use."""


class CheckFailed(BioXenError):
    """A `bioxen doctor` check found this installation unable to do its job."""


class InfrastructureError(BioXenError):
    """The XCP-ng pool or a guest failed in a way retrying will not cure."""


class TransientInfrastructureError(InfrastructureError):
    """A fault that retrying can cure (a lost connection, a busy host); never bad input."""


# ---- XCP-ng: the pool (XAPI) and the guest (SSH) ------------------------------------------
class XapiError(InfrastructureError):
    """A permanent XAPI failure: retrying will not help; the message says what to fix."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class GuestError(InfrastructureError):
    """The guest command ran and failed (or replied with something that is not a result)."""

    def __init__(self, message: str, exit_status: int | None, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status
        self.stderr = stderr


class GuestTimeoutError(GuestError):
    """The guest did not answer within the command timeout; the guest abandons the request
    at its own deadline, so nothing it was asked to do is committed after that."""


class GuestConnectionError(TransientInfrastructureError):
    """The SSH connection failed or dropped (refused, timed out, reset): worth retrying."""


class HostKeyMismatchError(InfrastructureError):
    """The server's host key is unknown or wrong: permanent, never retried, never accepted."""


class GuestAuthError(InfrastructureError):
    """The server refused our key: permanent until the configuration changes."""
