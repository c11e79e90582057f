"""Serving under load: rolecast's API vs a bare `python -m llama_cpp.server`, same model, same prompts.

    .venv/bin/python benchmarks/serve.py [--pack packs/house] [--seconds 60] [--clients 1,4,16]

For each level of concurrency, that many clients stream chat completions back to back
for ``--seconds`` on loopback; the script prints aggregate completion tokens/s, p50/p95
time to first token and total latency, and the error count (must be 0), first against
`rolecast serve`, then against the bare llama-cpp-python server given the very prompt
rolecast builds for each message (its card, retrieved exchanges and stop strings), so
that the ratio measures rolecast's serving overhead (target ≥ 0.9× at 16 clients).
The servers run one at a time, never side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat import MESSAGES, default_pack  # noqa: E402

#: ``python -m llama_cpp.server`` with the model parameters rolecast's backend uses (no AMX buffers: guard_amx).
BARE_SERVER = Path(__file__).resolve().parents[1] / "tests" / "llama_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


async def client(url: str, bodies: list[dict], until: float, stats: dict) -> None:
    async with httpx.AsyncClient(timeout=120) as http:
        i = 0
        while time.perf_counter() < until:
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            first, tokens = None, 0
            try:
                async with http.stream("POST", url, json=body) as response:
                    if response.status_code != 200:
                        stats["errors"] += 1
                        await response.aread()
                        continue
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]  # rolecast reports the exact count
                        elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                            first = first if first is not None else time.perf_counter() - start
                            tokens += 1
            except httpx.HTTPError:
                stats["errors"] += 1
                continue
            stats["ttft"].append(first if first is not None else time.perf_counter() - start)
            stats["total"].append(time.perf_counter() - start)
            stats["tokens"] += tokens


async def load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    stats = {"ttft": [], "total": [], "tokens": 0, "errors": 0}
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*(client(url, bodies[k:] + bodies[:k], until, stats) for k in range(clients)))
    stats["seconds"] = time.perf_counter() - start
    return stats


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def line(name: str, s: dict) -> str:
    rate = s["tokens"] / s["seconds"]
    return (f"{name:9s} {rate:7.1f} tok/s  ttft p50 {pct(s['ttft'], .5):5.2f} p95 {pct(s['ttft'], .95):5.2f} s  "
            f"total p50 {pct(s['total'], .5):5.2f} p95 {pct(s['total'], .95):5.2f} s  "
            f"requests {len(s['total'])}  errors {s['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rolecast.chat.performer import Performer
    from rolecast.models.base_model import default_model_path
    from rolecast.pack import Pack
    from rolecast.settings import BackendSettings, GenerationSettings

    pack = args.pack or default_pack()
    model = Pack.open(pack).name
    gen = GenerationSettings(max_tokens=64, dry_multiplier=0.0)
    sampling = {"max_tokens": gen.max_tokens, "temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k,
                "min_p": gen.min_p, "repeat_penalty": gen.repeat_penalty}
    ours = [{"model": model, "stream": True, "messages": [{"role": "user", "content": m}], **sampling} for m in MESSAGES]
    # The base model on both sides: a pack's LoRA would make rolecast run a different model.
    performer = Performer.load(pack, BackendSettings(no_adapter=True))  # the exact prompt the bare server gets
    bare = [{"model": "bare", "stream": True, "messages": performer.prompt([], m, gen=gen).messages,
             "stop": performer.post.stop_strings, **sampling} for m in MESSAGES]
    performer.backend.close()
    threads = str(os.cpu_count())
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd_of, bodies in [
            ("rolecast", lambda p: [sys.executable, "-m", "rolecast.cli", "serve", str(pack), "--port", str(p), "--no-web",
                                    "--db", f"{tmp}/bench.db", "--rate-limit", "0", "--max-queue", "256",
                                    "--dry-multiplier", "0", "--no-adapter"], ours),
            ("bare", lambda p: [sys.executable, str(BARE_SERVER), "--model", str(default_model_path()),
                                "--port", str(p), "--n_ctx", "2048", "--n_threads", threads, "--model_alias", "bare",
                                # By default a new request aborts the one in flight: queue them, as rolecast does.
                                "--interrupt_requests", "False"], bare),
        ]:
            port = free_port()
            proc = start(cmd_of(port), port)
            try:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                asyncio.run(load(url, bodies, 1, 5))  # warm up
                results[name] = {c: asyncio.run(load(url, bodies, c, args.seconds)) for c in levels}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    for c in levels:
        r, b = results["rolecast"][c], results["bare"][c]
        ratio = (r["tokens"] / r["seconds"]) / (b["tokens"] / b["seconds"])
        print(f"{c} client(s), {args.seconds:.0f} s:")
        print("  " + line("rolecast", r))
        print("  " + line("bare", b))
        print(f"  throughput ratio {ratio:.2f}×" + ("  (target ≥ 0.9×)" if c == max(levels) else ""))


if __name__ == "__main__":
    main()
