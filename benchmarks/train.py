"""Training throughput: rolecast's configuration against a naive TRL run, in real tokens per second.

    .venv/bin/python benchmarks/train.py                                             # House (or the sample): rolecast vs naive TRL
    .venv/bin/python benchmarks/train.py --pack packs/house                          # any pack
    .venv/bin/python benchmarks/train.py --pack packs/house --strategies all --rounds 4
    .venv/bin/python benchmarks/train.py --pack packs/house --equal-minutes 10     # validation loss at equal training time
    .venv/bin/python benchmarks/train.py --pack packs/house --rss-steps 40 --rss-of "rolecast,rolecast unpadded"  # memory over a run

Configurations (the same LoRA, batch and examples; only how the work is done differs):

- naive TRL: TRL's defaults for a prompt-completion dataset: random batches padded to
  the longest, gradient checkpointing on (SFTConfig's default), every position scored
  by the fused LM head.
- rolecast: ``TrainSettings()`` as ``rolecast train`` runs it on the CPU (strategy auto,
  precision auto: bf16 autocast where the CPU has AVX512-BF16 or AMX).
- rolecast fp32: the same in fp32 throughout (``--precision fp32``).
- rolecast unpadded: without the two CPU defaults that keep kernels and memory in bounds
  (``--pad-to-multiple 1``: every batch its own length; ``--mmap-threshold-mib 0``: glibc's
  sliding threshold). Its memory grows over a run: ``--rss-steps 40`` shows it.
- with ``--strategies``: each batching strategy with rolecast's other settings.

Throughput is measured in one process, one optimizer step of each configuration in
turn for ``--rounds`` rounds (each configuration sees the same examples), because a
shared machine's load drifts by 3x within minutes and would decide any comparison of
runs made one after the other. Real tokens are the non-padding tokens of the batches;
the time is forward, backward and optimizer step (TRL's own ``compute_loss``). Peak
resident memory needs a process per configuration: each one trains ``--rss-steps``
steps through ``rolecast.training.sft``'s trainer in a subprocess.

``--equal-minutes M`` answers another question: what a row should be. Per-reply rows (one reply
and its context each), whole scenes (rolecast's default: every line of the character in a
stretch of scene), whole scenes with 2 lines of lead-in instead of 4, and naive TRL each train
for M minutes of their own compute time, one step at a time, the least-trained next (drift hits
them all alike), at one constant learning rate;
then each model's loss on the reply tokens of the same per-reply validation rows is printed,
with the untrained base's, the tokens with a loss per second, and the minutes an epoch of the
whole train split would take at the measured pace.

Measured on the development machine (2 shared cores, House MD, SmolLM2-135M, batch 8,
max length 512, 4 context turns; see the task report for the exact run): rolecast
about 2x naive TRL in real tokens/s, peak RSS about 2.3 GB against 4-5 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STRATEGIES = ("padded", "group_by_length", "per_example", "padding_free", "packing")


def configs(strategies: list[str]) -> list[dict]:
    runs = [{"name": "naive TRL", "strategy": "padded", "gradient_checkpointing": "on", "head": "all", "precision": "fp32"},
            {"name": "rolecast", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies"},
            {"name": "rolecast fp32", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies", "precision": "fp32"},
            {"name": "rolecast unpadded", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies",
             "pad_to_multiple": 1, "mmap_threshold_mib": 0}]
    return runs + [{"name": s, "strategy": s, "gradient_checkpointing": "off", "head": "replies"} for s in strategies]


def setup(spec: dict):
    """Tokenizer, the base model, the sampled rows and common settings."""
    import torch

    from rolecast.models import base_model as B
    from rolecast.pack import Pack
    from rolecast.settings import TrainSettings
    from rolecast.training.data import load_rows

    torch.set_num_threads(os.cpu_count() or 1)
    common = {k: spec[k] for k in ("batch_size", "grad_accum", "max_length", "max_context_turns") if spec.get(k)}
    settings = TrainSettings(**common)
    source, kwargs, _ = B.resolve_base(settings.base)
    tokenizer = B.load_tokenizer(source, kwargs)
    data = load_rows(Pack.open(spec["pack"]), "train", tokenizer, settings,
                       limit=(spec["steps"] + spec.get("warmup", 0)) * settings.batch_size * settings.grad_accum)
    return tokenizer, B.load_model(source, kwargs, "cpu", False), data, common


def trainer_for(cfg: dict, model, tokenizer, data, common: dict, steps: int, out: str):
    from rolecast.settings import TrainSettings
    from rolecast.training import sft as T

    settings = TrainSettings(strategy=cfg["strategy"], gradient_checkpointing=cfg["gradient_checkpointing"], max_steps=steps,
                             **{k: cfg[k] for k in ("precision", "pad_to_multiple", "mmap_threshold_mib") if k in cfg},
                             max_eval_examples=0, save_steps=10**6, eval_steps=10**6, early_stopping_patience=0, **common)
    return T.build_trainer(model, tokenizer, data, None, settings, out, "cpu", progress=False), settings


def ready(trainer) -> None:
    """What Trainer.train() does before its first step: activation checkpointing if asked for, training mode."""
    if trainer.args.gradient_checkpointing:
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainer.model.train()


def epochs(trainer):
    """The trainer's batches, epoch after epoch."""
    while True:
        yield from trainer.get_train_dataloader()


