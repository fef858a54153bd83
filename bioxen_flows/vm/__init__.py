"""Bio-VMs: the factory, the abstract interface and the `basic` infrastructure."""

from bioxen_flows.organisms.profiles import get_supported_biological_types
from bioxen_flows.vm.base import BiologicalVM
from bioxen_flows.vm.factory import (
    create_bio_vm,
    destroy_labelled_vms,
    force_destroy_vm,
    get_supported_vm_types,
    list_bio_vms,
    load_bio_vm,
)

__all__ = [
    "BiologicalVM",
    "create_bio_vm",
    "destroy_labelled_vms",
    "force_destroy_vm",
    "get_supported_biological_types",
    "get_supported_vm_types",
    "list_bio_vms",
    "load_bio_vm",
]
