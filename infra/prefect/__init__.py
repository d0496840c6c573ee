"""Prefect server, worker and work pool helpers for a single machine."""
