"""Move weights between our ``GPTModel`` and the Hugging Face GPT-2 layout.

OpenAI's GPT-2 checkpoints, as published on the Hugging Face hub, name and shape their
tensors differently from ``shared.gpt``:

    Hugging Face                             ->  ``GPTModel``
    ``wte.weight`` (V, d)                    ->  ``tok_emb.weight``
    ``wpe.weight`` (C, d)                    ->  ``pos_emb.weight``
    ``h.{i}.ln_1.weight`` / ``.bias``        ->  ``trf_blocks.{i}.norm1.scale`` / ``.shift``
    ``h.{i}.attn.c_attn.weight`` (d, 3d)     ->  ``...att.W_query`` / ``W_key`` / ``W_value``
    ``h.{i}.attn.c_proj.weight`` (d, d)      ->  ``...att.out_proj``
    ``h.{i}.ln_2.weight`` / ``.bias``        ->  ``...norm2.scale`` / ``.shift``
    ``h.{i}.mlp.c_fc.weight`` (d, 4d)        ->  ``...ff.layers.0``
    ``h.{i}.mlp.c_proj.weight`` (4d, d)      ->  ``...ff.layers.2``
    ``ln_f.weight`` / ``.bias``              ->  ``final_norm.scale`` / ``.shift``
    ``lm_head.weight`` (V, d), optional      ->  ``out_head.weight`` (tied to ``wte``)

Biases follow their weights; keys may carry a ``transformer.`` prefix.

GPT-2 was written with "Conv1D" layers that store a weight as ``(in, out)``, the transpose
of ``nn.Linear``'s ``(out, in)``, and it computes query, key and value with one matrix
whose output is the three concatenated. Loading transposes and splits; exporting joins and
transposes back. The ``attn.bias`` / ``attn.masked_bias`` entries of older files are the
causal mask, not weights, and are ignored.

Loading is all or nothing: the complete new state dict is built and every name and shape
checked before ``load_state_dict(strict=True)`` touches the model.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from shared.gpt import GPTConfig, GPTModel

__all__ = [
    "export_gpt2_state_dict",
    "gpt2_config_from_hf",
    "load_gpt2_file",
    "load_gpt2_state_dict",
    "load_pretrained_gpt2",
]

_PREFIX = "transformer."
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers
_HUB_URL = "https://huggingface.co/openai-community/{name}/resolve/main/{file}"
_PRETRAINED = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def _expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every Hugging Face key (without prefix) a model of this shape needs, with its shape."""
    d, V, C = cfg.emb_dim, cfg.vocab_size, cfg.context_length
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, d), "wpe.weight": (C, d)}
    for i in range(cfg.n_layers):
        h = f"h.{i}."
        shapes |= {
            h + "ln_1.weight": (d,),
            h + "ln_1.bias": (d,),
            h + "attn.c_attn.weight": (d, 3 * d),
            h + "attn.c_attn.bias": (3 * d,),
            h + "attn.c_proj.weight": (d, d),
            h + "attn.c_proj.bias": (d,),
            h + "ln_2.weight": (d,),
            h + "ln_2.bias": (d,),
            h + "mlp.c_fc.weight": (d, 4 * d),
            h + "mlp.c_fc.bias": (4 * d,),
            h + "mlp.c_proj.weight": (4 * d, d),
            h + "mlp.c_proj.bias": (d,),
        }
    shapes |= {"ln_f.weight": (d,), "ln_f.bias": (d,)}
    return shapes


