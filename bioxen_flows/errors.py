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


class InfrastructureError(BioXenError):
    """The XCP-ng pool or a guest failed in a way retrying will not cure."""


class TransientInfrastructureError(InfrastructureError):
    """A fault that retrying can cure (a lost connection, a busy host); never bad input."""
