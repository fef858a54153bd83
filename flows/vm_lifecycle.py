"""Deployment entrypoint: one bio-VM through its whole lifecycle (see prefect.yaml)."""

from bioxen_flows.orchestration.flows import vm_lifecycle

if __name__ == "__main__":
    vm_lifecycle()
