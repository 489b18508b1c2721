"""Helpers shared by the test modules: plain functions and classes, no tests and no fixtures.

Test modules import from here, never from one another or from a conftest (fixtures stay in the
conftest files). Modules: cli (the `iwb` entry point in a subprocess), fakes (a fake worker host
and synthetic stored runs), tui (Pilot helpers and what a widget shows), worker_events (waiting on
a real worker host's events), slow_analysis (a test-only analysis registered in workers), shards
(comparing stored runs, corpus inputs), ray_cluster (a throwaway local Ray head), planted (a GPT-2
with attention heads set by hand).
"""
