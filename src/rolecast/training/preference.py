"""Preference tuning after SFT: TRL's DPO or ORPO on pairs built from the pack, continuing the SFT LoRA.

    rolecast train packs/house                 # SFT first: PACK/adapter
    rolecast train packs/house --dpo           # then DPO on it (or --orpo); build ... --train --dpo does both

    >>> tune("packs/house", TrainSettings(dpo=True))        # doctest: +SKIP

Pairs come from a seeded sample of the train split's exchanges (``preference_pairs`` of them,
never the validation or test episodes). Chosen is always the character's real reply. Rejected is,
for each exchange, both of:

- **own sample**: of two replies the SFT model samples for the context, the one least similar to
  the line it answers (MiniLM cosine: the off-topic one), so the tuning pushes away from what the
  model actually does wrong;
- **another scene**: the character's real line from a different scene, in voice but not an answer,
  as the coherence judge's negatives are built, but from the train split, so the judge (fitted on
  the test episodes) stays independent.

DPO's reference is the SFT adapter itself (TRL copies a trained adapter it is given into a frozen
"ref" adapter for the reference log-probabilities); ORPO needs none. The SFT adapter is kept in
PACK/train/sft-adapter (a second tuning starts again from it), PACK/adapter becomes the tuned
one, and pack.json records the method, the pair counts, the time and TRL's last reward
accuracy and margin.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EmptyResultError, TrainingError, require
from ..models.base_model import load_model, load_tokenizer, mixed_precision, resolve_base
from ..models.templates import ChatTemplate
from ..pack import Pack
from ..pack.examples import read_examples
from ..pack.system_turn import training_system_prompt
from ..progress import bar
from ..settings import TrainSettings
from .data import conversation, fit
from .runtime import (
    Budget,
    checkpointing,
    drop_stale_export,
    pad_multiple,
    pick_device,
    processes,
    run_trainer,
    save_adapter,
    share_cores,
    show_progress,
)

log = logging.getLogger(__name__)

SFT_BACKUP = Path("train") / "sft-adapter"
SAMPLES = 2  # replies sampled per context; the less relevant one is rejected
SAMPLE_TOKENS = 48


@dataclass
class Trainer:
    """A TRL preference trainer and its config, imported lazily."""
    module: str
    trainer: str
    config: str


#: The preference methods ``rolecast train`` offers.
METHODS = {
    "dpo": Trainer("trl", "DPOTrainer", "DPOConfig"),
    "orpo": Trainer("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
}


def method_of(settings: TrainSettings) -> str | None:
    if settings.dpo and settings.orpo:
        raise TrainingError("--dpo and --orpo are two ways to do the same stage", "pick one of them")
    return "dpo" if settings.dpo else "orpo" if settings.orpo else None


def tune(pack: Pack | str | Path, settings: TrainSettings, progress: bool = True) -> dict:
    """Preference-tune the pack's SFT adapter in place (see the module docstring); returns what pack.json records."""
    pack = pack if isinstance(pack, Pack) else Pack.open(pack)
    method = method_of(settings)
    if method is None:
        raise TrainingError("no preference method chosen", "pass --dpo or --orpo")
    if processes()[1] > 1:
        raise TrainingError(f"--{method} runs in one process, not under torchrun or accelerate launch",
                            f"run it alone: rolecast train {pack.path} --{method}")
    if not pack.has("adapter"):
        raise TrainingError(f"--{method} tunes a trained SFT adapter and {pack.path} has none",
                            f"train it first: rolecast train {pack.path}")
    peft = require("peft", "train")
    device = pick_device(settings)
    share_cores(settings)
    record = pack.info.get("parts", {}).get("adapter", {})
    source, kwargs, _ = resolve_base(record.get("base"))
    tokenizer = load_tokenizer(source, kwargs)
    backup = pack.path / SFT_BACKUP
    # Tuned before: start again from the SFT adapter kept then, not from the tuned one.
    sft = backup if record.get("preference") and backup.exists() else pack.part("adapter")
    model = peft.PeftModel.from_pretrained(load_model(source, kwargs, device, settings.qlora), str(sft), is_trainable=True)
    start = time.monotonic()
    pairs, counts = build_pairs(pack, model, tokenizer, settings, record.get("system_turn", "card"))
    template = ChatTemplate.of_tokenizer(tokenizer)
    drop_bos = adds_bos(tokenizer)  # TRL's tokenizing adds it
    pairs = [text_pair(pair, template, drop_bos) for pair in pairs]
    if not pairs:
        raise EmptyResultError(f"no preference pairs could be built from {pack.path}'s train split",
                               f"rebuild the pack: rolecast prepare SCRIPTS --character NAME --out {pack.path}")
    log.info("%d preference pairs (%s) in %.0f s", len(pairs), counts, time.monotonic() - start)
    spec = METHODS[method]
    trainer = build_trainer(spec, model, tokenizer, pairs, settings, pack.path / "train" / "preference", device, progress)
    budget = Budget(settings.preference_max_minutes)  # its own: --max-minutes is SFT's (build runs both)
    trainer.add_callback(budget.callback())
    output = run_trainer(trainer, None, budget, pack.path / "train" / "preference", f"rolecast train {pack.path} --{method}",
                         resumable=False)
    for saved in (pack.path / "train" / "preference").glob("checkpoint-*"):  # a budget's stop saves one: never resumed
        shutil.rmtree(saved, ignore_errors=True)
    if "ref" in trainer.model.peft_config:  # DPO's frozen copy of the SFT adapter: not part of the result
        trainer.model.delete_adapter("ref")
    if sft != backup:
        shutil.rmtree(backup, ignore_errors=True)
        shutil.copytree(pack.part("adapter"), backup)
    save_adapter(pack, trainer.model, {k: record.get(k) for k in ("base", "base_name")}, f"rolecast train {pack.path} --{method}")
    drop_stale_export(pack)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    result = {"method": method, "pairs": len(pairs), **counts, "steps": trainer.state.global_step,
              "seconds": round(time.monotonic() - start, 1), "train_loss": output.metrics.get("train_loss"),
              "beta": settings.preference_beta, "learning_rate": settings.preference_learning_rate,
              **{k.replace("/", "_"): logged[-1][k] for k in ("rewards/accuracies", "rewards/margins") if logged and k in logged[-1]},
              "sft_adapter": str(SFT_BACKUP)}
    pack.record("adapter", **{k: v for k, v in record.items() if k not in ("checksum", "preference")}, preference=result)
    return result


