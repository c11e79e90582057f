"""LoRA fine-tuning on a pack's examples: TRL's SFTTrainer with a PEFT LoRA.

    rolecast train packs/house                       # the bundled SmolLM2-135M GGUF, on the CPU
    rolecast train packs/house --max-minutes 30      # a time budget; ends with a saved adapter
    rolecast train packs/house --resume              # continue an interrupted run

    >>> result = train("packs/house", TrainSettings(max_steps=200))     # doctest: +SKIP
    >>> result.adapter, result.steps, result.eval_loss                   # doctest: +SKIP

The rows are the pack's scenes (default: the loss on every line of the character in a
stretch of scene) or one prompt-completion pair per reply (``--data replies``); see
``data.py``. Either way the system turn is the one the chat engine sends.

Writes PACK/adapter (the PEFT folder, atomically, recorded in pack.json with its base)
and PACK/train/: meta.json (resolved settings, example checksums, versions),
metrics.json, loss.png and checkpoints/ (kept while the run can go on). Budgets
(``max_steps``, ``max_minutes``) end cleanly with a saved adapter; Ctrl-C or SIGTERM
stops after the current step with a checkpoint and prints the ``--resume`` command.

On the CPU, ``strategy=auto`` trains one example per forward pass and accumulates the
gradients of a batch: no padding and no attention across examples, the least memory
(2.5 GB against 6.4 GB for padded batches of 4), and as many real tokens per second as
any batching on two cores (benchmarks/train.py: 165-175 tokens/s against 160-163 for
padded or length-grouped batches). With gradient checkpointing off on the CPU and TRL's
LM head scoring reply tokens only (:func:`replies_only_head`) that is about twice the
throughput of TRL's defaults. On CUDA, auto picks padding-free batches when FlashAttention
is installed (examples kept apart in one row), else length-grouped padded batches.

Two CPU defaults keep a long run's pace and memory where its first steps put them
(House, 40 steps, alone): each batch is padded to a multiple of 64 tokens
(``--pad-to-multiple``; 342 s against 421 s: likely a few shapes reusing their bf16 kernels), and
buffers above 4 MiB are mapped and handed back when freed (``--mmap-threshold-mib``;
peak resident memory 2.93 GB against 5.69 GB, which had kept growing to 7.8 GB by the
end of a 60-minute run).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import shlex
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import EmptyResultError, SettingsError, TrainingError, require
from ..files import atomic_write, read_json, sha256, write_json
from ..models.base_model import load_model, load_tokenizer, mixed_precision, resolve_base
from ..models.templates import ChatTemplate
from ..pack import Pack
from ..pack.system_turn import training_system_prompt
from ..progress import say
from ..settings import TrainSettings
from .data import Rows, load_rows
from .export import exportable_arch
from .runtime import (
    Budget,
    check_disk,
    checkpointing,
    drop_partial,
    drop_stale_export,
    last_checkpoint,
    lora_parameters,
    lora_targets,
    pad_multiple,
    pick_device,
    processes,
    run_trainer,
    save_adapter,
    share_cores,
    show_progress,
    versions,
)

log = logging.getLogger(__name__)

CHECKPOINTS = Path("train") / "checkpoints"
RUN_FILE = "run.json"  # the resolved settings of the run the checkpoints belong to
#: Settings that shape the adapter or its data: a resumed run must keep them.
FIXED_ON_RESUME = ("base", "data", "lora_r", "lora_alpha", "target_modules", "max_length", "max_context_turns", "strategy",
                   "batch_size", "grad_accum", "seed")


@dataclass
class TrainResult:
    adapter: Path | None
    steps: int
    eval_loss: float | None
    stopped: str  # completed, early_stopping, max_steps, max_minutes
    metrics: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the trainer


def epoch_estimate(tokens: int, model, device: str, settings: TrainSettings) -> str:
    """What an epoch of ``tokens`` will take here, said before training starts (an estimate: bases.tokens_per_s)."""
    import torch

    from ..models.bases import tokens_per_s

    params = sum(p.numel() for p in model.parameters()) / 1e9
    kind = "gpu" if device == "cuda" else "bf16" if mixed_precision(settings.precision, device, torch) else "fp32"
    minutes = tokens / tokens_per_s(params, kind) / 60
    where = {"gpu": "one GPU (a FLOP estimate)", "bf16": "two CPU cores with bf16",
             "fp32": "two CPU cores without bf16"}[kind]
    return (f"an epoch of {tokens:,} tokens on a {params:.2f}B base: about {minutes:,.0f} minute{'' if round(minutes) == 1 else 's'} on {where}, "
            f"estimated from the 135M base's measured pace" + (f" (--max-minutes {settings.max_minutes:g} caps it)"
                                                                if settings.max_minutes else ""))


def batching(strategy: str, settings: TrainSettings, mean_length: float) -> dict[str, Any]:
    """SFTConfig arguments for a batching strategy; an optimizer step always sees about batch_size × grad_accum examples."""
    sizes = {"per_device_train_batch_size": settings.batch_size, "per_device_eval_batch_size": settings.batch_size,
             "gradient_accumulation_steps": settings.grad_accum}
    if strategy == "per_example":
        return {**sizes, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                "gradient_accumulation_steps": settings.batch_size * settings.grad_accum, "max_length": settings.max_length}
    if strategy == "packing":
        rows = max(1, round(settings.batch_size * mean_length / settings.max_length))
        return {**sizes, "per_device_train_batch_size": rows, "per_device_eval_batch_size": rows,
                "packing": True, "packing_strategy": "bfd", "max_length": settings.max_length}
    if strategy == "padding_free":
        # Rows are already fitted to max_length; TRL refuses a max_length it would not enforce here.
        return {**sizes, "padding_free": True, "max_length": None}
    sampling = "group_by_length" if strategy == "group_by_length" else "random"
    return {**sizes, "max_length": settings.max_length, "train_sampling_strategy": sampling}


def pick_strategy(settings: TrainSettings, device: str) -> str:
    """auto: one example at a time on the CPU (no padding, no cross-example attention: fastest measured);
    on CUDA a flattened padding-free batch when FlashAttention is there to keep examples apart cheaply."""
    if settings.strategy != "auto":
        return settings.strategy
    if device == "cpu":
        return "per_example"
    return "padding_free" if importlib.util.find_spec("flash_attn") else "group_by_length"


def sft_config(settings: TrainSettings, out: Path, device: str, evaluate: bool, mean_length: float, progress: bool):
    import torch
    from trl import SFTConfig

    early = evaluate and settings.early_stopping_patience > 0
    if early and settings.save_steps % settings.eval_steps:
        raise SettingsError(f"--save-steps {settings.save_steps} must be a multiple of --eval-steps {settings.eval_steps} "
                            "with early stopping (the best checkpoint is kept)", "change one, or pass --early-stopping-patience 0")
    half = mixed_precision(settings.precision, device, torch)
    return SFTConfig(
        output_dir=str(out), num_train_epochs=settings.epochs, max_steps=settings.max_steps or -1,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0,
        logging_steps=max(1, min(10, settings.eval_steps // 5)), logging_first_step=True, disable_tqdm=not progress, report_to="none",
        eval_strategy="steps" if evaluate else "no", eval_steps=settings.eval_steps,
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
        load_best_model_at_end=early, metric_for_best_model="eval_loss", greater_is_better=False,
        bf16=half is torch.bfloat16, fp16=half is torch.float16, use_cpu=device == "cpu",
        **checkpointing(settings, device, SFTConfig),
        seed=settings.seed, data_seed=settings.seed, completion_only_loss=True, dataset_num_proc=None,
        pad_to_multiple_of=pad_multiple(settings, device),
        **batching(pick_strategy(settings, device), settings, mean_length))


def build_trainer(model, tokenizer, train: Rows, evals: Rows | None, settings: TrainSettings, out: Path,
                  device: str = "cpu", progress: bool = True, callbacks: list | None = None):
    """An SFTTrainer over the rows, with a fresh LoRA on ``model``."""
    datasets = require("datasets", "train")
    peft = require("peft", "train")
    trl = require("trl", "train")
    from transformers import EarlyStoppingCallback

    evals = evals if evals is not None and evals.rows else None
    config = sft_config(settings, out, device, evals is not None, sum(train.lengths) / len(train.lengths), progress)
    lora = peft.LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                           target_modules=lora_targets(model, settings.target_modules), bias="none", task_type="CAUSAL_LM")
    callbacks = list(callbacks or [])
    if config.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    datasets.disable_progress_bars()  # a bar per tokenizing map() call; the training bar is the one that matters
    trainer = trl.SFTTrainer(
        model=model, args=config, processing_class=tokenizer, peft_config=lora, callbacks=callbacks,
        train_dataset=datasets.Dataset.from_list(train.rows),
        eval_dataset=datasets.Dataset.from_list(evals.rows) if evals else None)
    show_progress(trainer, progress)
    return trainer


@contextlib.contextmanager
def replies_only_head(device: str):
    """Score only the reply tokens in TRL's fused LM head on the CPU too.

    TRL scores every position unless Triton runs the head (to keep tile shapes fixed for
    compilers); the loss needs the reply tokens only, and the 49k-wide head of SmolLM2 is
    a fifth of its forward pass. TRL's compact path is plain torch, so it runs on the CPU.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if device != "cpu" or original is None:  # another TRL: leave it as it is
        yield
        return
    trl_utils._use_triton = lambda dev: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


