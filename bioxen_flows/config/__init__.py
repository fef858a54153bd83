"""Bio-VM configuration: pydantic schema plus loading, saving, validation and templates."""

from bioxen_flows.config.manager import ConfigFileError, ConfigManager
from bioxen_flows.config.models import VMConfig

__all__ = ["ConfigFileError", "ConfigManager", "VMConfig"]
