"""``make bench``: every speed figure of the project in one markdown table.

    python bench/bench_all.py [--out bench/RESULTS.md] [--quick]

Runs, one after another on an otherwise idle machine: the tokenizer benchmark
(``bench_bpe.py``), training speed against the lean reference (``bench_training.py``), the
KV cache at a 1024-token context (``bench_kv_cache.py``) and a burst of 32 requests to the
judge server with the released SFT model. Then adds the per-notebook wall time and peak
memory at the CI scale (``bench/notebooks.json``, written by ``bench/bench_notebooks.py``)
and the last recorded ``make test`` time (``bench/make_test.json``, written by
``tests/tools/timed_make.py --json``). Prints the table and writes it to ``--out``.

Ratios are measured within one run; absolute figures hold for the machine named at the top.
``--quick`` takes fewer rounds (a rougher table in about half the time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import bench_bpe
import bench_kv_cache
import bench_training
import torch

from shared.runtime import DATA_DIR, REPO_DIR

BENCH_DIR = REPO_DIR / "bench"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def judge_server_burst(n: int = 32) -> dict | None:
    """A burst of ``n`` concurrent chat requests to the released SFT model, served locally."""
    from judge_burst import burst

    from shared.judge_server import create_app, load_chat_model, serve_in_background

    path = DATA_DIR / "checkpoints" / "sft.pt"
    if not path.is_file():
        print(f"no {path}: the judge-server burst is skipped")
        return None
    app = create_app({"sft": load_chat_model("sft", path)}, max_requests=n)
    with serve_in_background(app) as url:
        burst(url, "sft", n=1, timeout=60)  # warm-up
        result = burst(url, "sft", n=n, num_predict=8, timeout=120)
    print(
        f"judge server: {result['ok']} of {n} answered in {result['seconds']:.2f} s, "
        f"{result['requests_per_s']:.1f} requests/s, p50 {result['p50_ms']:.0f} ms, "
        f"p95 {result['p95_ms']:.0f} ms"
    )
    return result


def read_json(name: str) -> dict | None:
    path = BENCH_DIR / name
    return json.loads(path.read_text()) if path.is_file() else None


def table(figures: dict) -> str:
    rows: list[tuple[str, str, str]] = []

    bpe = figures["bpe"]
    t = bpe["train"]
    rows.append(
        (
            f"BPE training, {t['chars'] / 1e6:.1f} M chars, vocab {t['vocab']:,}",
            f"ours {t['ours_s']:.2f} s, HF `tokenizers` (Rust) {t['hf_tokenizers_s']:.2f} s: "
            f"ours takes {t['ours_s'] / t['hf_tokenizers_s']:.2f}x as long",
            "",
        )
    )
    for name, e in bpe["encode"].items():
        rows.append(
            (
                f"encoding `{name}` ({e['tokens']:,} tokens)",
                f"ours {e['ours_warm'] / 1e6:.2f} M tokens/s (warm), tiktoken "
                f"{e['tiktoken'] / 1e6:.2f} M: ours at {e['ours_warm'] / e['tiktoken']:.2f}x",
                "same ids",
            )
        )
    for r in figures["training"]:
        m = r["models"]
        where = "CPU" if "device" not in r else r["device"]
        rows.append(
            (
                f"training `{r['scale']}`, batch {r['batch']}, {where}, {r['threads']} threads",
                f"lean reference {m['lean']['tokens_per_s']:,.0f} tokens/s; GPTModel fused path "
                f"**{m['fused']['vs_lean']:.2f}x** of it, explicit path "
                f"{m['explicit']['vs_lean']:.2f}x",
                ">= 1.0x",
            )
        )
        if m["fused"]["of_matmul"]:
            rows.append(
                (
                    f"training `{r['scale']}`: share of the fp32 matmul rate "
                    f"({r['matmul_gflops']:.0f} GFLOP/s)",
                    f"fused {m['fused']['of_matmul']:.2f}, lean {m['lean']['of_matmul']:.2f}, "
                    f"explicit {m['explicit']['of_matmul']:.2f}",
                    ">= 0.7 on `small`" if r["scale"] == "small" else "",
                )
            )
        for name in ("fused+compile", "lean+compile"):
            if name in m:
                rows.append(
                    (f"training `{r['scale']}`, {name}", f"{m[name]['vs_lean']:.2f}x lean", "")
                )
        if "mfu" in r:
            rows.append((f"training `{r['scale']}`: MFU", f"{r['mfu']:.1%}", ""))
    for k in figures["kv_cache"]:
        rows.append(
            (
                f"KV cache, context {k['context']}, prompt {k['prompt']} + {k['new_tokens']} new",
                f"{k['tokens_per_s_plain']:.0f} -> {k['tokens_per_s_cached']:.0f} tokens/s: "
                f"**{k['speedup']:.1f}x**, identical greedy tokens",
                ">= 5x" if k["context"] >= 1024 and k["prompt"] > 16 else "",
            )
        )
    b = figures.get("judge_server")
    if b:
        rows.append(
            (
                f"judge server, {b['n']} concurrent chat requests (SFT model, 8 tokens each)",
                f"{b['ok']}/{b['n']} answered, {b['requests_per_s']:.1f} requests/s, "
                f"p50 {b['p50_ms']:.0f} ms, p95 {b['p95_ms']:.0f} ms",
                "all answered",
            )
        )
    notebooks = figures.get("notebooks") or {}
    for path, nb in notebooks.items():
        if not path.startswith("_"):
            name = path.removeprefix("notebooks/")
            rows.append(
                (
                    f"`{name}` at the CI scale",
                    f"{nb['seconds']:.0f} s, peak {nb['peak_mb'] / 1024:.2f} GB",
                    "<= 3 GB",
                )
            )
    gpu = figures.get("gpu")
    for r in (gpu or {}).get("runs", []):
        m = r["models"]
        compiled = m.get("fused+compile", {}).get("mfu")
        rows.append(
            (
                f"training `{r['scale']}` on {gpu['_device']}, bf16 autocast, batch {r['batch']} "
                f"({gpu['_date']}, torch {gpu['_torch']})",
                f"lean reference {m['lean']['tokens_per_s']:,.0f} tokens/s; fused path "
                f"**{m['fused']['vs_lean']:.2f}x**; MFU fused {m['fused']['mfu']:.1%}, lean "
                f"{m['lean']['mfu']:.1%}"
                + (f", fused + `torch.compile` {compiled:.1%}" if compiled else ""),
                ">= 1.0x",
            )
        )
    test = figures.get("make_test")
    if test:
        split = ", ".join(f"{k} {v:.0f} s" for k, v in test["seconds"].items())
        rows.append(
            (
                f"`make test` from a fresh clone ({test['_date']}, {test['_machine']})",
                f"{test['total'] / 60:.1f} min ({split})",
                "<= 15 min",
            )
        )
    lines = [
        f"Measured {figures['date']} on {figures['machine']}.",
        "Ratios are taken within one run; notebook and `make test` times come from the "
        "files in `bench/` (their own run).",
        "",
        "| measure | figure | goal |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="no new measurements: rewrite the table from the last figures (--out's .json) "
        "with the current bench/notebooks.json and bench/make_test.json",
    )
    args = parser.parse_args()
    rounds = ["--rounds", "2"] if args.quick else []
    if args.reuse:
        figures = json.loads(args.out.with_suffix(".json").read_text())
    else:
        figures = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
        print("== tokenizer ==")
        figures["bpe"] = bench_bpe.main(["--skip-educational"])
        print("\n== training speed ==")
        figures["training"] = bench_training.main(rounds)
        print("\n== KV cache ==")
        figures["kv_cache"] = bench_kv_cache.main(["--repeats", "1" if args.quick else "2"])
        print("\n== judge server ==")
        figures["judge_server"] = judge_server_burst()
    figures["notebooks"] = read_json("notebooks.json")
    figures["make_test"] = read_json("make_test.json")
    figures["gpu"] = read_json("gpu.json")  # recorded on a GPU machine (bench_training.py)
    text = "# Benchmarks\n\nWritten by `make bench` (`bench/bench_all.py`).\n\n" + table(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    print("\n" + text)
    print(f"written to {args.out} (figures in {args.out.with_suffix('.json').name})")


if __name__ == "__main__":
    main()