# ----------------------------------------------------------------------------- the run


def train(pack: Pack | str | Path, settings: TrainSettings, progress: bool = True) -> TrainResult:
    """Train a LoRA on the pack's examples; write PACK/adapter and PACK/train/ (see the module docstring)."""
    pack = pack if isinstance(pack, Pack) else Pack.open(pack)
    device = pick_device(settings)
    out = pack.path / CHECKPOINTS
    data_sum = data_checksum(pack)
    checkpoint = resume_checkpoint(out, settings, data_sum)
    share_cores(settings)
    rank = processes()[0]
    source, kwargs, gguf = resolve_base(settings.base)
    if settings.qlora and gguf:
        raise TrainingError("--qlora needs a Hugging Face model (folder or id) as --base, not a .gguf",
                            "drop --qlora to train the dequantized GGUF in bf16")
    exportable_arch(source if settings.base else None, kwargs, gguf)  # before anything long: a LoRA nobody can serve is no use
    tokenizer = load_tokenizer(source, kwargs)
    ChatTemplate.of_tokenizer(tokenizer, name=settings.base or "the default base")  # one that cannot serve stops here
    data = load_rows(pack, "train", tokenizer, settings)
    if not data.rows:
        raise EmptyResultError(f"the pack {pack.path} has no training examples" + (f" that fit --max-length {settings.max_length}" if data.skipped else ""),
                               f"rebuild it with: rolecast prepare SCRIPTS --character NAME --out {pack.path}")
    evals = load_rows(pack, "validation", tokenizer, settings, limit=settings.max_eval_examples) if settings.max_eval_examples else None
    if evals is None or not evals.rows:
        log.warning("no validation examples: training without validation loss or early stopping")
    model = load_model(source, kwargs, device, settings.qlora)
    check_disk(pack.path, lora_parameters(model, settings))
    base = base_record(settings.base, source, gguf)
    if checkpoint is None and rank == 0:  # a new run: the previous run's checkpoints go (only now that this one can start)
        shutil.rmtree(out, ignore_errors=True)
        write_json(out / RUN_FILE, {"settings": settings.model_dump(), "base": base, "data": data_sum})
    budget, command = Budget(settings.max_minutes), resume_command(pack.path)
    with replies_only_head(device), warnings.catch_warnings():
        # PEFT looks for the base's config.json when saving, to check the vocabulary (a GGUF base has none);
        # TRL and PEFT still call transformers' old name for activation checkpointing.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated")
        trainer = build_trainer(model, tokenizer, data, evals, settings, out, device, progress, [budget.callback()])
        cap_steps(trainer, settings)
        log.info("training %s on %s (%s, %d examples, %d skipped as too long); if interrupted, continue with: %s",
                 pack.character, base["base_name"], device, len(data.rows), data.skipped, command)
        if rank == 0:
            estimate = epoch_estimate(sum(data.lengths), model, device, settings)
            say(estimate[:1].upper() + estimate[1:])
        output = run_trainer(trainer, checkpoint, budget, out, command)
        stopped, eval_loss = stop_reason(trainer, budget, settings), final_eval_loss(trainer)
        if rank:  # the first process writes the pack: the adapter is the same in every one
            return TrainResult(pack.part("adapter"), trainer.state.global_step, eval_loss, stopped, {})
        adapter = save_adapter(pack, trainer.model, base, command)
    drop_stale_export(pack)
    pack.record("adapter", **base, steps=trainer.state.global_step, eval_loss=eval_loss, lora_r=settings.lora_r,
                lora_alpha=settings.lora_alpha, target_modules=list(settings.target_modules),
                system_turn=settings.system_turn)
    metrics = write_outputs(pack, trainer, output, settings, base, data, evals, stopped, eval_loss, device, checkpoint)
    if stopped in ("completed", "early_stopping"):
        shutil.rmtree(out, ignore_errors=True)  # nothing left to resume
    return TrainResult(adapter, trainer.state.global_step, eval_loss, stopped, metrics)


