"""The `genai` command (entry point: ``flows.cli.main:main``)."""
