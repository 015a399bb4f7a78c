"""How fast does a GPT train on this CPU, against a lean reference and the matmul rate?

    python bench/bench_training.py [--scales tiny small] [--batch-size 16] [--rounds 4]

For each ``MODEL_PRESETS`` size, times full training steps (forward, backward, clipping,
AdamW) of three models with the same weights and optimizer, on the same batch:

- ``explicit``: ``GPTModel`` with ``fused_attention=False``, the operations chapters 2-3
  write out (hand-written LayerNorm and GELU, three projections, explicit attention);
- ``fused``: ``GPTModel`` as it trains by default (``F.layer_norm``, ``F.gelu``, one
  matmul for q, k, v, ``F.scaled_dot_product_attention``), the same function;
- ``lean``: ``bench/lean_gpt.py``, the short nanoGPT-style model, the reference, with
  AdamW as nanoGPT sets it up (fused kernel on CUDA only; ``shared.training.make_optimizer``
  uses the fused kernel on CPU too, part of the project's fast path).

and prints tokens/s, the ratio to the lean reference, the achieved GFLOP/s and that as a
fraction of this machine's fp32 matmul rate measured in the same run (a 2048 x 2048
``torch.mm``). With ``--compile`` the fused model and the reference are also timed under
``torch.compile``. With CUDA, the ``gpt2`` preset is timed in bf16 autocast and its MFU
(model FLOPs per second / the GPU's peak) printed.

FLOPs per trained token (the estimate of Kaplan et al. 2020 / PaLM, as nanoGPT uses it)::

    6 * N  +  12 * n_layers * emb_dim * T

``N`` counts the parameters that take part in matmuls: all of them except the position
embeddings (a lookup). The tied token-embedding matrix counts once, for the output head,
whose matmul is real work; the token lookup is free. Each parameter costs 2 FLOPs (multiply
+ add) per token forward and 4 backward, hence 6. The second term is attention's own
matmuls, ``q @ k^T`` and ``weights @ v``: 2 * 2 * T * emb_dim per token and layer forward,
x3 with backward; ``T`` is the sequence length (the context length here).
LayerNorm, GELU, softmax and the optimizer are not counted, so the figure is a slight
underestimate of the work done. Other programs on a shared machine slow everything down in
bursts; the measurements are interleaved and the best of each kept, so every ratio compares
best cases taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lean_gpt import LeanGPT  # bench/ is on the path when run as a script

import shared
from shared.gpt import MODEL_PRESETS, GPTModel
from shared.training import make_optimizer

# Dense bf16 peak of common GPUs in TFLOP/s (vendor data sheets), for MFU.
GPU_PEAK_TFLOPS = {
    "A100": 312,
    "H100": 989,
    "H200": 989,
    "L4": 121,
    "A10": 125,
    "T4": 65,
    "V100": 125,
}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best of ``repeats`` timings of one n x n fp32 matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_token(model: torch.nn.Module, seq_len: int) -> int:
    cfg = model.cfg
    positions = cfg.context_length * cfg.emb_dim
    n = sum(p.numel() for p in model.parameters()) - positions
    return 6 * n + 12 * cfg.n_layers * cfg.emb_dim * seq_len


class Stepper:
    """One model and its optimizer; ``step()`` times a full training step in seconds."""

    def __init__(self, model: torch.nn.Module, inputs, targets, autocast: bool = False):
        self.model, self.inputs, self.targets = model, inputs, targets
        self.params = list(model.parameters())
        self.device = device = inputs.device
        self.opt = make_optimizer(model, lr=1e-4)
        if isinstance(model, LeanGPT):  # as nanoGPT: the same groups, fused AdamW on CUDA only
            groups = [
                {"params": g["params"], "weight_decay": g["weight_decay"]}
                for g in self.opt.param_groups
            ]
            fused = True if device.type == "cuda" else None
            self.opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=fused)
        self.forward = model
        self.autocast = autocast

    def compile(self) -> Stepper:
        self.forward = torch.compile(self.model)
        return self

    def step(self) -> float:
        start = time.perf_counter()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            logits = self.forward(self.inputs)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), self.targets.flatten()
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the one sync per step: the clock needs the GPU done
        return time.perf_counter() - start


def measure(scale: str, batch_size: int, rounds: int, compile_too: bool, device: str) -> dict:
    cfg = MODEL_PRESETS[scale]
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.context_length + 1), device=device)
    inputs, targets = x[:, :-1], x[:, 1:]
    base = GPTModel(cfg).to(device)
    autocast = device == "cuda"

    def build(name: str) -> torch.nn.Module:
        """A fresh copy of ``base`` on the path ``name`` (explicit, fused or lean)."""
        if name == "lean":
            return LeanGPT.from_gpt(base).to(device)
        model = GPTModel(cfg).to(device)
        model.load_state_dict(base.state_dict())
        return model.set_fused(name == "fused")

    steppers = {
        n: Stepper(build(n), inputs, targets, autocast) for n in ("explicit", "fused", "lean")
    }
    if compile_too:
        for name in ("fused", "lean"):
            steppers[f"{name}+compile"] = Stepper(build(name), inputs, targets, autocast).compile()
    for stepper in steppers.values():  # warm-up: allocations, optimizer state, compilation
        stepper.step()
        stepper.step()
    best_mm, best = 0.0, {name: float("inf") for name in steppers}
    for _ in range(rounds):
        if device == "cpu":
            best_mm = max(best_mm, matmul_gflops(repeats=3))
        for name, stepper in steppers.items():
            for _ in range(3):
                best[name] = min(best[name], stepper.step())
    per_token = flops_per_token(base, cfg.context_length)
    tokens = batch_size * cfg.context_length
    result = {
        "scale": scale,
        "params": sum(p.numel() for p in base.parameters()),
        "batch": f"{batch_size}x{cfg.context_length}",
        "matmul_gflops": best_mm,
        "flops_per_token": per_token,
        "threads": torch.get_num_threads(),
        "models": {},
    }
    for name, seconds in best.items():
        tps = tokens / seconds
        gflops = tps * per_token / 1e9
        result["models"][name] = {
            "tokens_per_s": tps,
            "gflops": gflops,
            "vs_lean": best["lean"] / seconds,
            "of_matmul": gflops / best_mm if best_mm else None,
        }
    return result


def report(result: dict) -> None:
    print(
        f"\n{result['scale']} ({result['params'] / 1e6:.2f} M parameters, batch "
        f"{result['batch']}, {result['threads']} threads); FLOPs per token "
        f"6*N + 12*n_layers*emb_dim*T = {result['flops_per_token']:,}"
    )
    if result["matmul_gflops"]:
        print(f"  fp32 matmul 2048x2048: {result['matmul_gflops']:.0f} GFLOP/s")
    for name, m in result["models"].items():
        share = f", {m['of_matmul']:.2f} of the matmul rate" if m["of_matmul"] else ""
        print(
            f"  {name:<15} {m['tokens_per_s']:>9,.0f} tokens/s  {m['vs_lean']:.2f}x lean  "
            f"{m['gflops']:6.1f} GFLOP/s{share}"
        )


def mfu(result: dict) -> None:
    """Model FLOPs utilisation of every timed model on this GPU, if its peak is known."""
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
    for model, m in result["models"].items():
        achieved = m["gflops"] / 1e3
        if peak is None:
            print(f"  {name}, {model}: {achieved:.1f} TFLOP/s (peak unknown: add it to the table)")
            continue
        m["mfu"] = achieved / peak
        print(f"  {name}, {model}: {achieved:.1f} TFLOP/s of {peak} bf16 peak = MFU {m['mfu']:.1%}")
    if peak is not None:
        result["mfu"] = result["models"]["fused"]["mfu"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scales", nargs="+", default=["tiny", "small"], choices=sorted(MODEL_PRESETS)
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved measurement rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--gpu-batch", type=int, default=8, help="batch of the gpt2 run on CUDA")
    args = parser.parse_args(argv)
    shared.setup(quiet=True)
    torch.set_num_threads(args.threads)
    results = []
    for scale in args.scales:
        results.append(measure(scale, args.batch_size, args.rounds, args.compile, "cpu"))
        report(results[-1])
    if torch.cuda.is_available():
        gpu = measure("gpt2", args.gpu_batch, args.rounds, compile_too=args.compile, device="cuda")
        gpu["device"] = "cuda, bf16 autocast"
        report(gpu)
        mfu(gpu)
        results.append(gpu)
    else:
        print("\nno CUDA device: the gpt2 preset's bf16 run and its MFU are skipped")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