def resume_command(pack_path: Path) -> str:
    return f"rolecast train {shlex.quote(str(pack_path))} --resume"


def resume_checkpoint(out: Path, settings: TrainSettings, data: str | None = None) -> Path | None:
    """With --resume, the checkpoint to continue from (incomplete ones removed), checked against the run's settings."""
    if not settings.resume:
        return None
    checkpoint = last_checkpoint(out)
    if checkpoint is None:
        raise TrainingError(f"nothing to resume: no complete checkpoint in {out}", "start a new run without --resume")
    drop_partial(out)
    changed = changed_on_resume(out, settings, data)
    if changed:
        raise TrainingError(f"cannot resume with changed {', '.join(changed)} (the checkpoints were trained with other values)",
                            "resume with the original values, or start a new run without --resume")
    return checkpoint


def changed_on_resume(out: Path, settings: TrainSettings, data: str | None = None) -> list[str] | None:
    """The settings of FIXED_ON_RESUME that differ from the checkpoints' run, and "the training data" when the
    pack's rows are not those it trained on (``data``: ``data_checksum``); None: no record of that run."""
    run = _read_run(out)
    saved = run.get("settings")
    if saved is None:
        return None
    changed = [k for k in FIXED_ON_RESUME if k in saved and saved[k] != getattr(settings, k)]
    if data is not None and run.get("data") != data:  # a re-prepared pack: its optimizer state is for other rows
        changed.append("training data (the pack was prepared again since)")
    return changed


