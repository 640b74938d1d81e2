"""The explorer's latency and its memory under load, on a finished study (the default study's MiniLM).

Starts `python -m workflow explore` on a free port, then over loopback:

- latency: a 64-token sentence, the features of one (site, layer, recipe) in both variants, and the
  same with one feature zeroed; `--repeats` requests of each after `--warmup`; p50 and p95 ms;
- load: `--requests` requests (the two kinds alternating) from `--clients` concurrent clients; none
  may fail, and the server's resident memory after them is compared with its memory after the
  first 20 (goal: within 10%).

    make demo && python benchmarks/explore.py           # the default study, minilm / movie_sentiment, L4 topk
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SENTENCE = (
    "The film opens slowly, but the cast is wonderful and the final act is moving; still, the dialogue is "
    "often dull, the score is loud and the plot twists feel forced, so I left the theatre unsure whether I "
    "liked it at all. The best scene, though, is the dinner near the end."
)  # 64 tokens with MiniLM's tokenizer ([CLS] and [SEP] included)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results")
    p.add_argument("--configfile", default=None)
    p.add_argument("--model", default="minilm")
    p.add_argument("--dataset", default="movie_sentiment")
    p.add_argument("--site", default="resid_post")
    p.add_argument("--layer", type=int, default=4)
    p.add_argument("--recipe", default="topk")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "workflow", "explore", "--results", args.results, "--port", str(port)]
    cmd += ["--configfile", args.configfile] if args.configfile else []
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if "ready" not in line:
            raise SystemExit(f"the explorer did not start: {line}")
        base = f"http://127.0.0.1:{port}"
        where = {k: getattr(args, k) for k in ("model", "dataset", "site", "layer", "recipe")}
        client = httpx.Client(base_url=base, timeout=60)
        plain = {**where, "text": SENTENCE, "top": 5}
        first = client.post("/api/analyse", json=plain).json()
        n_tokens = len(first["tokens"])
        feature = first["variants"]["finetuned"]["features"][1][0][0]
        zeroed = {**plain, "interventions": {"features": {"finetuned": [{"feature": feature, "mode": "zero"}]}}}
        times: dict[str, list[float]] = {"features": [], "features, one zeroed": []}
        for i in range(args.warmup + args.repeats):
            for name, body in (("features", plain), ("features, one zeroed", zeroed)):
                t = time.perf_counter()
                r = client.post("/api/analyse", json=body)
                r.raise_for_status()
                if i >= args.warmup:
                    times[name].append(1000 * (time.perf_counter() - t))
        print(f"{args.model} / {args.dataset}, {args.site} L{args.layer} {args.recipe}: a {n_tokens}-token sentence")
        for name, ms in times.items():
            p50, p95 = statistics.median(ms), percentile(ms, 0.95)
            print(f"  {name:<22} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  ({len(ms)} requests)")

        def one(i: int) -> int:
            with httpx.Client(base_url=base, timeout=120) as c:
                return c.post("/api/analyse", json=plain if i % 2 else zeroed).status_code

        with ThreadPoolExecutor(args.clients) as pool:
            codes = list(pool.map(one, range(20)))
            after_20 = rss_mb(server.pid)
            codes += list(pool.map(one, range(20, args.requests)))
        after_all = rss_mb(server.pid)
        failed = sum(c != 200 for c in codes)
        print(
            f"load: {len(codes)} requests from {args.clients} clients, {failed} failed; server memory "
            f"{after_20:.0f} MB after 20, {after_all:.0f} MB after {len(codes)} ({after_all / after_20 - 1:+.1%})"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
