"""The benchmark scripts still run and ``make bench`` renders their figures as one table.

Smoke runs at toy sizes (seconds): they check the plumbing and the assertions inside the
benchmarks (identical greedy tokens with and without the KV cache), not the speed.
"""

from __future__ import annotations

import bench_all
import bench_kv_cache
import bench_training


def test_training_and_kv_cache_benchmarks_run_and_render(tmp_path, monkeypatch):
    training = bench_training.main(["--scales", "tiny", "--rounds", "1", "--batch-size", "2"])
    assert [r["scale"] for r in training] == ["tiny"]
    models = training[0]["models"]
    assert set(models) == {"explicit", "fused", "lean"} and models["lean"]["vs_lean"] == 1.0
    kv = bench_kv_cache.main(["--new-tokens", "3", "--repeats", "1", "--threads", "1"])
    assert [k["setting"] for k in kv] == ["a", "b", "c"]
    assert kv[0]["context"] == 1024 and kv[0]["prompt"] + 3 == 1024
    figures = {
        "date": "2026-01-01",
        "machine": bench_all.machine(),
        "bpe": {
            "train": {"chars": 6e6, "vocab": 4096, "ours_s": 1.0, "hf_tokenizers_s": 2.0},
            "encode": {"x.txt": {"tokens": 10, "ours_warm": 2e6, "tiktoken": 4e6, "ours_cold": 1}},
        },
        "training": training,
        "kv_cache": kv,
        "judge_server": {"n": 32, "ok": 32, "requests_per_s": 100.0, "p50_ms": 10, "p95_ms": 20},
        "notebooks": {"_machine": "m", "notebooks/01_x.ipynb": {"seconds": 3, "peak_mb": 512}},
        "make_test": {"_date": "d", "_machine": "m", "seconds": {"unit": 60.0}, "total": 600.0},
    }
    text = bench_all.table(figures)
    assert "| measure | figure | goal |" in text
    assert "ours takes 0.50x as long" in text and "`01_x.ipynb` at the CI scale" in text
    assert "training `tiny`" in text and ">= 5x" in text and "10.0 min" in text
