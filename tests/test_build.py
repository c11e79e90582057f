"""rolecast build: scripts → prepared, trained, exported and evaluated pack; unchanged stages skipped.

The slow tests run the whole chain with the real default model on a tiny budget (two
training steps, a handful of test exchanges): the sample script always, House where
../shared/data is present.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLE_SCRIPT, needs_shared_data
from rolecast.build import STATE, Plan, build
from rolecast.files import read_json, write_json
from rolecast.pack import Pack
from rolecast.settings import BackendSettings, GenerationSettings, PrepareSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_TRAIN = ["--max-steps", "2", "--batch-size", "2", "--max-context-turns", "2", "--max-eval-examples", "4",
              "--eval-steps", "1", "--save-steps", "1", "--early-stopping-patience", "0"]
TINY_EVAL = ["--limit", "4", "--bootstrap", "50", "--probe-limit", "3", "--max-tokens", "24", "--scenes", "1"]


def _plan(out: Path, **prepare) -> Plan:
    return Plan([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", show="Harbor Lights", **prepare), out, None,
                None, BackendSettings(), GenerationSettings())


def test_an_unchanged_prepare_is_skipped_and_a_changed_one_rerun(tmp_path):
    out = tmp_path / "maggie"
    plan = _plan(out, style=False, index=False)
    assert build(plan)[0].startswith("prepare: done"), "the first run builds"
    assert build(plan) == ["prepare: up to date, skipped"], "same scripts and settings: nothing to redo"
    assert read_json(out / STATE)["prepare"]["key"]
    changed = _plan(out, style=False, index=False, min_words=3)
    assert build(changed)[0].startswith("prepare: done"), "a changed setting reruns the stage"


def test_build_refuses_to_run_under_a_multi_process_launcher(tmp_path, monkeypatch):
    from rolecast.errors import SettingsError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SettingsError, match="one process") as caught:
        build(_plan(tmp_path / "maggie", style=False, index=False))
    assert "accelerate launch -m rolecast.cli train" in caught.value.hint
    assert not (tmp_path / "maggie").exists()


def _run(args: list[str]) -> int:
    from rolecast.cli import main

    return main(args)


def _check_built(out: Path, capsys) -> None:
    pack = Pack.open(out)
    for part in ("card", "examples", "index", "style", "adapter", "adapter_gguf", "eval"):
        assert pack.has(part), f"build left no {part}"
    assert pack.info["parts"]["adapter_gguf"]["adapter_checksum"] == pack.info["parts"]["adapter"]["checksum"], \
        "the GGUF LoRA is the export of the adapter trained in this build"
    metrics = read_json(out / "eval" / "metrics.json")
    assert set(metrics["variants"]) == {"base", "prompt", "retrieval", "lora", "lora+rerank"}
    assert "| **lora+rerank** |" in (out / "eval" / "report.md").read_text()
    assert set(read_json(out / STATE)) == {"prepare", "train", "export", "eval"}
    # The pack is served with its adapter: the llama.cpp backend loads the exported GGUF LoRA.
    from rolecast.chat.performer import Performer

    performer = Performer.load(out, BackendSettings())
    try:
        assert performer.backend.adapter == str(out / "adapter.gguf")
        reply = performer.reply([], "Morning. Any tea going?", GenerationSettings(max_tokens=16))
        assert reply.text.strip(), "the built pack answers"
    finally:
        performer.backend.close()


@pytest.mark.slow
def test_build_trains_exports_and_evaluates_the_sample_then_skips_everything(tmp_path, capsys):
    out = tmp_path / "maggie"
    args = ["build", str(SAMPLE_SCRIPT), "--character", "Maggie", "--show", "Harbor Lights", "--out", str(out), "--train",
            *TINY_TRAIN, *TINY_EVAL]
    assert _run(args) == 0
    printed = capsys.readouterr().out
    for stage in ("prepare", "train", "export", "eval"):
        assert f"{stage}: done" in printed, printed
    assert f"Ready: rolecast serve {out}" in printed
    _check_built(out, capsys)
    assert _run(args) == 0
    again = capsys.readouterr().out
    assert again.count("up to date, skipped") == 4, again


@pytest.mark.slow
def test_build_resumes_an_interrupted_training_run(tmp_path, capsys):
    """A kill leaves checkpoints and no adapter: the next build continues from the checkpoint."""
    from rolecast.training.runtime import last_checkpoint
    from rolecast.training.sft import CHECKPOINTS

    out = tmp_path / "maggie"
    args = ["build", str(SAMPLE_SCRIPT), "--character", "Maggie", "--show", "Harbor Lights", "--out", str(out), "--train",
            "--no-eval", *TINY_TRAIN]
    assert _run(args) == 0
    assert last_checkpoint(out / CHECKPOINTS).name == "checkpoint-2"
    # As if killed at step 2 of a longer run: no finished adapter, the train stage not recorded.
    shutil.rmtree(out / "adapter")
    state = read_json(out / STATE)
    del state["train"], state["export"]
    write_json(out / STATE, state)
    longer = [a if a != "2" or args[i - 1] != "--max-steps" else "3" for i, a in enumerate(args)]
    assert _run(longer) == 0
    capsys.readouterr()
    meta = read_json(out / "train" / "meta.json")
    assert meta["resumed_from"] == "checkpoint-2" and read_json(out / "train" / "metrics.json")["steps"] == 3


@pytest.mark.slow
def test_build_house_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    files = sorted(needs_shared_data("house-md").glob("season*.csv"))
    out = tmp_path / "house"
    assert _run(["build", *map(str, files), "--character", "House", "--out", str(out), "--train", *TINY_TRAIN,
                 *TINY_EVAL]) == 0
    capsys.readouterr()
    _check_built(out, capsys)
    assert read_json(out / "eval" / "metrics.json")["examples"] == 4


def test_a_run_stopped_by_its_budget_is_up_to_date_only_for_that_budget(tmp_path):
    from rolecast.build import _train_key
    from rolecast.settings import TrainSettings

    out = tmp_path / "pack"
    (out / "examples").mkdir(parents=True)
    for split in ("train", "validation"):
        (out / "examples" / f"{split}.jsonl").write_text("{}\n")
    plan = _plan(out)

    def key(**budget):
        plan.train = TrainSettings(**budget)
        return _train_key(plan)

    write_json(out / "train" / "metrics.json", {"stopped": "max_minutes"})
    assert key(max_minutes=12) == key(max_minutes=12)
    assert key(max_minutes=12) != key(max_minutes=30), "a bigger budget must train on"
    write_json(out / "train" / "metrics.json", {"stopped": "completed", "epochs": 1.0})
    assert key(max_minutes=12) == key(max_minutes=30), "a finished run needs no more time"
    assert key(epochs=1) != key(epochs=3), "a finished one-epoch run is not up to date for three"
    write_json(out / "train" / "metrics.json", {"stopped": "early_stopping", "epochs": 1.4})
    assert key(epochs=1) == key(epochs=3), "a run that stopped on a plateau has nothing left to learn"
    assert key(max_minutes=12) != key(max_minutes=12, lora_r=8), "changed shape settings retrain"
    assert key(max_minutes=12) == key(max_minutes=12, pad_to_multiple=1, mmap_threshold_mib=0), "how it runs is not what it learns"


@pytest.mark.slow
def test_build_with_a_qwen2_gguf_base_trains_exports_and_serves_on_that_base(tmp_path, capsys, spm_tokenizer, llama_converter):
    """--base FILE.gguf on a non-llama architecture, end to end: the pack remembers its base and chats on it."""
    from conftest import tiny_gguf
    from rolecast.chat.performer import Performer

    base = tiny_gguf("qwen2", tmp_path, spm_tokenizer, llama_converter)
    out = tmp_path / "maggie"
    assert _run(["build", str(SAMPLE_SCRIPT), "--character", "Maggie", "--show", "Harbor Lights", "--out", str(out),
                 "--train", "--base", str(base), "--no-eval", "--learning-rate", "1e-2", *TINY_TRAIN]) == 0
    capsys.readouterr()
    record = Pack.open(out).info["parts"]
    assert record["adapter"]["base"] == str(base) and record["adapter_gguf"]["arch"] == "qwen2"
    performer = Performer.load(out, BackendSettings())
    try:
        assert performer.backend.adapter == str(out / "adapter.gguf")
        assert performer.backend.path == base, "served on the base it was trained on, not the default"
    finally:
        performer.backend.close()
    assert _run(["say", str(out), "Rough night?", "--max-tokens", "16"]) == 0
    assert capsys.readouterr().out.strip(), "a reply from the tiny qwen2 with its LoRA"
    # The bundled SmolLM2 (llama) is another base: the LoRA is refused in one line, never handed to llama.cpp.
    from rolecast.models.base_model import default_model_path

    assert _run(["say", str(out), "Rough night?", "--model", str(default_model_path())]) == 2
    err = capsys.readouterr().err.strip()
    assert "was trained on" in err and "\n" not in err


def test_a_card_import_makes_the_eval_out_of_date(tmp_path):
    from rolecast.build import _eval_key
    from rolecast.settings import EvalSettings

    out = tmp_path / "pack"
    out.mkdir()
    (out / "card.json").write_text('{"data": {"name": "Maggie"}}')
    plan = _plan(out)
    plan.evaluate = EvalSettings()
    before = _eval_key(plan)
    (out / "card.json").write_text('{"data": {"name": "Maggie", "description": "A nurse."}}')
    assert _eval_key(plan) != before
