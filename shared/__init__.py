"""The small package that the notebooks build step by step and later chapters import.

One module per concern, listed with the chapter that builds it (later chapters import it):

| chapter | module | what it holds |
|---|---|---|
| all | ``runtime`` | the one setup call of every notebook (seeds, threads, device, scale preset) and the ``data/`` paths |
| all | ``diagrams`` | the figures of the chapters (roadmap, pipeline, GPT block, ...) |
| all | ``files`` | atomic writes (a temporary file, then one rename) |
| all | ``checks`` | argument checks, one wording per idea ("an int >= n", "a finite number") |
| 1 | ``tiny_world`` | the seeded synthetic world and its English corpus |
| 1 | ``bpe`` | a byte-level BPE tokenizer trained from scratch, and its ``tiktoken`` wrapper |
| 1 | ``datasets`` | the sliding-window next-token dataset and its DataLoader |
| 2 | ``attention`` | causal multi-head self-attention, with a KV cache for generation |
| 3 | ``gpt`` | the GPT model, its configs (GPT-2, GPT-3, the project's presets) and size counts |
| 3 | ``gpt2_checkpoint`` | GPT-2 weights in the Hugging Face layout, in and out |
| 4 | ``training`` | next-token loss, the training loop, AdamW groups, schedule, baselines |
| 4 | ``checkpoints`` | atomic saves and safe, validated loads of models |
| 4 | ``train_state`` | resumable training state: atomic, safe, refused when the settings differ |
| 4 | ``distributed`` | data-parallel training with torchrun |
| 5 | ``decoding`` | temperature, top-k, top-p and generation with the KV cache |
| 6 | ``instruction_data`` | instruction entries about the tiny world (two styles, held-out people) |
| 6 | ``prompts`` | the Alpaca and Phi-3 prompt formats and their special tokens (no torch) |
| 6 | ``sft`` | the instruction dataset, collate with -100, batches, greedy answers, evaluation |
| 6 | ``gold`` | the gold rule that grades any response to a tiny-world instruction |
| 7 | ``hooks`` | hooks removed as a group, the residual stream, the logit lens, patching |
| 8 | ``python_corpus`` | a real-text corpus made from text that ships with CPython |
| 9 | ``preference_data`` | chosen/rejected pairs built on the instructions, right by the gold rule |
| 9 | ``reward_model`` | a scalar head on a GPT backbone, the Bradley-Terry loss, training on pairs |
| 10 | ``policy`` | padded prompt/response batches, log-probs, sampling, KL estimators |
| 10 | ``ppo`` | PPO for a language model (actor, critic, reward, reference; GAE, clipping) |
| 11 | ``dpo`` | the DPO loss and its variants (IPO, SimPO, R-DPO, ORPO), training on pairs |
| 11 | ``alignment_eval`` | one evaluation of any policy: gold rule, reward model, KL, best-of-n |
| 12 | ``judge_data`` | the judge's prompts (the lecture's rubric and 0-100 score), targets, parsing, kappa |
| 12 | ``chat`` | a chat model in-process: templates, Ollama's generation options, streamed answers |
| 12 | ``serving`` | a local model server kept safe under load: request queue, Host/Origin checks, timeouts |
| 12 | ``judge_server`` | the HTTP layer: Ollama's API (and OpenAI's subset) over ``chat`` |
| 12 | ``judge_client`` | the client of that API, which also talks to a real Ollama |
"""

from shared.runtime import DATA_DIR, REPO_DIR, Runtime, setup

__all__ = ["DATA_DIR", "REPO_DIR", "Runtime", "setup"]
