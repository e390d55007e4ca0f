"""Registers every YAML definition of this repository with Feast (`feast apply` imports this)."""

from pathlib import Path

from usp_feast.compile import repo_objects

globals().update(repo_objects(Path(__file__).parent))
