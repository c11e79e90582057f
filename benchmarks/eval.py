"""Eval speed: today's `rolecast eval` against the eval of an earlier commit, on the same pack, in one run.

    .venv/bin/python benchmarks/eval.py PACK [--limit 40] [--baseline 11e12b2] [--variants base,prompt,...]
    .venv/bin/python benchmarks/eval.py PACK --baseline HEAD --variants retrieval,rerank --scenes 0

Runs the earlier commit's evaluate (checked out into a temporary git worktree, same
virtualenv) and then this checkout's, on a copy of PACK each, with the same variants,
examples and seed, and prints wall seconds for both, the ratio, the per-variant and
per-judge split of the new one, and the extrapolation to the default report (200
exchanges). The new eval does more per variant (knowledge probes, replayed scenes, the
judges), so the ratio is the price of the judges, not a like-for-like speed-up. Run it
alone: two heavy jobs on two cores both crawl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import json, sys, time
sys.path.insert(0, {src!r})
from rolecast.evaluation.evaluate import evaluate
from rolecast.pack import Pack
from rolecast.settings import BackendSettings, EvalSettings, GenerationSettings
settings = EvalSettings(variants={variants!r}, limit={limit}, seed=13, **{extra!r})
start = time.perf_counter()
metrics = evaluate(Pack.open({pack!r}), settings, BackendSettings(), GenerationSettings())
print(json.dumps({{"seconds": time.perf_counter() - start, "split": metrics.get("seconds")}}))
"""


def run(src: Path, pack: Path, variants: list[str], limit: int, extra: dict) -> dict:
    code = RUN.format(src=str(src), pack=str(pack), variants=variants, limit=limit, extra=extra)
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.exit(f"eval of {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pack", type=Path)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--baseline", default="11e12b2", help="git commit of the eval to compare with")
    parser.add_argument("--variants", default="base,prompt,retrieval,lora,lora+rerank")
    parser.add_argument("--scenes", type=int, default=None, help="held-out scenes per variant, on both sides "
                        "(default: the eval's own default)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="rolecast-bench-") as tmp:
        tmp = Path(tmp)
        worktree = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)
        try:
            results = {}
            both = {} if args.scenes is None else {"scenes": args.scenes}
            for name, src, extra in (("baseline", worktree / "src", both),
                                     ("rolecast", ROOT / "src", {**both, "resume": False})):
                pack = tmp / name / args.pack.name
                shutil.copytree(args.pack, pack, ignore=shutil.ignore_patterns("eval", ".eval-runs"))
                start = time.perf_counter()
                results[name] = run(src, pack, variants, args.limit, extra)
                print(f"{name}: {results[name]['seconds']:.0f} s ({time.perf_counter() - start:.0f} s with start-up)")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    base, new = results["baseline"]["seconds"], results["rolecast"]["seconds"]
    split = results["rolecast"]["split"] or {}
    print(f"\n{len(variants)} variants x {args.limit} exchanges: baseline {base:.0f} s, rolecast {new:.0f} s, "
          f"ratio {new / base:.2f}x")
    print("rolecast split:", json.dumps(split))
    fixed = (split.get("judges_fit") or 0) + (split.get("judging") or 0)
    per_example = (new - fixed) / args.limit
    # An upper bound: probes, scenes and knowledge probes cost the same at any --limit but are scaled here too.
    print(f"extrapolated to 200 exchanges (upper bound): rolecast ~{(fixed + per_example * 200) / 60:.1f} min "
          f"(target <= 15), baseline ~{base / args.limit * 200 / 60:.1f} min")


if __name__ == "__main__":
    main()
