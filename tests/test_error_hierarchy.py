"""The API raises its own error hierarchy (bioxen_flows/errors.py), never a bare builtin.

The CLI maps `BioXenError` and `OSError` to exit 1 and treats anything else as a bug
(exit 70; BIOXEN_DEBUG=1 shows the traceback). So a `raise ValueError(...)` in product code is
either a user's bad input reported as a crash, or a bug class the CLI cannot tell apart.
This test reads every module and fails on a builtin raise outside the few allowed below.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from bioxen_flows import errors

PACKAGE = Path(errors.__file__).parent
# Builtins a raise may still use, and why.
ALLOWED = {
    "AttributeError",  # `__getattr__` of a module or class: Python's protocol
    "KeyboardInterrupt",  # a signal handler turns SIGTERM into what Ctrl-C raises
    "SystemExit",  # the CLI's exit codes
    "StopIteration", "GeneratorExit",
    "OSError", "TimeoutError", "FileNotFoundError", "PermissionError",  # the CLI's exit 1
    "NotImplementedError",  # abstract methods of a Protocol/base, never a documented path
}
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}


def _builtin_raises(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue  # a bare `raise` re-raises what was caught
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = target.id if isinstance(target, ast.Name) else None
        if name in BUILTIN_ERRORS and name not in ALLOWED:
            found.append(f"{path.relative_to(root)}:{node.lineno}: raise {name}")
    return found


def test_product_code_raises_only_bioxen_errors() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.parts]
    assert len(modules) > 50
    found = [line for path in sorted(modules) for line in _builtin_raises(path)]
    assert found == [], "builtin raises in product code:\n" + "\n".join(found)


def test_the_scan_finds_a_builtin_raise(tmp_path: Path) -> None:
    """The check above can fail: a planted raise is found, a re-raise and an allowed one not."""
    module = tmp_path / "planted.py"
    module.write_text("def f(x):\n    try:\n        g()\n    except OSError:\n        raise\n"
                      "    if x:\n        raise ValueError('bad')\n"
                      "    raise TimeoutError('slow')\n")
    assert _builtin_raises(module, tmp_path) == ["planted.py:7: raise ValueError"]


@pytest.mark.parametrize("name", ["XapiError", "GuestAuthError", "HostKeyMismatchError",
                                  "GuestError"])
def test_infrastructure_errors_are_not_bad_input(name: str) -> None:
    """`except ValueError` (bad input, a VM destroyed under us) must not swallow a pool or
    SSH authentication failure."""
    cls = getattr(errors, name)
    assert issubclass(cls, errors.InfrastructureError)
    assert not issubclass(cls, (ValueError, RuntimeError))


def test_every_error_is_a_bioxen_error() -> None:
    classes = [v for v in vars(errors).values() if isinstance(v, type)
               and issubclass(v, BaseException)]
    assert len(classes) > 10 and all(issubclass(c, errors.BioXenError) for c in classes)