# ----------------------------------------------------------------------------- pairs


def build_pairs(pack: Pack, model, tokenizer, settings: TrainSettings, system_turn: str) -> tuple[list[dict], dict]:
    """Conversational prompt / chosen / rejected rows, fitted to ``max_length``, and how many of each kind."""
    from ..models.embeddings import embedder

    examples = [ex for ex in read_examples(pack.require("examples") / "train.jsonl") if ex["messages"]]
    rng = random.Random(settings.seed)
    picked = rng.sample(examples, min(settings.preference_pairs, len(examples)))
    system = training_system_prompt(pack.card(), system_turn)
    rows = [conversation(ex, system, settings.max_context_turns) for ex in picked]
    samples = sample_replies(model, tokenizer, [r["prompt"] for r in rows])
    embed = embedder()
    heard = embed.encode([r["prompt"][-1]["content"] for r in rows])
    pairs, counts = [], {"own_samples": 0, "other_scenes": 0}

    template = ChatTemplate.of_tokenizer(tokenizer)

    def count(messages):
        return len(template.tokens(tokenizer, messages))

    for i, (row, example, options) in enumerate(zip(rows, picked, samples, strict=True)):
        options = [s for s in options if s.strip()]
        rejected: list[tuple[str, str]] = []
        if options:
            sims = embed.encode(options) @ heard[i]
            rejected.append(("own_samples", options[int(sims.argmin())]))
        other = rng.choice(examples)
        if (other["episode"], other["scene"]) != (example["episode"], example["scene"]):
            rejected.append(("other_scenes", other["completion"][0]["content"]))
        chosen = row["completion"][0]["content"]
        for kind, text in rejected:
            if text.strip() == chosen.strip():
                continue
            longest = max((chosen, text), key=lambda t: count([{"role": "assistant", "content": t}]))
            fitted = fit({**row, "completion": [{"role": "assistant", "content": longest}]}, count, settings.max_length)
            if fitted is None:
                continue
            pairs.append({"prompt": fitted[0]["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": text}]})
            counts[kind] += 1
    return pairs, counts


