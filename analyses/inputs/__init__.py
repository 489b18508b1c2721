"""Inputs: prompts, prompt sets, corpora (Pile format and others) and entity tables."""
