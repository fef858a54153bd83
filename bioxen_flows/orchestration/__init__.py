"""Prefect tasks and flows (the only layer that imports Prefect)."""
