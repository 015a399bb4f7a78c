"""A GPT-2 style language model in one readable file: the model chapter 3 assembles.

Pieces, from the inside out: ``LayerNorm`` and ``GELU`` (written out, same math as the
PyTorch built-ins), ``FeedForward`` (expand 4x, GELU, project back), ``TransformerBlock``
(pre-LayerNorm attention and feed-forward, each wrapped in a residual connection) and
``GPTModel`` (token + position embeddings, a stack of blocks, a final LayerNorm and a linear
``out_head`` that turns each position's vector into next-token logits).

Sizes live in a frozen ``GPTConfig``. ``GPT2_CONFIGS`` and ``GPT3_CONFIGS`` hold the
published model shapes (used for parameter and memory tables, and GPT-2 for loading real
checkpoints); ``MODEL_PRESETS`` holds the sizes this project trains, keyed by the
``LLMS_SCALE`` preset (``rt.choose(MODEL_PRESETS)`` picks one).

Submodule names (``tok_emb``, ``pos_emb``, ``trf_blocks.{i}.att`` / ``.ff`` / ``.norm1`` /
``.norm2``, ``final_norm``, ``out_head``) are part of the interface: checkpoints and the
hooks of later chapters refer to them.

``GPTModel.forward(idx, kv_cache=...)`` continues a ``KVCache`` (see ``shared.attention``):
the new tokens get the positions after the cached ones, and each block attends over its
cached keys and values. ``shared.decoding`` uses it to generate one token per step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.attention import KVCache, LayerKVCache, MultiHeadAttention
from shared.checks import check_int, check_number, is_int
from shared.decoding import check_logits

__all__ = [
    "GELU",
    "GPT2_CONFIGS",
    "GPT3_CONFIGS",
    "MODEL_PRESETS",
    "FeedForward",
    "GPTConfig",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "TransformerBlock",
    "count_parameters",
    "generate_greedy",
    "memory_bytes",
    "training_memory_estimate",
]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT model. Frozen, so a config can be shared without surprises.

    ``drop_rate`` is used for the embedding dropout, the attention-weight dropout and the
    dropout on each residual branch. ``qkv_bias`` gives the query/key/value projections a
    bias (GPT-2 has one). ``tie_weights`` makes ``out_head`` reuse the token-embedding
    matrix, as GPT-2 does, which saves ``vocab_size * emb_dim`` parameters.
    ``fused_attention`` picks the code path: True (the default, for training and generation)
    hands the work to library kernels, ``F.scaled_dot_product_attention``, one matmul for
    the query, key and value projections together, ``F.layer_norm`` and ``F.gelu``; False
    runs the explicit operations chapters 2 and 3 write out (needed to look at the attention
    weights). Both compute the same function to float rounding; it changes no parameter, so
    a checkpoint loads into either. Forward hooks on any of these modules still fire.
    Change a field with ``dataclasses.replace(cfg, drop_rate=0.1)``.
    """

    vocab_size: int
    context_length: int
    emb_dim: int
    n_heads: int
    n_layers: int
    drop_rate: float = 0.0
    qkv_bias: bool = False
    tie_weights: bool = False
    fused_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"GPTConfig.emb_dim={self.emb_dim} is not divisible by "
                f"n_heads={self.n_heads}: every head needs the same width"
            )
        rate = self.drop_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate!r}")
        for name in ("qkv_bias", "tie_weights", "fused_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict:
        """Plain dict (JSON-friendly), e.g. to store next to a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> GPTConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo must not be ignored).

        Missing keys take their defaults, so dicts saved before a field existed still load.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown GPTConfig key(s) {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**d)


def _openai(emb_dim: int, n_layers: int, n_heads: int, context_length: int) -> GPTConfig:
    """GPT-2 and GPT-3 share the tokenizer (50,257 ids), qkv biases and tied weights."""
    return GPTConfig(
        vocab_size=50257,
        context_length=context_length,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
        qkv_bias=True,
        tie_weights=True,
    )


def _gpt2(emb_dim: int, n_layers: int, n_heads: int) -> GPTConfig:
    return _openai(emb_dim, n_layers, n_heads, context_length=1024)


# The four public GPT-2 sizes (Radford et al., 2019), named as in the released checkpoints.
GPT2_CONFIGS: dict[str, GPTConfig] = {
    "gpt2-small": _gpt2(768, 12, 12),  # 124M
    "gpt2-medium": _gpt2(1024, 24, 16),  # 355M
    "gpt2-large": _gpt2(1280, 36, 20),  # 774M
    "gpt2-xl": _gpt2(1600, 48, 25),  # 1558M
}


def _gpt3(emb_dim: int, n_layers: int, n_heads: int) -> GPTConfig:
    return _openai(emb_dim, n_layers, n_heads, context_length=2048)


# Shapes from Table 2.1 of the GPT-3 paper (Brown et al., 2020). GPT-3 also alternates dense
# and locally banded sparse attention; that changes the compute, not the parameter count.
GPT3_CONFIGS: dict[str, GPTConfig] = {
    "gpt3-small": _gpt3(768, 12, 12),  # 125M
    "gpt3-medium": _gpt3(1024, 24, 16),  # 350M
    "gpt3-large": _gpt3(1536, 24, 16),  # 760M
    # The table gives 24 heads of 128 for a width of 2048, which cannot both hold; we keep the
    # width and head size (16 heads). The head count does not change the parameter count.
    "gpt3-xl": _gpt3(2048, 24, 16),  # 1.3B
    "gpt3-2.7b": _gpt3(2560, 32, 32),  # 2.7B
    "gpt3-6.7b": _gpt3(4096, 32, 32),  # 6.7B, the "7B class"
    # The table prints d_model = 5140, but 40 heads of 128 make 5120 (a known typo).
    "gpt3-13b": _gpt3(5120, 40, 40),  # 13B
    "gpt3-175b": _gpt3(12288, 96, 96),  # 175B
}

# The sizes this project trains, keyed by LLMS_SCALE, all with our 4096-token tokenizer.
# Dropout is 0: runs are short and the data is small, so there is little to regularise;
# a chapter that wants it uses dataclasses.replace(cfg, drop_rate=0.1).
MODEL_PRESETS: dict[str, GPTConfig] = {
    # ~1.3 M parameters: learns visibly within 2-3 minutes on 2 CPU cores.
    "tiny": GPTConfig(4096, 64, emb_dim=128, n_heads=4, n_layers=4, tie_weights=True),
    # ~5.8 M parameters: the size the design measured learning the tiny world (~3k tok/s).
    "small": GPTConfig(4096, 128, emb_dim=256, n_heads=4, n_layers=6, tie_weights=True),
    # gpt2-small's shape (~89 M parameters with our small vocabulary): a GPU.
    "gpt2": GPTConfig(4096, 1024, emb_dim=768, n_heads=12, n_layers=12, tie_weights=True),
}


# --------------------------------------------------------------------------- layers


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0, variance 1 over its features, then scale and shift.

    Same math as ``nn.LayerNorm(emb_dim, eps)``. The variance is the biased one (divide by
    ``n``, not ``n - 1``), as in the original definition and in PyTorch. Unlike batch norm it
    looks only at one position's own features, so it behaves the same for any batch size
    and at training and inference time.

    ``fused=True`` computes the same formula with ``F.layer_norm``, one kernel forward and
    one backward instead of seven small operations that each store a tensor (faster, less
    memory); ``GPTModel`` sets it from ``cfg.fused_attention``.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, fused: bool = False) -> None:
        super().__init__()
        self.eps = check_number(eps, "eps", 0.0, exclusive=True)  # NaN: every output NaN
        self.fused = fused
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, eps={self.eps}"


class GELU(nn.Module):
    """GELU(x) = x * Phi(x), a smooth ReLU that lets small negative values through.

    ``approximate="tanh"`` (the default) uses the tanh formula GPT-2 was trained with,
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; it was cheaper than the error
    function when GPT-2 was written and differs from it by less than 1e-3. Pretrained GPT-2
    weights expect this version. ``approximate="none"`` is the exact ``x * Phi(x)``.
    ``fused=True`` computes the same formula with ``F.gelu`` (one kernel each way).
    """

    def __init__(self, approximate: str = "tanh", fused: bool = False) -> None:
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate
        self.fused = fused

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.gelu(x, approximate=self.approximate)
        if self.approximate == "tanh":
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class FeedForward(nn.Module):
    """Position-wise MLP: ``emb_dim -> 4 * emb_dim -> GELU -> emb_dim``.

    Attention mixes information between positions; this layer then works on each position
    alone, in a wider space where the nonlinearity has room to act.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(fused=cfg.fused_attention),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """One GPT block, pre-LayerNorm: ``x + drop(att(norm1(x)))``, then ``x + drop(ff(norm2(x)))``.

    The residual (shortcut) connections give gradients a direct path through a deep stack;
    normalising the branch inputs (not the sum, as the 2017 Transformer did) keeps that path
    clean. Input and output have the same shape, so blocks stack.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim, fused=cfg.fused_attention)
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            num_heads=cfg.n_heads,
            dropout=cfg.drop_rate,
            qkv_bias=cfg.qkv_bias,
            fused=cfg.fused_attention,
        )
        self.norm2 = LayerNorm(cfg.emb_dim, fused=cfg.fused_attention)
        self.ff = FeedForward(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, kv_cache: LayerKVCache | None = None) -> Tensor:
        # (b, T, emb_dim) -> (b, T, emb_dim); kv_cache is this block's layer of a KVCache
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache=kv_cache))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


# --------------------------------------------------------------------------- model


class GPTModel(nn.Module):
    """Token ids ``(b, T)`` in, next-token logits ``(b, T, vocab_size)`` out.

    Position ``t`` of the output scores every possible token that could come after
    ``idx[:, :t + 1]``; the causal mask inside attention guarantees that it never sees
    later positions. Inputs longer than ``context_length`` are an error here (there is no
    position embedding for them); ``generate_greedy`` crops to the last ``context_length``
    tokens instead.

    ``forward(idx, kv_cache=cache)`` treats ``idx`` as the continuation of what ``cache``
    (from ``new_kv_cache()``) already holds: its tokens get positions ``cache.length ...``
    and attend to the cached keys and values too; their own are appended to the cache.
    """

    def __init__(self, cfg: GPTConfig | Mapping) -> None:
        super().__init__()
        if isinstance(cfg, Mapping):
            cfg = GPTConfig.from_dict(cfg)
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPTModel needs a GPTConfig or a dict, got {type(cfg).__name__}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim, fused=cfg.fused_attention)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            # One matrix, two uses: embed token i, and score token i as the next token.
            self.out_head.weight = self.tok_emb.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: weights ~ N(0, 0.02), biases 0, LayerNorm scale 1 shift 0.

        The projections that write into the residual stream (attention ``out_proj`` and the
        second feed-forward linear) get std ``0.02 / sqrt(2 * n_layers)``: each block adds
        two such outputs to the stream, and the smaller init keeps the variance of the sum
        from growing with depth.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.scale)
                nn.init.zeros_(module.shift)
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for block in self.trf_blocks:
            nn.init.normal_(block.att.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.ff.layers[2].weight, mean=0.0, std=residual_std)

    def set_fused(self, fused: bool) -> GPTModel:
        """Switch every layer between library kernels (True) and the explicit path (False).

        The same as building the model with ``fused_attention=fused``: no parameter changes,
        ``cfg`` is updated to match (so a saved checkpoint records it). Returns the model.
        """
        if not isinstance(fused, bool):
            raise TypeError(f"fused must be a bool, got {fused!r}")
        for module in self.modules():
            if isinstance(module, (LayerNorm, GELU, MultiHeadAttention)):
                module.fused = fused
        self.cfg = replace(self.cfg, fused_attention=fused)
        return self

    def new_kv_cache(self) -> KVCache:
        """An empty ``KVCache`` for this model: one layer per block, context_length long."""
        return KVCache(self.cfg.n_layers, self.cfg.context_length)

    def forward(self, idx: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        cfg = self.cfg
        if not isinstance(idx, Tensor):
            raise TypeError(f"token ids must be a torch.Tensor, got {type(idx).__name__}")
        if idx.dim() != 2:
            raise ValueError(
                f"expected token ids of shape (batch, T), got {tuple(idx.shape)}; "
                "for a single sequence use idx.unsqueeze(0)"
            )
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token ids must be an integer tensor, got {idx.dtype}")
        b, T = idx.shape
        if T > cfg.context_length:
            raise ValueError(
                f"sequence length T={T} exceeds the context length {cfg.context_length}; "
                f"crop the input to its last {cfg.context_length} tokens"
            )
        if idx.numel() > 0 and idx.device.type == "cuda":
            # int(...) below would make the host wait for the GPU on every step; this check
            # runs on the device and fails the next synchronising call with the message.
            ok = ((idx >= 0) & (idx < cfg.vocab_size)).all()
            torch._assert_async(ok, f"a token id is outside [0, vocab_size={cfg.vocab_size})")
        elif idx.numel() > 0:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= cfg.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"token id {bad} is outside [0, vocab_size={cfg.vocab_size}); was the "
                    "text encoded with a different tokenizer?"
                )
        if kv_cache is not None:
            return self._forward_cached(idx, kv_cache)
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (b, T, emb_dim) + (T, emb_dim) broadcasts
        x = self.drop_emb(x)
        x = self.trf_blocks(x)  # (b, T, emb_dim)
        x = self.final_norm(x)
        return self.out_head(x)  # (b, T, vocab_size)

    def _forward_cached(self, idx: Tensor, kv_cache: KVCache) -> Tensor:
        if not isinstance(kv_cache, KVCache):
            raise TypeError(f"kv_cache must be a KVCache, got {type(kv_cache).__name__}")
        if len(kv_cache.layers) != len(self.trf_blocks):
            raise ValueError(
                f"the KV cache has {len(kv_cache.layers)} layers, the model "
                f"{len(self.trf_blocks)} blocks; make it with model.new_kv_cache()"
            )
        past, T = kv_cache.length, idx.shape[1]
        if past + T > self.cfg.context_length:
            raise ValueError(
                f"the KV cache holds {past} positions; {T} more would exceed the context "
                f"length {self.cfg.context_length} (there are no position embeddings past "
                "it): reset the cache and re-encode the last context_length tokens"
            )
        pos = torch.arange(past, past + T, device=idx.device)  # positions after the cached ones
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))  # (b, T, emb_dim)
        for block, layer_cache in zip(self.trf_blocks, kv_cache.layers, strict=True):
            x = block(x, kv_cache=layer_cache)
        x = self.final_norm(x)
        return self.out_head(x)  # (b, T, vocab_size)


# --------------------------------------------------------------------------- sizes


def count_parameters(model_or_cfg: nn.Module | GPTConfig) -> int:
    """Number of parameters: counted from a module, or computed from a config on paper.

    The formula (``d = emb_dim``, ``V = vocab_size``, ``C = context_length``):
    embeddings ``V*d + C*d``; per block two LayerNorms ``4d``, attention ``4*d*d + d``
    (+ ``3d`` with qkv bias), feed-forward ``8*d*d + 5d``; final LayerNorm ``2d``; and
    ``V*d`` more for the output head unless it is tied to the token embedding.
    A module's shared (tied) parameters are counted once, as ``model.parameters()`` does.
    """
    if isinstance(model_or_cfg, nn.Module):
        return sum(p.numel() for p in model_or_cfg.parameters())
    if not isinstance(model_or_cfg, GPTConfig):
        raise TypeError(f"expected an nn.Module or a GPTConfig, got {type(model_or_cfg)}")
    cfg = model_or_cfg
    d, V, C = cfg.emb_dim, cfg.vocab_size, cfg.context_length
    attention = 3 * d * d + (3 * d if cfg.qkv_bias else 0) + d * d + d
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    block = 2 * (2 * d) + attention + feed_forward
    head = 0 if cfg.tie_weights else V * d
    return V * d + C * d + cfg.n_layers * block + 2 * d + head


def memory_bytes(cfg: GPTConfig | nn.Module, dtype_bytes: int = 4) -> int:
    """Bytes to hold the weights alone: parameters x bytes per number (fp32 4, bf16 2)."""
    dtype_bytes = check_int(dtype_bytes, "dtype_bytes", 1)
    return count_parameters(cfg) * dtype_bytes


def training_memory_estimate(
    cfg: GPTConfig,
    batch_size: int = 1,
    seq_len: int | None = None,
    dtype_bytes: int = 4,
) -> dict[str, int]:
    """Rough bytes needed to train with AdamW, split into what takes the memory.

    - ``weights``: one number per parameter.
    - ``gradients``: one more per parameter, filled by ``backward()``.
    - ``optimizer``: AdamW keeps two running averages (m and v) per parameter.
      Weights + gradients + optimizer = 4x the weights (optimizer states kept in the same
      dtype as the weights; mixed-precision setups keep fp32 copies and need more).
    - ``activations``: what the forward pass saves for backward. A rough count of saved
      numbers per token and layer: LayerNorm inputs and outputs (4d), q, k, v (3d), the
      attention output and its projection input (2d), the feed-forward hidden layer before
      and after GELU (8d) - about ``16 * d`` - plus the attention scores and weights
      (``2 * n_heads * T``); then the final LayerNorm (``2d``) and the logits with their
      softmax (``2 * vocab_size``). Dropout masks, temporaries and allocator overhead are
      ignored, so treat it as a lower bound that is right to within a factor of ~2.

    ``seq_len`` defaults to ``cfg.context_length``. Returns a dict of ints (bytes) with a
    ``total``.
    """
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
    T = cfg.context_length if seq_len is None else check_int(seq_len, "seq_len")
    batch_size = check_int(batch_size, "batch_size")
    dtype_bytes = check_int(dtype_bytes, "dtype_bytes", 1)
    if T < 1 or T > cfg.context_length or batch_size < 1:
        raise ValueError(
            f"need batch_size >= 1 and 1 <= seq_len <= {cfg.context_length}, "
            f"got batch_size={batch_size}, seq_len={seq_len}"
        )
    weights = memory_bytes(cfg, dtype_bytes)
    d = cfg.emb_dim
    per_token = cfg.n_layers * (16 * d + 2 * cfg.n_heads * T) + 2 * d + 2 * cfg.vocab_size
    activations = batch_size * T * per_token * dtype_bytes
    estimate = {
        "weights": weights,
        "gradients": weights,
        "optimizer": 2 * weights,
        "activations": activations,
    }
    estimate["total"] = sum(estimate.values())
    return estimate


# --------------------------------------------------------------------------- generation


def _check_eos_id(eos_id: int | None, vocab_size: int | None) -> int | None:
    """None, or a token id in the vocabulary (the wording of ``shared.decoding.generate``)."""
    if eos_id is None:
        return None
    if not is_int(eos_id):
        raise TypeError(f"eos_id must be a token id (an int) or None, got {eos_id!r}")
    eos_id = operator.index(eos_id)
    if eos_id < 0 or (vocab_size is not None and eos_id >= vocab_size):
        raise ValueError(f"eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
    return eos_id


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    context_length: int | None = None,
    eos_id: int | None = None,
) -> Tensor:
    """Append ``max_new_tokens`` tokens to ``idx`` (b, T), each the argmax next token.

    The model only sees the last ``context_length`` tokens (default: the model's own
    ``cfg.context_length``), so generation can run past the context window. With
    ``eos_id`` generation stops once every row has produced it; rows that finish early are
    padded with ``eos_id``. The model runs in eval mode (no dropout) and its previous mode
    is restored afterwards. Returns ``(b, T + n_new)`` ids.
    """
    if not isinstance(idx, Tensor):
        raise TypeError(f"idx must be a torch.Tensor of shape (batch, T), got {type(idx).__name__}")
    if idx.dim() != 2:
        raise ValueError(f"expected ids of shape (batch, T), got {tuple(idx.shape)}")
    if idx.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token to continue")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 0)
    cfg = getattr(model, "cfg", None)
    if context_length is None:
        if cfg is None:
            raise ValueError("pass context_length: the model has no .cfg to read it from")
        context_length = cfg.context_length
    context_length = check_int(context_length, "context_length", 1)  # -3 would keep 3 tokens
    eos_id = _check_eos_id(eos_id, getattr(cfg, "vocab_size", None))
    was_training = model.training
    model.eval()
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        for step in range(max_new_tokens):
            logits = model(idx[:, -context_length:])  # (b, T', vocab)
            hint = f" at generation step {step}; are the model's weights finite?"
            check_logits(logits[:, -1, :], "the model's logits", hint)  # argmax of NaN: junk
            next_id = logits[:, -1, :].argmax(dim=-1)  # (b,)
            if eos_id is not None:
                next_id = torch.where(finished, torch.full_like(next_id, eos_id), next_id)
                finished |= next_id == eos_id
            idx = torch.cat([idx, next_id[:, None]], dim=1)  # (b, T + 1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return idx
