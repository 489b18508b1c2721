"""Running analyses: the runner (one run, inline), the worker and its host (the TUI's background
process), the Ray pool and sweeps, progress reporting, verify and compare (reading stored runs)."""
