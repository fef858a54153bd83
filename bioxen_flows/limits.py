"""Every bound BioXen Flows puts on what a user gives it, in one place.

Each number here is checked where input enters (the process language, configs, flow
parameters, design spaces, snapshots, backups); those checks read it from here, so a
bound is changed once. Sizes of files and requests are bounds too: they keep a hostile
input from exhausting memory before it is refused.
"""

from __future__ import annotations

import re

# ---- a genetic package installed into a cell ----------------------------------------------
MIN_COPIES = 1
MAX_COPIES = 1_000  # gene copies of one package in one cell
MAX_STRENGTH = 1_000.0  # promoter strength multiplier, relative to the package's own

# ---- the cell's environment and randomness -------------------------------------------------
MAX_NUTRIENT = 1e9  # external nutrient s0, molecules per cell (the paper's medium is 1e4)
MAX_SEED = 2**63 - 1  # libroadrunner's Gillespie seed is a 64-bit integer
MAX_DRAWN_SEED = 2**31 - 1  # a base seed drawn for a run; replicate r uses base + r

# ---- a run ---------------------------------------------------------------------------------
MAX_HOURS = 168.0  # simulated hours one cell grows in a comparison or sweep (one week)
MAX_REPLICATES = 100
MAX_STOCHASTIC_SWEEP_HOURS = 24.0  # a stochastic sweep point (exact SSA is costly)
MAX_WORKERS = 256  # worker processes of one comparison or sweep

# ---- a process program ---------------------------------------------------------------------
MAX_GROW_MINUTES = 10_080  # one grow() call: one week
# all grow() calls of one program: ten weeks of deterministic time cost well under a
# second; Gillespie steps are far dearer per minute (docs/api.md, Limits)
MAX_PROGRAM_MINUTES = 100_800
MAX_PROGRAM_MINUTES_STOCHASTIC = 1_440  # a Gillespie cell's program: one day

# ---- names ---------------------------------------------------------------------------------
VM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a quota user (the store's owner)
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")  # a gene, species or package id
