"""A load test for the judge server: a burst of identical chat requests, all at once.

    from judge_burst import burst  # with bench/ on sys.path
    with serve_in_background(app) as url:
        print(burst(url, "sft", n=32))

``burst`` measures the requests per second and the latencies, and checks that nothing is
lost on the way: every request gets an answer (or a status that says why not), and greedy
decoding gives every one the same answer. ``tests/bench_all.py`` reports it for the
released SFT model.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.checks import is_int

__all__ = ["burst"]


def burst(
    url: str,
    model: str,
    n: int = 32,
    prompt: str = "What colour is Nabo's hat?",
    num_predict: int = 8,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send ``n`` identical ``/api/chat`` requests at once, each from its own thread.

    The requests are greedy (``temperature`` 0), not streamed, ``num_predict`` tokens long.
    ``timeout`` is how long each may wait for its answer; as they all start together, the
    whole burst takes about that long at most. Returns ``ok`` (answers with status 200), ``statuses``
    (status -> count; 0: no answer at all), ``answers`` (the distinct answer texts: one,
    as greedy decoding is deterministic), ``errors`` (the first few error messages),
    ``seconds`` (the whole burst), ``requests_per_s`` (answers per second) and ``p50_ms``
    and ``p95_ms`` (the latencies of the answered requests, nearest rank; None if none).
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    payload = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": num_predict},
        }
    ).encode()
    endpoint = url.rstrip("/") + "/api/chat"
    # No proxy: the server is on this machine (an http_proxy variable would still be used).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(_: int) -> tuple[int, str, float]:
        request = urllib.request.Request(
            endpoint, data=payload, headers={"Content-Type": "application/json"}
        )
        began = time.perf_counter()
        try:
            with opener.open(request, timeout=timeout) as r:
                status, text = r.status, json.loads(r.read())["message"]["content"]
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        except OSError as e:  # refused, reset, timed out
            status, text = 0, f"{type(e).__name__}: {e}"
        return status, text, time.perf_counter() - began

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    seconds = time.perf_counter() - began
    answered = sorted(latency for status, _, latency in results if status == 200)

    def percentile(q: float) -> float | None:
        if not answered:
            return None
        return 1000 * answered[max(0, math.ceil(q * len(answered)) - 1)]

    statuses: dict[int, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "n": n,
        "ok": len(answered),
        "statuses": statuses,
        "answers": sorted({text for status, text, _ in results if status == 200}),
        "errors": [text for status, text, _ in results if status != 200][:3],
        "seconds": seconds,
        "requests_per_s": len(answered) / seconds,
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
    }
