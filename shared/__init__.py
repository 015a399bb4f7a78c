"""The small package that the notebooks build step by step and later chapters import.

One module per concern:

- ``runtime``: the one setup call at the top of every notebook (seeds, threads, device,
  scale preset, print options) and the paths of the repository's ``data/`` folder.
- ``tiny_world``: the seeded synthetic world and its English corpus.
- ``python_corpus``: a real-text corpus made from text that ships with CPython.
- ``bpe``: a byte-level BPE tokenizer trained from scratch, and its ``tiktoken`` wrapper.
- ``datasets``: the sliding-window next-token dataset and its DataLoader.
- ``attention``: causal multi-head self-attention.
"""

from shared.runtime import DATA_DIR, REPO_DIR, Runtime, setup

__all__ = ["DATA_DIR", "REPO_DIR", "Runtime", "setup"]
