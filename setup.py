"""Package discovery only (metadata lives in pyproject.toml).

cli/, migrations/ and sql/ are top-level folders of the repository that install as
capstore.cli, capstore.migrations and capstore.sql (see package-dir in pyproject.toml).
"""
from setuptools import find_packages, setup

mapped = ["capstore.cli", "capstore.migrations", "capstore.migrations.versions", "capstore.sql"]
setup(packages=find_packages(include=["capstore", "capstore.*"]) + mapped)
