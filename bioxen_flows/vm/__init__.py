"""Bio-VMs: the factory, the one VM class and the registry of infrastructures."""

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
from bioxen_flows.vm.infrastructures import infrastructure, infrastructure_names

__all__ = [
    "BiologicalVM",
    "create_bio_vm",
    "destroy_labelled_vms",
    "force_destroy_vm",
    "get_supported_biological_types",
    "get_supported_vm_types",
    "infrastructure",
    "infrastructure_names",
    "list_bio_vms",
    "load_bio_vm",
]
