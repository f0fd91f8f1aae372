"""The settings searches (see bench/__init__.py)."""