def _names(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _normalise_keys(hf_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the optional ``transformer.`` prefix and the mask buffers."""
    out: dict[str, Tensor] = {}
    for key, value in hf_state.items():
        name = key.removeprefix(_PREFIX)
        if _IGNORED.match(name):
            continue
        if name in out:
            raise ValueError(
                f"key {name!r} appears both with and without the 'transformer.' prefix"
            )
        if not isinstance(value, Tensor):
            raise TypeError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        if not value.is_floating_point():  # loading would cast the ints silently
            raise ValueError(f"checkpoint entry {key!r} holds {value.dtype}, not weights")
        if not bool(value.isfinite().all()):
            raise ValueError(f"checkpoint entry {key!r} holds NaN or inf: the file is damaged")
        out[name] = value
    return out


def load_gpt2_state_dict(model: GPTModel, hf_state: Mapping[str, Tensor]) -> GPTModel:
    """Load a Hugging Face GPT-2 state dict into ``model`` (in place; also returned).

    Raises ``ValueError`` naming the key for a missing or unexpected key, a shape that does
    not fit the model (both shapes given), an untied ``lm_head`` for a tied model, or
    non-zero query/key/value biases for a model built with ``qkv_bias=False``. On error the
    model is unchanged.
    """
    cfg = model.cfg
    state = _normalise_keys(hf_state)
    expected = _expected_shapes(cfg)
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys() - {"lm_head.weight"}
    if missing:
        raise ValueError(f"GPT-2 checkpoint is missing key(s): {_names(missing)}")
    if unexpected:
        raise ValueError(f"GPT-2 checkpoint has unexpected key(s): {_names(unexpected)}")
    expected["lm_head.weight"] = (cfg.vocab_size, cfg.emb_dim)
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"shape mismatch for {name!r}: checkpoint has {tuple(tensor.shape)}, "
                f"the model ({cfg.n_layers} layers, emb_dim {cfg.emb_dim}, vocab "
                f"{cfg.vocab_size}, context {cfg.context_length}) needs {expected[name]}"
            )

    new: dict[str, Tensor] = {
        "tok_emb.weight": state["wte.weight"],
        "pos_emb.weight": state["wpe.weight"],
        "final_norm.scale": state["ln_f.weight"],
        "final_norm.shift": state["ln_f.bias"],
    }
    for i in range(cfg.n_layers):
        h, ours = f"h.{i}.", f"trf_blocks.{i}."
        # Conv1D (in, 3*out) -> transpose to (3*out, in) -> rows are [query; key; value].
        w_q, w_k, w_v = state[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # (d, d) each
        b_q, b_k, b_v = state[h + "attn.c_attn.bias"].chunk(3, dim=0)  # (d,) each
        new |= {
            ours + "norm1.scale": state[h + "ln_1.weight"],
            ours + "norm1.shift": state[h + "ln_1.bias"],
            ours + "att.W_query.weight": w_q,
            ours + "att.W_key.weight": w_k,
            ours + "att.W_value.weight": w_v,
            ours + "att.out_proj.weight": state[h + "attn.c_proj.weight"].t(),
            ours + "att.out_proj.bias": state[h + "attn.c_proj.bias"],
            ours + "norm2.scale": state[h + "ln_2.weight"],
            ours + "norm2.shift": state[h + "ln_2.bias"],
            ours + "ff.layers.0.weight": state[h + "mlp.c_fc.weight"].t(),
            ours + "ff.layers.0.bias": state[h + "mlp.c_fc.bias"],
            ours + "ff.layers.2.weight": state[h + "mlp.c_proj.weight"].t(),
            ours + "ff.layers.2.bias": state[h + "mlp.c_proj.bias"],
        }
        if cfg.qkv_bias:
            new |= {
                ours + "att.W_query.bias": b_q,
                ours + "att.W_key.bias": b_k,
                ours + "att.W_value.bias": b_v,
            }
        elif torch.any(state[h + "attn.c_attn.bias"] != 0):
            raise ValueError(
                f"{h}attn.c_attn.bias is non-zero but the model was built with "
                "qkv_bias=False; build it with qkv_bias=True (GPT-2 checkpoints need it)"
            )

    head = state.get("lm_head.weight")
    if cfg.tie_weights:
        if head is not None and not torch.equal(head, state["wte.weight"]):
            raise ValueError(
                "lm_head.weight differs from wte.weight but the model ties them "
                "(tie_weights=True); build it with tie_weights=False"
            )
        new["out_head.weight"] = state["wte.weight"]
    else:
        # Without lm_head the checkpoint is tied (as GPT-2 is): the head is the embedding.
        new["out_head.weight"] = (head if head is not None else state["wte.weight"]).clone()

    model.load_state_dict(new, strict=True)
    return model


def export_gpt2_state_dict(model: GPTModel) -> dict[str, Tensor]:
    """Our model's weights in the ``GPT2LMHeadModel`` layout (``transformer.`` prefixed keys
    plus ``lm_head.weight``). The inverse of ``load_gpt2_state_dict``.

    Tensors are detached, contiguous copies (no two share memory, as safetensors requires).
    A model without query/key/value biases exports zero biases, which compute the same.
    """
    cfg = model.cfg
    sd = model.state_dict()
    d = cfg.emb_dim

    def t(x: Tensor) -> Tensor:
        return x.detach().clone().contiguous()

    out: dict[str, Tensor] = {
        "wte.weight": t(sd["tok_emb.weight"]),
        "wpe.weight": t(sd["pos_emb.weight"]),
    }
    for i in range(cfg.n_layers):
        h, ours = f"h.{i}.", f"trf_blocks.{i}."
        att = ours + "att."
        w_qkv = torch.cat([sd[att + f"W_{r}.weight"] for r in ("query", "key", "value")])
        if cfg.qkv_bias:
            b_qkv = torch.cat([sd[att + f"W_{r}.bias"] for r in ("query", "key", "value")])
        else:
            b_qkv = torch.zeros(3 * d, dtype=w_qkv.dtype, device=w_qkv.device)
        out |= {
            h + "ln_1.weight": t(sd[ours + "norm1.scale"]),
            h + "ln_1.bias": t(sd[ours + "norm1.shift"]),
            h + "attn.c_attn.weight": t(w_qkv.t()),  # (3d, d) -> Conv1D (d, 3d)
            h + "attn.c_attn.bias": t(b_qkv),
            h + "attn.c_proj.weight": t(sd[att + "out_proj.weight"].t()),
            h + "attn.c_proj.bias": t(sd[att + "out_proj.bias"]),
            h + "ln_2.weight": t(sd[ours + "norm2.scale"]),
            h + "ln_2.bias": t(sd[ours + "norm2.shift"]),
            h + "mlp.c_fc.weight": t(sd[ours + "ff.layers.0.weight"].t()),
            h + "mlp.c_fc.bias": t(sd[ours + "ff.layers.0.bias"]),
            h + "mlp.c_proj.weight": t(sd[ours + "ff.layers.2.weight"].t()),
            h + "mlp.c_proj.bias": t(sd[ours + "ff.layers.2.bias"]),
        }
    out |= {"ln_f.weight": t(sd["final_norm.scale"]), "ln_f.bias": t(sd["final_norm.shift"])}
    exported = {_PREFIX + k: v for k, v in out.items()}
    exported["lm_head.weight"] = t(sd["out_head.weight"])
    return exported


def gpt2_config_from_hf(hf_cfg: Mapping) -> GPTConfig:
    """A ``GPTConfig`` from a Hugging Face GPT-2 ``config.json`` (a dict, or an object with
    ``to_dict()``). Dropout is a training choice, not part of the weights: it is set to 0.
    """
    if not isinstance(hf_cfg, Mapping) and hasattr(hf_cfg, "to_dict"):
        hf_cfg = hf_cfg.to_dict()
    if not isinstance(hf_cfg, Mapping):
        raise TypeError(f"a GPT-2 config must be a dict (config.json), got {hf_cfg!r}")
    required = ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer")
    missing = [k for k in required if k not in hf_cfg]
    if missing:
        raise ValueError(f"GPT-2 config is missing {missing}")
    activation = hf_cfg.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"activation_function={activation!r} is not supported: GPTModel uses the tanh "
            "GELU ('gelu_new')"
        )
    eps = hf_cfg.get("layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise ValueError(f"layer_norm_epsilon={eps} is not supported: GPTModel uses 1e-5")
    _check_attention_math(hf_cfg)
    tie = hf_cfg.get("tie_word_embeddings", True)
    if not isinstance(tie, bool):  # bool("false") is True
        raise TypeError(f"tie_word_embeddings must be true or false, got {tie!r}")
    return GPTConfig(
        vocab_size=hf_cfg["vocab_size"],
        context_length=hf_cfg["n_positions"],
        emb_dim=hf_cfg["n_embd"],
        n_heads=hf_cfg["n_head"],
        n_layers=hf_cfg["n_layer"],
        drop_rate=0.0,
        qkv_bias=True,
        tie_weights=tie,
    )


def _check_attention_math(hf_cfg: Mapping) -> None:
    """Refuse the GPT-2 options that change what the model computes: the weights would
    load, and the model would silently compute something else."""
    if hf_cfg.get("scale_attn_weights", True) is not True:
        raise ValueError(
            f"scale_attn_weights={hf_cfg['scale_attn_weights']!r} is not supported: GPTModel "
            "always divides the attention scores by sqrt(head_dim)"
        )
    if hf_cfg.get("scale_attn_by_inverse_layer_idx", False) is not False:
        raise ValueError(
            "scale_attn_by_inverse_layer_idx="
            f"{hf_cfg['scale_attn_by_inverse_layer_idx']!r} is not supported by GPTModel"
        )
    inner, width = hf_cfg.get("n_inner"), hf_cfg["n_embd"]
    if inner is not None and (not isinstance(width, int) or inner != 4 * width):
        raise ValueError(
            f"n_inner={inner!r} is not supported: GPTModel's feed-forward is 4 * n_embd wide"
        )


def load_gpt2_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file, onto the CPU.

    Torch files are read with ``weights_only=True``, so a file cannot run code on load.
    Errors name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ValueError(f"could not read checkpoint {path}: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} does not hold a flat dict of tensors")
    return dict(state)


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` through a temporary file, with a progress bar."""
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
        total = int(response.headers.get("Content-Length", 0)) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(tmp, dest)


def load_pretrained_gpt2(
    name: str = "gpt2", cache_dir: str | os.PathLike | None = None
) -> GPTModel:
    """OpenAI's GPT-2 weights from the Hugging Face hub, in a ``GPTModel`` (eval mode).

    ``name`` is ``gpt2`` (124M), ``gpt2-medium``, ``gpt2-large`` or ``gpt2-xl``. Files are
    cached in ``cache_dir`` (default ``~/.cache/llms-from-scratch/<name>``) and read from
    there when present. Downloading happens only when the environment variable
    ``LLMS_ONLINE=1`` is set: the project is offline by default.
    """
    name = {"gpt2-small": "gpt2"}.get(name, name)
    if name not in _PRETRAINED:
        raise ValueError(f"unknown GPT-2 checkpoint {name!r}; choose one of {_PRETRAINED}")
    folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "llms-from-scratch" / name
    files = {f: folder / f for f in ("config.json", "model.safetensors")}
    absent = [f for f, p in files.items() if not p.is_file()]
    if absent:
        if os.environ.get("LLMS_ONLINE") != "1":
            raise RuntimeError(
                f"GPT-2 weights {name!r} are not in {folder} and downloading is off: this "
                "project runs offline by default. Set LLMS_ONLINE=1 to download them "
                "(about 0.5-6 GB) from the Hugging Face hub."
            )
        folder.mkdir(parents=True, exist_ok=True)
        for f in absent:
            _download(_HUB_URL.format(name=name, file=f), files[f])
    cfg = gpt2_config_from_hf(json.loads(files["config.json"].read_text()))
    model = GPTModel(cfg)
    load_gpt2_state_dict(model, load_gpt2_file(files["model.safetensors"]))
    return model.eval()
