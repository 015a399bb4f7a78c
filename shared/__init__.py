"""The small package that the notebooks build step by step and later chapters import.

One module per concern:

- ``files``: atomic writes (a temporary file, then one rename).
- ``runtime``: the one setup call at the top of every notebook (seeds, threads, device,
  scale preset, print options) and the paths of the repository's ``data/`` folder.
- ``tiny_world``: the seeded synthetic world and its English corpus.
- ``python_corpus``: a real-text corpus made from text that ships with CPython.
- ``bpe``: a byte-level BPE tokenizer trained from scratch, and its ``tiktoken`` wrapper.
- ``datasets``: the sliding-window next-token dataset and its DataLoader.
- ``attention``: causal multi-head self-attention, with a KV cache for generation.
- ``gpt``: the GPT model, its configs (GPT-2, GPT-3, the project's presets) and size counts.
- ``gpt2_checkpoint``: GPT-2 weights in the Hugging Face layout, in and out.
- ``training``: next-token loss, the training loop, AdamW groups, schedule, baselines.
- ``checkpoints``: atomic saves and safe, validated loads.
- ``distributed``: data-parallel training with torchrun.
- ``decoding``: temperature, top-k, top-p and generation with the KV cache.
- ``instruction_data``: instruction entries about the tiny world (two styles, held-out people).
- ``gold``: the gold rule that grades any response to a tiny-world instruction.
- ``sft``: prompt templates, new special tokens, the instruction dataset, collate, evaluation.
- ``hooks``: hooks removed as a group, the residual stream, the logit lens, patching.
- ``preference_data``: chosen/rejected pairs built on the instructions, right by the gold rule.
- ``reward_model``: a scalar head on a GPT backbone, the Bradley-Terry loss, training on pairs.
- ``policy``: padded prompt/response batches, log-probs, sampling, KL estimators.
- ``ppo``: PPO for a language model (actor, critic, reward, reference; GAE, clipping).
- ``dpo``: the DPO loss and its variants (IPO, SimPO, R-DPO, ORPO), training on pairs.
- ``judge_client`` / ``judge_server``: Ollama's chat API, as a client and a local server.
- ``diagrams``: the figures of the chapters (roadmap, pipeline, GPT block, ...).
"""

from shared.runtime import DATA_DIR, REPO_DIR, Runtime, setup

__all__ = ["DATA_DIR", "REPO_DIR", "Runtime", "setup"]
