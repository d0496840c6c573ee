"""Thin Prefect task wrappers, one module per stage."""
