"""Prefect-free library: all real logic of every stage. Never imports prefect."""
