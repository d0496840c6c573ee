"""Adapters to outside systems (Spark, Delta, MLflow, Prefect, LanceDB, LLMs) and their settings."""
