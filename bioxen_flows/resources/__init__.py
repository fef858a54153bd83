"""Resource management for bio-VMs."""

from bioxen_flows.resources.manager import BioResourceManager

__all__ = ["BioResourceManager"]
