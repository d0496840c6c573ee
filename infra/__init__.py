"""Adapters to outside systems (Spark, Delta, MLflow, Prefect, LanceDB, LLMs), their settings."""
