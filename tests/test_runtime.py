"""What every trainer run shares (training/runtime.py): the time budget, Ctrl-C, disk, LoRA targets, padding, the allocator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rolecast.errors import ModelError, TrainingError
from rolecast.settings import TrainSettings
from rolecast.training.runtime import Budget, check_disk, run_trainer


def test_lora_targets_use_fused_projections_where_the_model_has_them():
    transformers = pytest.importorskip("transformers")
    from rolecast.training.runtime import lora_targets

    small = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    default = list(TrainSettings().target_modules)
    phi3 = transformers.Phi3ForCausalLM(transformers.Phi3Config(**small, pad_token_id=0))
    assert lora_targets(phi3, default) == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**small))
    assert lora_targets(llama, default) == default
    assert lora_targets(llama, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(ModelError, match=r"--target-modules qkv_proj: the base has no such linear layer.*down_proj, gate_proj"):
        lora_targets(llama, ["qkv_proj"])


def test_too_little_disk_is_refused_before_training(tmp_path):
    with pytest.raises(TrainingError, match="disk space"):
        check_disk(tmp_path, lora_params=10**15)


def test_an_interrupted_run_names_the_resume_command(tmp_path):
    budget = Budget(0)

    class Interrupted:
        class state:
            global_step = 7

        def train(self, resume_from_checkpoint=None):
            budget.reason = "interrupted"  # what Ctrl-C / SIGTERM do, at the next step end, which saves a checkpoint
            (tmp_path / "checkpoint-7").mkdir()
            (tmp_path / "checkpoint-7" / "trainer_state.json").write_text("{}")

    with pytest.raises(TrainingError, match=r"step 7; checkpoint-7 is saved.*rolecast train p --resume"):
        run_trainer(Interrupted(), None, budget, tmp_path, "rolecast train p --resume")


def test_the_time_budget_stops_training_with_a_checkpoint():
    from transformers import TrainerControl, TrainerState

    args = type("Args", (), {"eval_strategy": "steps", "eval_steps": 50})()
    state = TrainerState(global_step=251, log_history=[{"eval_loss": 3.2, "step": 200}])
    control = Budget(max_minutes=1e-9).callback().on_step_end(args, state, TrainerControl())
    assert control.should_training_stop and control.should_save and control.should_evaluate


def test_the_time_budget_does_not_validate_again_a_step_after_a_validation_pass():
    from transformers import TrainerControl, TrainerState

    args = type("Args", (), {"eval_strategy": "steps", "eval_steps": 50})()
    state = TrainerState(global_step=251, log_history=[{"eval_loss": 3.2, "step": 250}])
    control = Budget(max_minutes=1e-9).callback().on_step_end(args, state, TrainerControl())
    assert control.should_training_stop and control.should_save and not control.should_evaluate
    at_an_eval_step = TrainerControl(should_evaluate=True)  # the Trainer's own schedule still runs
    assert Budget(max_minutes=1e-9).callback().on_step_end(args, state, at_an_eval_step).should_evaluate


def test_pad_multiple_is_64_on_the_cpu_and_none_on_a_gpu_unless_set():
    from rolecast.training.runtime import pad_multiple

    assert pad_multiple(TrainSettings(), "cpu") == 64 and pad_multiple(TrainSettings(), "cuda") is None
    assert pad_multiple(TrainSettings(pad_to_multiple=1), "cpu") is None
    assert pad_multiple(TrainSettings(pad_to_multiple=16), "cuda") == 16


#: In a fresh process: malloc, free and malloc again 8 MiB, then how many blocks glibc holds as mapped memory.
#: glibc's sliding threshold rises to 8 MiB after the first free, so without the setting the second one comes
#: from its heap (and stays there when freed); with it, every buffer above 4 MiB is mapped (and returned).
MALLOC_PROBE = """
import ctypes, sys
sys.path.insert(0, {src!r})
from rolecast.training.runtime import map_large_buffers
if {mapped}:
    assert map_large_buffers(4)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks  # the interpreter's own mapped blocks
block = libc.malloc(8 << 20)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.parametrize("mapped, blocks", [(True, 1), (False, 0)])
def test_large_buffers_are_mapped_in_a_process_of_their_own(mapped, blocks):
    """Checked by its effect, in a subprocess: the setting changes the allocator of the process it runs in."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", MALLOC_PROBE.format(src=src, mapped=mapped)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == blocks


def test_the_users_own_malloc_setting_wins(monkeypatch):
    from rolecast.training.runtime import map_large_buffers

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not map_large_buffers(4), "the user's own setting wins"
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert not map_large_buffers(0), "0 turns it off"


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(tmp_path):
    from rolecast.training.runtime import interrupted

    out = tmp_path / "train"
    out.mkdir()
    early = interrupted(3, out, "rolecast train packs/house --resume")
    assert "nothing was saved" in str(early) and "start again with: rolecast train packs/house." in str(early)
    (out / "checkpoint-50").mkdir()
    (out / "checkpoint-50" / "trainer_state.json").write_text("{}")
    later = interrupted(60, out, "rolecast train packs/house --resume")
    assert "checkpoint-50 is saved" in str(later) and "rolecast train packs/house --resume" in str(later)
    dpo = interrupted(7, out, "rolecast train packs/house --dpo", resumable=False)
    assert "not resumed" in str(dpo) and "--resume" not in str(dpo) and not (out / "checkpoint-50").exists(), \
        "a preference run leaves no checkpoint it would never use"
