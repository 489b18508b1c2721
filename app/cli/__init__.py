"""The command line face: ``iwb`` (main), its output helpers (io) and ``iwb analyses --markdown`` (docs)."""
from app.cli.commands import main

__all__ = ["main"]