def data_checksum(pack: Pack) -> str:
    """What the rows are made of: the pack's script and its train and validation splits."""
    digest = hashlib.sha256()
    for path in (pack.path / "script.jsonl", pack.path / "examples" / "train.jsonl",
                 pack.path / "examples" / "validation.jsonl"):
        digest.update(sha256(path).encode() if path.exists() else b"-")
    return digest.hexdigest()


def _read_run(out: Path) -> dict:
    try:
        return read_json(out / RUN_FILE)
    except (OSError, ValueError):
        return {}


def resume_options(pack_path: str | Path, options: dict) -> dict:
    """For --resume: the interrupted run's settings, overridden by the options given now."""
    saved = _read_run(Path(pack_path) / CHECKPOINTS).get("settings", {})
    return {**saved, **{k: v for k, v in options.items() if v is not None and v != ()}}


def base_record(base: str | None, source: str, gguf: Path | None) -> dict:
    """How pack.json names the base: what rolecast reloads it from (None: the bundled default) and a checksum."""
    if base is not None and Path(base).expanduser().exists():
        base = str(Path(base).expanduser().resolve())
    return {"base": base, "base_name": gguf.name if gguf else source, "base_format": "gguf" if gguf else "hf",
            "base_sha256": sha256(gguf) if gguf else None}


