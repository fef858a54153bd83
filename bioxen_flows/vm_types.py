"""The names of the infrastructures a bio-VM runs on, at the bottom of the layers.

The config, the state store and the CLI check a ``vm_type`` against these names without
importing the VM layer; what each infrastructure is and does lives in
`bioxen_flows.vm.infrastructures`, which asserts that it covers exactly these.
"""

from __future__ import annotations

VM_TYPES: tuple[str, ...] = ("basic", "xcpng")