def interleaved(spec: dict) -> list[dict]:
    """One optimizer step per configuration in turn; per configuration: tokens and seconds of every step."""
    from rolecast.training import sft as T

    tokenizer, base, data, common = setup(spec)
    runs = []
    for cfg in configs(spec["strategies"]):
        steps = spec["warmup"] + spec["steps"]
        trainer, settings = trainer_for(cfg, copy.deepcopy(base), tokenizer, data, common, steps, spec["out"])
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        ready(trainer)
        runs.append({"cfg": cfg, "trainer": trainer, "batches": iter(trainer.get_train_dataloader()),
                     "strategy": T.pick_strategy(settings, "cpu"), "tokens": [], "seconds": []})
    for round_ in range(spec["warmup"] + spec["steps"]):
        for run in runs:
            tokens, seconds, _ = one_step(run["trainer"], run["batches"], run["cfg"]["head"])
            if round_ < spec["warmup"]:  # first calls allocate and initialise; not what training costs
                continue
            run["tokens"].append(tokens)
            run["seconds"].append(seconds)
            print(f"  {run['cfg']['name']:>16}: {tokens} tokens in {seconds:.1f} s", file=sys.stderr, flush=True)
    return [{"name": r["cfg"]["name"], "strategy": r["strategy"], "real_tokens": sum(r["tokens"]),
             "seconds": round(sum(r["seconds"]), 1), "tokens_per_s": round(sum(r["tokens"]) / sum(r["seconds"]), 2),
             "step_tokens_per_s": [round(t / s, 1) for t, s in zip(r["tokens"], r["seconds"])]} for r in runs]


def one_step(trainer, batches, head: str) -> tuple[int, float, int]:
    """Forward and backward over one optimizer step's micro-batches, then the optimizer step:
    (real tokens, seconds, tokens with a loss)."""
    import torch

    from rolecast.training.sft import replies_only_head

    micro = [next(batches) for _ in range(trainer.args.gradient_accumulation_steps)]
    items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["position_ids"].numel() for b in micro)
    start = time.perf_counter()
    with replies_only_head("cpu") if head == "replies" else contextlib.nullcontext():
        for batch in micro:
            # What Trainer.train() gets from accelerate when args.bf16 is set (prepare() wraps the forward pass).
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.args.bf16):
                loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(items))
            loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    return tokens, time.perf_counter() - start, items


