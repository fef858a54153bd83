#!/usr/bin/env bash
# One-shot setup of the BioXen deployments on a running Prefect server; safe to run again
# (after editing prefect.yaml, after an upgrade, or just twice):
#   1. the work pool `bioxen-process` (type process): created only if it does not exist
#   2. `prefect --no-prompt deploy --all` from the repository root (creates or updates the
#      deployments of prefect.yaml, with the cleanup-crashed-run trigger)
#   3. the automations of deployments/automations.yaml, created or updated by name
#   4. the global concurrency limit `bioxen-vms` (one slot per live VM of a flow; runs
#      wait for slots instead of failing), created with VM_SLOTS slots (default 100) only if
#      it does not exist: change it later with `prefect gcl update bioxen-vms --limit N`
#
# Needs PREFECT_API_URL (or a Prefect profile that sets it). BIOXEN_PROJECT_DIR, if set, is
# recorded in the deployments (see prefect.yaml). Usage: deployments/setup.sh
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefect_bin="${PREFECT_BIN:-prefect}"
python_bin="${PYTHON_BIN:-python3}"
pool="bioxen-process"

if "$prefect_bin" work-pool inspect "$pool" >/dev/null 2>&1; then
    echo "work pool $pool exists"
else
    "$prefect_bin" work-pool create "$pool" --type process
fi
(cd -- "$repo_dir" && "$prefect_bin" --no-prompt deploy --all)
"$python_bin" -m bioxen_flows.orchestration.automations "$repo_dir/deployments/automations.yaml"
if "$prefect_bin" gcl inspect bioxen-vms >/dev/null 2>&1; then
    echo "global concurrency limit bioxen-vms exists"
else
    "$prefect_bin" gcl create bioxen-vms --limit "${VM_SLOTS:-100}"
fi
