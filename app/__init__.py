"""The faces of iwb: the CLI, the Textual TUI and the worker host."""
__version__ = "0.1.0"
