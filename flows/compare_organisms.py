"""Deployment entrypoint: the scheduled multi-organism comparison (see prefect.yaml)."""

from bioxen_flows.orchestration.compare import compare_organisms

if __name__ == "__main__":
    compare_organisms()
