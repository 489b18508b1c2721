"""Data shipped with the analyses: the Pile-format sample (scripts/build_pile_sample.py) and prompt sets."""
