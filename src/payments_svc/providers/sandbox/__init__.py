"""The sandbox provider, for development and tests (provider.py)."""
