"""What every trainer run needs, SFT (``sft.py``) and DPO/ORPO (``preference.py``) alike.

    device = pick_device(settings)            # CUDA when there is one; --qlora refuses the CPU
    share_cores(settings)                     # torch's threads and glibc's allocator, before the model loads
    budget = Budget(settings.max_minutes)     # ends cleanly at the time budget or on Ctrl-C / SIGTERM
    output = run_trainer(trainer, checkpoint, budget, out, command)   # Ctrl-C and a full disk become one TrainingError
    save_adapter(pack, trainer.model, base, command)

Also: the LoRA's targets on a model (a fused Phi-3 projection in place of the separate ones), the
disk its checkpoints need, the collator's padding and activation checkpointing per device, the
progress bar with the latest losses, and the versions a run records.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import math
import os
import platform
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .. import __version__
from ..errors import ModelError, TrainingError, require
from ..files import atomic_dir, read_json, write_json
from ..pack import Pack
from ..settings import TrainSettings

log = logging.getLogger(__name__)


def lora_parameters(model, settings: TrainSettings) -> int:
    """How many weights the LoRA adds: r × (in + out) for each layer it targets (:func:`lora_targets`)."""
    targets = set(lora_targets(model, settings.target_modules))
    total = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and hasattr(module, "in_features"):
            total += settings.lora_r * (module.in_features + module.out_features)
    if not total:
        raise TrainingError(f"no layer of the base model matches --target-modules {','.join(settings.target_modules)}",
                            "name linear layers of the model, e.g. q_proj,v_proj")
    return total


def check_disk(folder: Path, lora_params: int) -> None:
    """Checkpoints hold the adapter and Adam's two moments (fp32); keep room for three of them."""
    need = 3 * 3 * 4 * lora_params + (16 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise TrainingError(f"not enough disk space in {folder} for the checkpoints: {need >> 20} MiB needed, {free >> 20} MiB free",
                            "free some space, or lower --lora-r or --save-total-limit")


class Budget:
    """Ends training cleanly: after ``max_minutes``, or at the step end after Ctrl-C / SIGTERM.

    Either way the step's checkpoint is saved (and, for time, the validation loss measured),
    so the run can be resumed. A second Ctrl-C stops at once.
    """

    def __init__(self, max_minutes: float):
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes else math.inf
        self.reason: str | None = None

    def callback(self):
        from transformers import TrainerCallback

        budget = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if budget.reason is None and time.monotonic() >= budget.deadline:
                    budget.reason = "max_minutes"
                budget.reason = agreed(budget.reason, args)
                if budget.reason:
                    control.should_evaluate = control.should_evaluate or (
                        budget.reason == "max_minutes" and args.eval_strategy != "no" and not validated_lately(state, args))
                    control.should_training_stop = control.should_save = True
                return control

        return _Callback()

    @contextlib.contextmanager
    def signals(self):
        def stop(signum, frame):
            if self.reason == "interrupted":
                raise KeyboardInterrupt
            self.reason = "interrupted"
            print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def validated_lately(state, args) -> bool:
    """Whether a validation pass ran within the last tenth of --eval-steps: one more at the time budget's
    stop (House: step 251, a step after 250's) would take minutes to say what that pass said."""
    steps = [e["step"] for e in state.log_history if "eval_loss" in e]
    return bool(steps) and state.global_step - steps[-1] <= max(1, args.eval_steps // 10)


STOP_REASONS = (None, "max_minutes", "interrupted")


def processes() -> tuple[int, int]:
    """(this process's rank, how many train together): torchrun / accelerate launch set them; (0, 1) alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def agreed(reason: str | None, args) -> str | None:
    """A stop reason every process shares: processes that stop at different steps would wait for each other forever."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return reason
    import torch

    code = torch.tensor([STOP_REASONS.index(reason)], device=args.device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    return STOP_REASONS[int(code.item())]


def progress_callback():
    """The Trainer's tqdm bar (steps, ETA), with the latest losses as its postfix instead of printed dicts."""
    from transformers.trainer_callback import ProgressCallback

    class LossProgress(ProgressCallback):
        shown: dict[str, str] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            latest = {k.replace("eval_loss", "val"): f"{v:.3f}" for k, v in (logs or {}).items() if k in ("loss", "eval_loss")}
            self.shown = {**self.shown, **latest}
            if self.training_bar is not None and latest:
                self.training_bar.set_postfix(self.shown)
            if "eval_loss" in (logs or {}):
                log.info("step %d: validation loss %.4f", state.global_step, logs["eval_loss"])

    return LossProgress()


def pad_multiple(settings: TrainSettings, device: str) -> int | None:
    """The collator's pad_to_multiple_of: auto pads to 64 tokens on the CPU only. There the bf16 matrix
    products are oneDNN kernels made (and cached) per shape, so, most likely, a scene's hundreds of distinct
    lengths kept making new ones; eight lengths up to 512 make them once (House: 1.23x the tokens/s)."""
    multiple = settings.pad_to_multiple or (64 if device == "cpu" else 1)
    return multiple if multiple > 1 else None


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def map_large_buffers(mib: int) -> bool:
    """Have glibc map every buffer above ``mib`` MiB and return it to the system when freed (M_MMAP_THRESHOLD).

    glibc's own threshold slides up to 32 MiB as buffers are freed, after which activations live in its heap,
    which keeps what it frees: House's runs crept from 2.5 GB to 7.8 GB. Nothing changes where the environment
    sets MALLOC_MMAP_THRESHOLD_ or the C library is not glibc. True when the threshold was set.
    """
    if not mib or "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, mib * 2**20) == 1
    except (OSError, AttributeError):
        return False


def checkpointing(settings: TrainSettings, device: str, config_class) -> dict[str, bool]:
    """The TRL config argument that turns activation checkpointing on (CUDA) or off (the CPU: faster)."""
    on = settings.gradient_checkpointing == "on" or (settings.gradient_checkpointing == "auto" and device == "cuda")
    # transformers 5.2x renamed it (the old name warns); TRL's default for it is on.
    fields = config_class.__dataclass_fields__
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


#: Fused projections (Phi-3) → the separate ones they hold: --target-modules q_proj, ... mean them there.
FUSED_TARGETS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def lora_targets(model, requested) -> list[str]:
    """The LoRA's target modules on this model: a fused projection where the model has one in place of the
    requested separate ones (Phi-3's qkv_proj, gate_up_proj); a ModelError for a target it does not have."""
    import torch

    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    targets: list[str] = []
    for name in requested:
        fused = next((f for f, parts in FUSED_TARGETS.items() if name in parts and f in linear and name not in linear), None)
        if fused is None and name not in linear:
            raise ModelError(f"--target-modules {name}: the base has no such linear layer",
                             "name some of its layers: " + ", ".join(sorted(linear - {"lm_head"})))
        if (fused or name) not in targets:
            targets.append(fused or name)
    return targets


def pick_device(settings: TrainSettings) -> str:
    torch = require("torch", "train")
    if torch.cuda.is_available():
        return "cuda"
    if settings.qlora:
        raise TrainingError("--qlora needs a CUDA GPU; drop it to train in fp32 on the CPU")
    return "cpu"


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (the Trainer writes trainer_state.json last)."""
    done = [p for p in folder.glob("checkpoint-*") if p.name[11:].isdigit() and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def drop_partial(out: Path) -> None:
    for partial in out.glob("checkpoint-*"):
        if not (partial / "trainer_state.json").exists():
            shutil.rmtree(partial, ignore_errors=True)


def run_trainer(trainer, checkpoint: Path | None, budget: Budget, out: Path, command: str, resumable: bool = True):
    """``trainer.train()`` with the budget's signal handling; Ctrl-C, a kill or a full disk become one TrainingError
    whose hint says what is left (``resumable`` False: the run starts over, so its checkpoints are removed)."""
    step = lambda: trainer.state.global_step  # noqa: E731
    try:
        main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
        with budget.signals() if main else contextlib.nullcontext():
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        raise interrupted(step(), out, command, resumable) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        drop_partial(out)
        raise TrainingError(f"no space left on the disk of {out} at step {step()}",
                            f"free some space, then continue with: {command}") from None
    if budget.reason == "interrupted":
        raise interrupted(step(), out, command, resumable)
    return output


def interrupted(step: int, out: Path, command: str, resumable: bool = True) -> TrainingError:
    """What Ctrl-C left: a checkpoint to resume from, or nothing (before the first checkpoint, or a run that cannot
    resume): then the hint says so and starts over."""
    if not resumable:
        for partial in out.glob("checkpoint-*"):
            shutil.rmtree(partial, ignore_errors=True)
    checkpoint = last_checkpoint(out)
    restart = command.replace(" --resume", "")
    if checkpoint is None:
        why = "before its first checkpoint" if resumable else "a preference run is not resumed"
        return TrainingError(f"training interrupted at step {step} ({why}): nothing was saved",
                             f"start again with: {restart}")
    return TrainingError(f"training interrupted at step {step}; {checkpoint.name} is saved",
                         f"continue from it with: {restart} --resume")


def save_adapter(pack: Pack, model, base: dict, command: str) -> Path:
    """The PEFT folder, atomically; its config names the base rolecast trained on (a GGUF folder alone would not load)."""
    target = pack.part("adapter")
    try:
        with atomic_dir(target) as tmp:
            model.save_pretrained(str(tmp))
            config = read_json(tmp / "adapter_config.json")
            config["base_model_name_or_path"] = base["base"] or base["base_name"]
            write_json(tmp / "adapter_config.json", config)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise TrainingError(f"no space left to write {target}", f"free some space, then continue with: {command}") from None
        raise
    return target


def drop_stale_export(pack: Pack) -> None:
    """The GGUF LoRA of a previous adapter would be served in place of the new one: remove it."""
    gguf = pack.part("adapter_gguf")
    if gguf.exists():
        gguf.unlink()
        info = {**pack.info, "parts": {k: v for k, v in pack.info.get("parts", {}).items() if k != "adapter_gguf"}}
        write_json(pack.path / "pack.json", info)
        pack.info = info
        log.warning("removed %s (it was exported from the previous adapter); export the new one with: rolecast export %s",
                    gguf, shlex.quote(str(pack.path)))


def versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "rolecast": __version__}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "gguf"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found



def share_cores(settings: TrainSettings) -> None:
    """Set up this process before a model loads: glibc maps large buffers (``map_large_buffers``), and torch uses
    this process's share of the cores (the Trainer leaves torch's default, often half of them; processes that
    torchrun starts on one machine share them)."""
    torch = require("torch", "train")
    map_large_buffers(settings.mmap_threshold_mib)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", processes()[1]))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def show_progress(trainer, progress: bool) -> None:
    """The Trainer's tqdm bar with the latest losses (``progress_callback``), or, without a bar, nothing printed per
    log (the Trainer's PrinterCallback would print every log dict)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback if progress else PrinterCallback)
    if progress:
        trainer.add_callback(progress_callback())
