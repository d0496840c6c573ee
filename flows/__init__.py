"""Prefect flows: control flow only."""
