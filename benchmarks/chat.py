"""Chat engine speed and memory, as ratios against bare llama-cpp-python measured in the same run.

    .venv/bin/python benchmarks/chat.py [--pack packs/house] [--rounds 12] [--model base.gguf] [--threads N]

Prints:
1. streamed decode tokens/s of one candidate: rolecast's Performer vs bare
   ``Llama.create_chat_completion(stream=True)`` on the same model, prompt and settings
   (target ≥ 0.95×);
2. time to first token, rolecast (retrieval and prompt building included) vs bare
   (target ≤ 1.1× + 25 ms);
3. best-of-4 reranked reply latency vs one reply (target ≤ 1.5×);
4. retrieval query latency over the pack (target ≤ 20 ms);
5. peak resident memory of ``rolecast chat PACK`` with the default model (target ≤ 1.5 GB).

The pack defaults to House built from ../shared/data (built into /tmp if needed), else
the sample pack.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MESSAGES = ["I have chest pain. Should I be worried?", "What do you think of your boss?", "Are you ever wrong?",
            "Why are you so rude to everyone?", "Can you help me with my leg?", "What's the diagnosis?",
            "Do you believe in God?", "I think you're lying.", "Good morning!", "Is it lupus?",
            "Why do you limp?", "What do you do for fun?"]


def default_pack() -> Path:
    from rolecast.prepare import prepare
    from rolecast.settings import PrepareSettings

    if (SHARED / "house-md").exists():
        out = Path(tempfile.gettempdir()) / "rolecast-bench" / "house"
        if not (out / "style").exists():
            prepare(sorted((SHARED / "house-md").glob("season*.csv")), PrepareSettings(character="House"), out)
        return out
    out = Path(tempfile.gettempdir()) / "rolecast-bench" / "maggie"
    if not (out / "style").exists():
        prepare([ROOT / "examples" / "sample" / "harbor_lights.txt"], PrepareSettings(character="Maggie"), out)
    return out


def bare_stream(llm, messages, gen) -> tuple[float, float, int]:
    """(time to first token, decode seconds after it, tokens) for bare llama-cpp-python."""
    start = time.perf_counter()
    first = None
    tokens = 0
    for chunk in llm.create_chat_completion(messages=messages, stream=True, max_tokens=gen.max_tokens,
                                            temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                                            min_p=gen.min_p, repeat_penalty=gen.repeat_penalty, seed=gen.seed,
                                            stop=gen.stop):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            first = first if first is not None else time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - (first or end), tokens


def ours_stream(performer, message, gen) -> tuple[float, float, int]:
    start = time.perf_counter()
    stream = performer.stream([], message, gen=gen)
    first = None
    for _ in stream:
        first = first if first is not None else time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - (first or end), stream.reply.completion_tokens


def peak_rss_of_chat(pack: Path, model: Path | None = None) -> float:
    """Peak resident memory (GB) of `rolecast chat PACK` answering two messages, read from /proc."""
    extra = ["--model", str(model), "--no-adapter"] if model else []
    proc = subprocess.Popen([sys.executable, "-m", "rolecast.cli", "chat", str(pack), "--seed", "1", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write("Hello there.\nIs it lupus?\n/quit\n")
    proc.stdin.close()
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        time.sleep(0.2)
    proc.wait(timeout=120)
    return peak / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=len(MESSAGES))
    parser.add_argument("--model", type=Path, default=None, help="another GGUF base (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads on both sides (0: every core)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llama_cpp import Llama

    from rolecast.backends.llamacpp import guard_amx
    from rolecast.chat.performer import Performer
    from rolecast.models.base_model import default_model_path
    from rolecast.settings import BackendSettings, GenerationSettings, PerformerSettings

    guard_amx()  # bare Llama gets the model parameters rolecast's backend uses
    pack = args.pack or default_pack()
    model = args.model or default_model_path()
    threads = args.threads or os.cpu_count()
    # The base model, as bare runs it.
    performer = Performer.load(pack, BackendSettings(model=str(model) if args.model else None, no_adapter=True,
                                                     threads=threads))
    # DRY is rolecast's and bare llama-cpp-python's Llama has no DRY: off on both sides for a fair rate.
    gen = GenerationSettings(max_tokens=96, dry_multiplier=0.0, seed=7)
    llm = Llama(model_path=str(model), n_ctx=2048, n_threads=threads, verbose=False)
    messages = (MESSAGES * 4)[: args.rounds]
    print(f"pack: {pack} ({performer.character}); rounds: {len(messages)}; model: {model.name}; threads: {threads}")

    # Warm both (page in the model, first-call costs).
    ours_stream(performer, "Hello.", gen)
    bare_stream(llm, performer.prompt([], "Hello.", gen=gen).messages, gen)

    ours, bare = [], []
    for i, message in enumerate(messages):  # interleaved, so both see the same machine load
        settings = gen.updated(seed=i)
        stop = [*settings.stop, *performer.post.stop_strings]
        prompt = performer.prompt([], message, gen=settings).messages
        bare.append(bare_stream(llm, prompt, settings.model_copy(update={"stop": stop})))
        ours.append(ours_stream(performer, message, settings))
    rate = lambda rows: sum(r[2] for r in rows) / sum(r[1] for r in rows)  # noqa: E731
    ttft = lambda rows: statistics.mean(r[0] for r in rows)  # noqa: E731
    print(f"1. decode tokens/s: rolecast {rate(ours):.1f}, bare {rate(bare):.1f} → {rate(ours) / rate(bare):.3f}× "
          f"(target ≥ 0.95×)")
    print(f"2. time to first token: rolecast {ttft(ours) * 1000:.0f} ms, bare {ttft(bare) * 1000:.0f} ms → "
          f"{ttft(ours) / ttft(bare):.2f}× (target ≤ 1.1× + 25 ms = {(1.1 * ttft(bare) + 0.025) * 1000:.0f} ms)")

    one, four = [], []
    for i, message in enumerate(messages):
        settings = gen.updated(seed=100 + i)
        start = time.perf_counter()
        performer.reply([], message, gen=settings, perf=PerformerSettings(candidates=1))
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        performer.reply([], message, gen=settings, perf=PerformerSettings(candidates=4))
        four.append(time.perf_counter() - start)
    print(f"3. best-of-4 reply: {statistics.mean(four):.2f} s vs one reply {statistics.mean(one):.2f} s → "
          f"{statistics.mean(four) / statistics.mean(one):.2f}× (target ≤ 1.5×)")

    index = performer.index
    times = []
    for i in range(200):
        start = time.perf_counter()
        index.search(MESSAGES[i % len(MESSAGES)] + f" {i}", k=4)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"4. retrieval over {len(index):,} exchanges: mean {statistics.mean(times) * 1000:.1f} ms, "
          f"p95 {times[int(0.95 * len(times))] * 1000:.1f} ms (target ≤ 20 ms)")
    llm.close()
    performer.backend.close()
    print(f"5. peak RSS of `rolecast chat {pack.name}`: {peak_rss_of_chat(pack, args.model):.2f} GB (target ≤ 1.5 GB)")


if __name__ == "__main__":
    main()
