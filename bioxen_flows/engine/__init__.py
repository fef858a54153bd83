"""Bio-VM engine: the cell, its hypervisor, the process language and its execution."""

# The ribosome cap of a cell nobody capped: the default of `ribosome_cap` in
# model/weisse2015.ant (far above any cell, so 1 - (R/cap)^8 is exactly 1).
UNCAPPED_RIBOSOMES = 1e12
FULL_ATP_PERCENT = 100.0
