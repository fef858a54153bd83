"""BioXen Flows: biological virtual machines on a validated whole-cell model.

Importing the package is cheap; the engine (libroadrunner) loads on first use.
"""

__version__ = "0.1.0"
