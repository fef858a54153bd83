"""Deployment entrypoint: a design-space sweep (organisms x promoter strength x copies)."""

from bioxen_flows.orchestration.sweep import sweep_design_space

if __name__ == "__main__":
    sweep_design_space(organisms=["ecoli", "syn3a"], strengths=[0.25, 1.0, 4.0],
                       copies=[1, 5, 20], hours=24.0)
