"""The Textual workbench. Never imports torch or transformer_lens: the worker process does."""
