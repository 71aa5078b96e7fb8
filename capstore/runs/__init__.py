"""Runs: creating a run, claiming its work with leases, working it, resuming it, its status."""

from capstore.runs.config import RunConfig
from capstore.runs.create import create_run, extend_run
from capstore.runs.engine import WorkSummary, work

__all__ = ["RunConfig", "WorkSummary", "create_run", "extend_run", "work"]
