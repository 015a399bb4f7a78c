"""Hooks on a ``GPTModel``: capture the residual stream, the logit lens, activation patching.

- ``Hooks``: registers forward, forward-pre, full-backward and load-state-dict-post hooks
  and removes every one of them when its ``with`` block ends, also when a hook raised.
- ``residual_stream``: the vector each position carries between blocks: the embeddings
  (layer 0) and every block's output (layer ``i + 1``). ``layer_names`` labels them for
  tables and plots (``"embed"``, ``"block 0"``, ...); ``hook_names`` gives the names
  TransformerLens uses for the same activations (``blocks.0.hook_resid_pre``,
  ``blocks.{i}.hook_resid_post``).
- ``logit_lens``: the final LayerNorm and the unembedding applied to every layer's residual,
  with the LayerNorm statistics of that layer (``"own"``) or the final layer's cached scale
  (``"final"``).
- ``patch_residual``: run the model with one position of one layer's residual replaced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Hooks", "hook_names", "layer_names", "logit_lens", "patch_residual", "residual_stream"]


class Hooks:
    """A group of hooks that is removed as one, at the end of a ``with`` block.

    >>> with Hooks() as h:                                   # doctest: +SKIP
    ...     h.forward(model.trf_blocks[0], lambda m, args, out: print(out.shape))
    ...     model(idx)
    >>> # here every hook is gone, whatever happened inside the block
    """

    KINDS = ("forward", "pre", "backward", "load_post")

    def __init__(self) -> None:
        self.handles: list = []

    def forward(self, module: nn.Module, hook: Callable, **kwargs) -> Hooks:
        """``hook(module, args, output)`` after ``forward``; a non-None return replaces the output."""
        self.handles.append(module.register_forward_hook(hook, **kwargs))
        return self

    def pre(self, module: nn.Module, hook: Callable, **kwargs) -> Hooks:
        """``hook(module, args)`` before ``forward``; a non-None return replaces the arguments."""
        self.handles.append(module.register_forward_pre_hook(hook, **kwargs))
        return self

    def backward(self, module: nn.Module, hook: Callable) -> Hooks:
        """``hook(module, grad_input, grad_output)`` when the module's gradients are computed."""
        self.handles.append(module.register_full_backward_hook(hook))
        return self

    def load_post(self, module: nn.Module, hook: Callable) -> Hooks:
        """``hook(module, incompatible_keys)`` after ``module.load_state_dict``."""
        self.handles.append(module.register_load_state_dict_post_hook(hook))
        return self

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self.handles)


def _check_model(model: nn.Module) -> None:
    for name in ("trf_blocks", "final_norm", "out_head"):
        if not hasattr(model, name):
            raise TypeError(f"expected a GPTModel (with .{name}), got {type(model).__name__}")


def layer_names(model: nn.Module) -> list[str]:
    """``["embed", "block 0", ..., "block n-1"]``: what each residual layer is the output of."""
    _check_model(model)
    return ["embed"] + [f"block {i}" for i in range(len(model.trf_blocks))]


def hook_names(model: nn.Module) -> list[str]:
    """The TransformerLens names of the same layers as ``layer_names``, in the same order:
    ``["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", ...]``."""
    _check_model(model)
    n = len(model.trf_blocks)
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n)]


@torch.no_grad()
def residual_stream(model: nn.Module, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``idx`` (b, T); return ``(logits, residuals)``.

    ``residuals`` has shape ``(n_layers + 1, b, T, emb_dim)``: index 0 is the input of the
    first block (token + position embeddings), index ``i + 1`` the output of block ``i``.
    The last one is what the final LayerNorm and the output head read.
    """
    _check_model(model)
    captured: list[Tensor] = []
    with Hooks() as h:
        h.pre(model.trf_blocks[0], lambda m, args: captured.append(args[0].detach()))
        for block in model.trf_blocks:
            h.forward(block, lambda m, args, out: captured.append(out.detach()))
        logits = model(idx)
    return logits, torch.stack(captured)


@torch.no_grad()
def logit_lens(model: nn.Module, residuals: Tensor, norm: str = "own") -> Tensor:
    """Next-token logits read from every layer: ``(n_layers + 1, ..., vocab)``.

    ``norm="own"``: each layer goes through the final LayerNorm with its own mean and
    variance, as if it were the last layer (the usual logit lens). ``norm="final"``: each
    layer is centred with its own mean but divided by the *final* layer's standard
    deviation, then scaled and shifted: a linear map of the residual, so that the
    contributions of the blocks add up in logit space. On the last layer both equal the
    model's own logits.
    """
    _check_model(model)
    if norm not in ("own", "final"):
        raise ValueError(f"norm must be 'own' or 'final', got {norm!r}")
    ln = model.final_norm
    if norm == "own":
        return model.out_head(ln(residuals))
    eps = getattr(ln, "eps", 1e-5)
    final = residuals[-1]
    std = (final.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()  # cached scale
    centred = residuals - residuals.mean(dim=-1, keepdim=True)
    return model.out_head(centred / std * ln.scale + ln.shift)


@torch.no_grad()
def patch_residual(
    model: nn.Module, idx: Tensor, layer: int, position: int, value: Tensor
) -> Tensor:
    """Logits of ``model(idx)`` with residual ``layer`` (0 = embeddings) at ``position``
    replaced by ``value`` (``(emb_dim,)`` or ``(b, emb_dim)``); later layers see the patch."""
    _check_model(model)
    n = len(model.trf_blocks)
    if not 0 <= layer <= n:
        raise ValueError(f"layer must be in 0..{n}, got {layer}")
    if not -idx.shape[1] <= position < idx.shape[1]:
        raise ValueError(f"position {position} is outside the {idx.shape[1]} tokens")

    def replace(x: Tensor) -> Tensor:
        x = x.clone()
        x[:, position] = value
        return x

    with Hooks() as h:
        if layer == 0:
            h.pre(model.trf_blocks[0], lambda m, args: (replace(args[0]), *args[1:]))
        else:
            h.forward(model.trf_blocks[layer - 1], lambda m, args, out: replace(out))
        return model(idx)
