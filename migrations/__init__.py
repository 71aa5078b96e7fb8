"""Alembic migrations of the capstore schema (installed as ``capstore.migrations``)."""
