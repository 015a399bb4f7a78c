"""A lean GPT of the kind nanoGPT writes: the speed reference for ``bench/bench_training.py``.

The same function as ``shared.gpt.GPTModel`` (learned positions, pre-LayerNorm blocks, tanh
GELU, an output head tied to the token embedding) written the short way: one linear for
queries, keys and values together, ``nn.LayerNorm``, ``F.gelu`` and
``F.scaled_dot_product_attention``; no dropout, input checks, KV cache or hook-friendly
module names. ``LeanGPT.from_gpt(model)`` copies a ``GPTModel``'s weights in, so the tests
can check that both compute the same logits and gradients before the benchmark times them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.gpt import GPTConfig, GPTModel


class LeanBlock(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.n_heads = cfg.n_heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_out = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, T, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(b, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, T, d))
        return x + self.c_out(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class LeanGPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.wpe = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.blocks = nn.ModuleList(LeanBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.emb_dim)
        self.lm_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx: Tensor) -> Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @classmethod
    @torch.no_grad()
    def from_gpt(cls, model: GPTModel) -> LeanGPT:
        """A lean copy of ``model``: the same weights under the short layout."""
        lean = cls(model.cfg)
        lean.wte.weight.copy_(model.tok_emb.weight)
        lean.wpe.weight.copy_(model.pos_emb.weight)
        if not model.cfg.tie_weights:
            lean.lm_head.weight.copy_(model.out_head.weight)
        pairs = [(lean.ln_f, model.final_norm)]
        for mine, theirs in zip(lean.blocks, model.trf_blocks, strict=True):
            att, ff = theirs.att, theirs.ff.layers
            mine.c_attn.weight.copy_(
                torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight])
            )
            if mine.c_attn.bias is not None:
                mine.c_attn.bias.copy_(
                    torch.cat([att.W_query.bias, att.W_key.bias, att.W_value.bias])
                )
            for lin, src in ((mine.c_proj, att.out_proj), (mine.c_fc, ff[0]), (mine.c_out, ff[2])):
                lin.weight.copy_(src.weight)
                lin.bias.copy_(src.bias)
            pairs += [(mine.ln_1, theirs.norm1), (mine.ln_2, theirs.norm2)]
        for ln, norm in pairs:
            ln.weight.copy_(norm.scale)
            ln.bias.copy_(norm.shift)
        return lean