def text_pair(pair: dict, template: ChatTemplate, drop_bos: bool) -> dict:
    """A conversational pair as the text TRL tokenizes, rendered by rolecast's template (TRL's own rendering
    would give Gemma a system turn it refuses and Qwen3 its thinking): the prompt up to where the model
    answers, each reply with the template's lead and end marker."""
    prompt = template.render(pair["prompt"], generation=True, drop_bos=drop_bos)
    end = template.tail.rstrip()
    return {"prompt": prompt, "chosen": template.lead + pair["chosen"][0]["content"] + end,
            "rejected": template.lead + pair["rejected"][0]["content"] + end}


def adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def sample_replies(model, tokenizer, prompts: list[list[dict]], batch: int = 8) -> list[list[str]]:
    """SAMPLES replies of the model to each prompt (left-padded batches, nucleus sampling)."""
    torch = require("torch", "train")
    template = ChatTemplate.of_tokenizer(tokenizer)
    if tokenizer.pad_token is None:  # batches of prompts are padded (older transformers give GGUF tokenizers none)
        tokenizer.pad_token = tokenizer.eos_token
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[list[str]] = []
    model.eval()
    try:
        for start in bar(range(0, len(prompts), batch), "sampling the SFT model's replies"):
            texts = [template.render(p, generation=True) for p in prompts[start:start + batch]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**enc, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=SAMPLE_TOKENS,
                                     num_return_sequences=SAMPLES, pad_token_id=tokenizer.pad_token_id)
            replies = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [replies[k:k + SAMPLES] for k in range(0, len(replies), SAMPLES)]
    finally:
        tokenizer.padding_side = side
        model.train()
    return out


# ----------------------------------------------------------------------------- the trainer


def padding(settings: TrainSettings, device: str, config_class) -> dict:
    """SFT's padding of batch lengths (train.pad_multiple), where the method's config takes it (DPO's does)."""
    return {"pad_to_multiple_of": pad_multiple(settings, device)} if "pad_to_multiple_of" in config_class.__dataclass_fields__ else {}


def preference_batch(batch_size: int) -> dict[str, int]:
    """--batch-size as pairs per step: up to 4 at once (a pair is two sequences, and DPO keeps a reference), the
    rest accumulated; the product is always --batch-size (6 is 3 x 2, not 4)."""
    per = max(d for d in range(1, min(4, batch_size) + 1) if batch_size % d == 0)
    return {"per_device_train_batch_size": per, "gradient_accumulation_steps": batch_size // per}


def build_trainer(spec: Trainer, model, tokenizer, pairs: list[dict], settings: TrainSettings, out: Path,
                  device: str, progress: bool):
    import importlib

    datasets = require("datasets", "train")
    require("trl", "train")

    module = importlib.import_module(spec.module)
    torch = require("torch", "train")
    half = mixed_precision(settings.precision, device, torch)
    config_class = getattr(module, spec.config)
    config = config_class(
        output_dir=str(out), num_train_epochs=1, max_steps=settings.max_steps or -1,
        learning_rate=settings.preference_learning_rate, lr_scheduler_type="cosine", warmup_steps=0.1,
        **preference_batch(settings.batch_size),
        beta=settings.preference_beta, max_length=settings.max_length, logging_steps=5, logging_first_step=True,
        save_strategy="no", report_to="none", disable_tqdm=not progress, bf16=half is torch.bfloat16,
        fp16=half is torch.float16, use_cpu=device == "cpu", seed=settings.seed, data_seed=settings.seed,
        **checkpointing(settings, device, config_class), **padding(settings, device, config_class))
    datasets.disable_progress_bars()
    trainer = getattr(module, spec.trainer)(model=model, args=config, processing_class=tokenizer,
                                            train_dataset=datasets.Dataset.from_list(pairs))
    show_progress(trainer, progress)
    return trainer