def cap_steps(trainer, settings: TrainSettings) -> None:
    """--max-steps ends training early but never extends it past --epochs (the Trainer's max_steps would)."""
    if settings.max_steps:
        per_epoch = math.ceil(len(trainer.get_train_dataloader()) / trainer.args.gradient_accumulation_steps)
        trainer.args.max_steps = min(settings.max_steps, max(1, math.ceil(per_epoch * settings.epochs)))


def stop_reason(trainer, budget: Budget, settings: TrainSettings) -> str:
    if budget.reason:
        return budget.reason
    from transformers import EarlyStoppingCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, EarlyStoppingCallback) and cb.early_stopping_patience_counter >= cb.early_stopping_patience:
            return "early_stopping"
    if settings.max_steps and trainer.state.global_step >= settings.max_steps:
        return "max_steps"
    return "completed"


def final_eval_loss(trainer) -> float | None:
    """The best validation loss when the best checkpoint was loaded at the end, else the last one."""
    if trainer.args.load_best_model_at_end and trainer.state.best_metric is not None:
        return float(trainer.state.best_metric)
    losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    return float(losses[-1]) if losses else None


# ----------------------------------------------------------------------------- records


def write_outputs(pack: Pack, trainer, output, settings: TrainSettings, base: dict, data: Rows, evals: Rows | None,
                  stopped: str, eval_loss: float | None, device: str, checkpoint: Path | None) -> dict:
    folder = pack.path / "train"
    history = trainer.state.log_history
    runtime = output.metrics.get("train_runtime") or 0.0
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    evals_seen = [e["eval_loss"] for e in history if "eval_loss" in e]
    metrics = {
        "steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0.0, 4), "stopped": stopped,
        "train_loss": output.metrics.get("train_loss"), "eval_loss": eval_loss,
        "best_eval_loss": min(evals_seen) if evals_seen else None, "train_runtime_s": round(runtime, 1),
        "train_tokens": tokens, "tokens_per_second": round(tokens / runtime, 1) if runtime else None,
        "history": history,
    }
    write_json(folder / "metrics.json", metrics)
    plot_losses(history, folder / "loss.png", pack.character)
    write_json(folder / "meta.json", {
        "rolecast_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device,
        "processes": processes()[1],
        "settings": settings.model_dump(), **base, "resumed_from": checkpoint.name if checkpoint else None,
        "system_prompt_sha256": hashlib.sha256(training_system_prompt(pack.card(), settings.system_turn).encode()).hexdigest(),
        "examples": {name: _rows_record(rows) for name, rows in (("train", data), ("validation", evals)) if rows},
        "versions": versions(),
    })
    return metrics


def _rows_record(rows: Rows) -> dict:
    return {"file": rows.source.name if rows.source else None, "sha256": sha256(rows.source) if rows.source else None,
            "used": len(rows.rows), "replies": rows.replies, "skipped_too_long": rows.skipped,
            "tokens": sum(rows.lengths)}


def plot_losses(history: list[dict], path: Path, title: str) -> None:
    """Training and validation loss against the step (matplotlib, Agg)."""
    import io

    from matplotlib.figure import Figure  # renders with Agg, leaving pyplot's global backend alone

    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
    for key, label in (("loss", "training"), ("eval_loss", "validation")):
        points = [(e["step"], e[key]) for e in history if key in e]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, markersize=3, label=label)
    ax.set(xlabel="step", ylabel="loss (reply tokens)", title=f"LoRA training: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write(path, buf.getvalue())
