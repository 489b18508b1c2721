"""The model layer: the only code that touches Hugging Face or TransformerBridge internals.

One adapter per architecture family gives the analyses one API (embed, run blocks from a cached
residual with a prefix KV cache, skip or reorder blocks and sublayers, patch states, attention
patterns, final norm + unembed, weights); tokenising, BOS, batching and padding live here too.
"""
