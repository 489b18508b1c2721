"""Package data: the shipped Pile-format sample (built by scripts/build_pile_sample.py)."""
