"""``rolecast build``: scripts → a pack ready for ``rolecast serve``, in one command.

    rolecast build ../shared/data/house-md/*.csv --character House --train --max-minutes 60 --out packs/house

Stages: prepare (clean script, examples, card, profile, retrieval index, style
classifier) → train (LoRA) → export (GGUF LoRA for llama.cpp) → eval. Each stage
records a checksum of its inputs and settings in ``PACK/build.json``; re-running skips
every stage whose inputs did not change, and an interrupted training run is resumed
from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .files import read_json, tree_checksum, write_json
from .ingest import expand
from .pack import Pack
from .settings import BackendSettings, EvalSettings, GenerationSettings, PrepareSettings, TrainSettings

log = logging.getLogger(__name__)
STATE = "build.json"


@dataclass
class Plan:
    scripts: list[Path]
    prepare: PrepareSettings
    out: Path
    train: TrainSettings | None  # None: no training (nor export)
    evaluate: EvalSettings | None
    backend: BackendSettings
    gen: GenerationSettings


def digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checksum(path: Path) -> str | None:
    return tree_checksum(path) if path.exists() else None


def build(plan: Plan) -> list[str]:
    """Run the stages that are out of date; return one line per stage saying what happened."""
    from .training.runtime import processes

    if processes()[1] > 1:  # every process would prepare, export and evaluate the same pack at once
        raise SettingsError("rolecast build runs in one process, not under torchrun or accelerate launch",
                            f"build without --train first, then: accelerate launch -m rolecast.cli train {plan.out}")
    report: list[str] = []
    stages: list[tuple[str, Callable[[], str | None], Callable[[], None]]] = [
        ("prepare", lambda: _prepare_key(plan), lambda: _run_prepare(plan)),
    ]
    if plan.train is not None:
        stages.append(("train", lambda: _train_key(plan), lambda: _run_train(plan)))
        if plan.train.dpo or plan.train.orpo:
            stages.append(("preference", lambda: _preference_key(plan), lambda: _run_preference(plan)))
        stages.append(("export", lambda: checksum(plan.out / "adapter"), lambda: _run_export(plan)))
    if plan.evaluate is not None:
        stages.append(("eval", lambda: _eval_key(plan), lambda: _run_eval(plan)))
    for name, key_of, run in stages:
        key = key_of()
        state = _state(plan.out)
        if key is not None and state.get(name, {}).get("key") == key:
            report.append(f"{name}: up to date, skipped")
            continue
        start = time.perf_counter()
        run()
        state = _state(plan.out)  # prepare replaces the pack folder, and with it the state
        state[name] = {"key": key_of(), "seconds": round(time.perf_counter() - start, 1), "at": time.time()}
        write_json(plan.out / STATE, state)
        report.append(f"{name}: done in {state[name]['seconds']:.0f} s")
    return report


def _state(out: Path) -> dict:
    path = out / STATE
    try:
        return read_json(path) if path.exists() else {}
    except ValueError:
        return {}


def _prepare_key(plan: Plan) -> str:
    files = [(str(p), checksum(p)) for p in expand(plan.scripts)]
    return digest("prepare", files, plan.prepare.model_dump())


def _train_key(plan: Plan) -> str | None:
    examples = plan.out / "examples"
    if not examples.exists():
        return None
    shaping = plan.train.model_dump(exclude={"resume", "max_minutes", "max_steps", "epochs", *PREFERENCE, *HOW_NOT_WHAT})
    # A run its budget stopped is up to date only for that budget: a bigger one trains on (resuming).
    budget = None if _finished(plan.out, plan.train.epochs) else plan.train.model_dump(include={"max_minutes", "max_steps",
                                                                                                 "epochs"})
    return digest("train", checksum(examples / "train.jsonl"), checksum(examples / "validation.jsonl"), shaping,
                  budget)


#: Settings of the preference stage only (they do not change the SFT adapter).
PREFERENCE = {"dpo", "orpo", "preference_pairs", "preference_beta", "preference_learning_rate", "preference_max_minutes"}
#: Settings of how training runs that do not change what it learns: changing them retrains nothing.
HOW_NOT_WHAT = {"pad_to_multiple", "mmap_threshold_mib"}


def _preference_key(plan: Plan) -> str | None:
    trained = _state(plan.out).get("train", {}).get("key")
    return digest("preference", trained, plan.train.model_dump(include=PREFERENCE)) if trained else None


def _finished(out: Path, epochs: int) -> bool:
    """Whether the pack's last training run stopped early on a plateau, or finished at least ``epochs`` epochs (a
    finished one-epoch run is not up to date for --epochs 3)."""
    try:
        metrics = read_json(out / "train" / "metrics.json")
    except (OSError, ValueError):
        return False
    if metrics.get("stopped") == "early_stopping":
        return True
    return metrics.get("stopped") == "completed" and float(metrics.get("epochs") or 0) >= epochs - 0.01


def _eval_key(plan: Plan) -> str:
    parts = [checksum(plan.out / name) for name in ("style", "index", "adapter.gguf", "adapter", "card.json")]
    return digest("eval", parts, plan.evaluate.model_dump(), plan.backend.model_dump(exclude={"backend_key"}),
                  plan.gen.model_dump())


def _run_prepare(plan: Plan) -> None:
    from .prepare import prepare

    log.info("%s", prepare(plan.scripts, plan.prepare, plan.out))


def _run_train(plan: Plan) -> None:
    from .pack import Pack
    from .training.runtime import last_checkpoint
    from .training.sft import CHECKPOINTS, changed_on_resume, data_checksum, train

    settings = plan.train
    folder = plan.out / CHECKPOINTS
    if last_checkpoint(folder) is not None and changed_on_resume(folder, settings, data_checksum(Pack.open(plan.out))) == []:
        log.info("resuming the interrupted training run from %s", last_checkpoint(folder))
        settings = settings.updated(resume=True)
    result = train(plan.out, settings)
    log.info("trained %d steps (%s), eval loss %s", result.steps, result.stopped, result.eval_loss)


def _run_preference(plan: Plan) -> None:
    from .training.preference import tune

    log.info("preference tuning: %s", tune(plan.out, plan.train))


def _run_export(plan: Plan) -> None:
    from .training.export import export

    export(Pack.open(plan.out))


def _run_eval(plan: Plan) -> None:
    from .evaluation.evaluate import evaluate

    evaluate(Pack.open(plan.out), plan.evaluate, plan.backend, plan.gen)