#: --equal-minutes: what a row is and how it is trained; each gets the same minutes of its own training time.
EQUAL_TIME = [
    {"name": "per-reply rows", "data": "replies", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies"},
    {"name": "whole scenes", "data": "scenes", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies"},
    {"name": "scenes, 2 turns", "data": "scenes", "strategy": "auto", "gradient_checkpointing": "auto", "head": "replies",
     "max_context_turns": 2},
    {"name": "naive TRL", "data": "replies", "strategy": "padded", "gradient_checkpointing": "on", "head": "all",
     "precision": "fp32"},
]


def equal_time(spec: dict) -> list[dict]:
    """Each EQUAL_TIME configuration trained for ``minutes`` of its own time (steps interleaved, the least-trained one
    next, so that the machine's drift hits all alike), at a constant learning rate; then every model's loss on the reply
    tokens of the same per-reply validation rows."""
    import torch

    from rolecast.models import base_model as B
    from rolecast.pack import Pack
    from rolecast.settings import TrainSettings
    from rolecast.training import sft as T
    from rolecast.training.data import load_rows

    torch.set_num_threads(os.cpu_count() or 1)
    pack = Pack.open(spec["pack"])
    source, kwargs, _ = B.resolve_base(None)
    tokenizer, base = B.load_tokenizer(source, kwargs), B.load_model(source, kwargs, "cpu", False)
    validation = load_rows(pack, "validation", tokenizer, TrainSettings(data="replies"), limit=spec["val_rows"]).rows
    runs = []
    for cfg in EQUAL_TIME:
        settings = TrainSettings(data=cfg["data"], strategy=cfg["strategy"], gradient_checkpointing=cfg["gradient_checkpointing"],
                                 max_steps=10**6, max_eval_examples=0, save_steps=10**6, eval_steps=10**6,
                                 early_stopping_patience=0, **{k: cfg[k] for k in ("precision", "max_context_turns") if k in cfg})
        data = load_rows(pack, "train", tokenizer, settings)  # the whole split: an epoch is what it costs
        trainer = T.build_trainer(copy.deepcopy(base), tokenizer, data, None, settings, spec["out"], "cpu", progress=False)
        trainer.create_optimizer()  # no scheduler: the same constant rate for all, whatever their step counts
        ready(trainer)
        runs.append({"cfg": cfg, "trainer": trainer, "batches": epochs(trainer), "steps": 0, "tokens": 0, "replies": 0,
                     "seconds": 0.0, "epoch_tokens": sum(data.lengths)})
    while any(r["seconds"] < spec["minutes"] * 60 for r in runs):
        run = min(runs, key=lambda r: r["seconds"])
        tokens, seconds, replies = one_step(run["trainer"], run["batches"], run["cfg"]["head"])
        run.update(steps=run["steps"] + 1, tokens=run["tokens"] + tokens, replies=run["replies"] + replies,
                   seconds=run["seconds"] + seconds)
    results = [{"name": "untrained base", "steps": 0, "real_tokens": 0, "reply_tokens": 0, "seconds": 0.0,
                "val_reply_loss": reply_loss(base, tokenizer, validation)}]
    for r in runs:
        per_s = r["tokens"] / r["seconds"]
        results.append({"name": r["cfg"]["name"], "steps": r["steps"], "real_tokens": r["tokens"], "reply_tokens": r["replies"],
                        "seconds": round(r["seconds"], 1), "reply_tokens_per_s": round(r["replies"] / r["seconds"], 1),
                        "epoch_tokens": r["epoch_tokens"], "epoch_minutes": round(r["epoch_tokens"] / per_s / 60, 1),
                        "val_reply_loss": reply_loss(r["trainer"].model, tokenizer, validation)})
    return results


def reply_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean cross-entropy of the reply tokens of prompt-completion rows (fp32, no dropout)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = list(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
            ids = list(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False))
            assert ids[: len(prompt)] == prompt, "the template must extend the prompt"
            labels = [-100] * len(prompt) + ids[len(prompt):]
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            total, count = total + float(loss) * (len(ids) - len(prompt)), count + len(ids) - len(prompt)
    return round(total / count, 4)


def peak_rss(spec: dict) -> dict:
    """One configuration in this (fresh) process through rolecast's trainer: its peak resident memory."""
    tokenizer, model, data, common = setup(spec)
    cfg = spec["cfg"]
    trainer, settings = trainer_for(cfg, model, tokenizer, data, common, spec["steps"], spec["out"])
    from rolecast.training.runtime import map_large_buffers
    from rolecast.training.sft import replies_only_head

    map_large_buffers(settings.mmap_threshold_mib)  # as rolecast.training.sft.train does

    with replies_only_head("cpu") if cfg["head"] == "replies" else contextlib.nullcontext():
        trainer.train()
    return {"name": cfg["name"], "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def subprocess_json(mode: str, spec: dict) -> dict | list:
    proc = subprocess.run([sys.executable, __file__, "--pack", spec["pack"], f"--{mode}", json.dumps(spec)],
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", help="A pack made by rolecast prepare; default: House from ../shared/data, else the sample.")
    parser.add_argument("--rounds", type=int, default=3, help="Measured optimizer steps per configuration, interleaved.")
    parser.add_argument("--warmup", type=int, default=1, help="Rounds run first and not measured.")
    parser.add_argument("--batch-size", type=int, help="Default: TrainSettings' (examples per optimizer step).")
    parser.add_argument("--grad-accum", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--max-context-turns", type=int)
    parser.add_argument("--strategies", default="", help=f"Also these batching strategies (comma-separated, or 'all': {','.join(STRATEGIES)}).")
    parser.add_argument("--rss-steps", type=int, default=2, help="Steps of each peak-memory run (0: skip them).")
    parser.add_argument("--rss-of", default="", help="Peak-memory runs of these configurations only (comma-separated names; default: all).")
    parser.add_argument("--equal-minutes", type=float, default=0, help="Instead: per-reply rows, whole scenes (4 and 2 lines "
                        "of lead-in) and naive TRL, each trained this many minutes, then their validation loss on reply tokens.")
    parser.add_argument("--val-rows", type=int, default=64, help="Per-reply validation rows for --equal-minutes.")
    parser.add_argument("--out", default="/tmp/rolecast-train-bench")
    parser.add_argument("--interleaved", help=argparse.SUPPRESS)
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.interleaved or args.rss:
        result = interleaved(json.loads(args.interleaved)) if args.interleaved else peak_rss(json.loads(args.rss))
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.pack is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from chat import default_pack

        args.pack = str(default_pack())
    if args.equal_minutes:
        results = equal_time({"pack": args.pack, "minutes": args.equal_minutes, "val_rows": args.val_rows, "out": args.out})
        for r in results:
            epoch = f"; an epoch ({r['epoch_tokens']:,} tokens) in {r['epoch_minutes']:.3g} min" if r["steps"] else ""
            print(f"{r['name']:>16}: {r['steps']:>4} steps, {r['real_tokens']:>7} real tokens ({r['reply_tokens']} with a loss, "
                  f"{r.get('reply_tokens_per_s', 0):.0f}/s) in {r['seconds']:>6.1f} s{epoch}; "
                  f"validation loss on reply tokens {r['val_reply_loss']:.4f}")
        print(json.dumps(results))
        return
    strategies = list(STRATEGIES) if args.strategies == "all" else [s for s in args.strategies.split(",") if s]
    spec = {"pack": args.pack, "steps": args.rounds, "warmup": args.warmup, "strategies": strategies, "out": args.out, "batch_size": args.batch_size,
            "grad_accum": args.grad_accum, "max_length": args.max_length, "max_context_turns": args.max_context_turns}
    results = subprocess_json("interleaved", spec)
    if args.rss_steps:
        wanted = [n.strip() for n in args.rss_of.split(",") if n.strip()]
        for r in results:
            if wanted and r["name"] not in wanted:
                continue
            cfg = next(c for c in configs(strategies) if c["name"] == r["name"])
            r.update(subprocess_json("rss", {**spec, "steps": args.rss_steps, "warmup": 0, "cfg": cfg}))
    report(results)


def report(results: list[dict]) -> None:
    for r in results:
        rss = f", peak RSS {r['peak_rss_gb']:.2f} GB" if "peak_rss_gb" in r else ""
        print(f"{r['name']:>16} ({r['strategy']:>15}): {r['real_tokens']:>6} real tokens in {r['seconds']:>6.1f} s = "
              f"{r['tokens_per_s']:>6.2f} tokens/s (per step: {statistics.median(r['step_tokens_per_s']):.1f} median){rss}")
    by = {r["name"]: r for r in results}
    naive, ours = by["naive TRL"], by["rolecast"]
    print(f"rolecast bf16 vs fp32 (precision auto on this CPU): {ours['tokens_per_s'] / by['rolecast fp32']['tokens_per_s']:.2f}x real tokens/s")
    unpadded = by["rolecast unpadded"]
    print(f"rolecast vs unpadded (--pad-to-multiple 1 --mmap-threshold-mib 0): {ours['tokens_per_s'] / unpadded['tokens_per_s']:.2f}x "
          "real tokens/s" + (f"; peak RSS {ours['peak_rss_gb']:.2f} GB vs {unpadded['peak_rss_gb']:.2f} GB"
                          if "peak_rss_gb" in ours and "peak_rss_gb" in unpadded else ""))
    print(f"rolecast vs naive TRL: {ours['tokens_per_s'] / naive['tokens_per_s']:.2f}x real tokens/s (target >= 1.5x)"
          + (f"; rolecast peak RSS {ours['peak_rss_gb']:.2f} GB (target <= 6 GB)" if "peak_rss_gb" in ours else ""))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
