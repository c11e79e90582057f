"""rolecast train: data shaping, loss masking, budgets, resuming and the errors a user can meet.

The slow tests train the real default model (SmolLM2-135M, from its bundled GGUF) on the
sample pack for a few steps, with the card cut short so each example is a few dozen
tokens: they check the mechanics (files, records, budgets, resume), not the quality.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rolecast.errors import EmptyResultError, ModelError, PackError, TrainingError
from rolecast.files import read_json
from rolecast.pack import Pack
from rolecast.settings import TrainSettings
from rolecast.training.sft import resume_options, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("strategy", ["per_example", "padded"])
def test_every_prompt_token_is_masked_and_every_reply_token_is_trained(tokenizer, short_pack, tmp_path, strategy):
    """Through TRL's real preparation, on the default model's tokenizer (a tiny random model stands in)."""
    transformers = pytest.importorskip("transformers")
    from rolecast.training.data import load_rows
    from rolecast.training.sft import build_trainer

    settings = TrainSettings(data="replies", strategy=strategy, max_context_turns=3, max_length=200)
    data = load_rows(Pack.open(short_pack), "train", tokenizer, settings, limit=12)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(config)
    trainer = build_trainer(model, tokenizer, data, None, settings, tmp_path, progress=False)
    prepared = trainer.train_dataset
    assert len(prepared) == len(data.rows) == 12
    from rolecast.pack.examples import read_examples

    replies = {ex["completion"][0]["content"] for ex in read_examples(short_pack / "examples" / "train.jsonl")}
    for original, ids, labels in zip(data.rows, prepared["input_ids"], prepared["labels"]):
        first = original["assistant_masks"].index(1)
        assert ids[:len(original["input_ids"])] == original["input_ids"]
        assert all(label == -100 for label in labels[:first]), "a prompt token is trained"
        assert labels[first:len(original["input_ids"])] == ids[first:len(original["input_ids"])], "a reply token is masked"
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n"), "the prompt ends where chat asks"
        reply = tokenizer.decode(ids[first:len(original["input_ids"])])
        assert reply.rstrip().endswith("<|im_end|>") and reply.rstrip()[:-len("<|im_end|>")] in replies


# ----------------------------------------------------------------------------- errors


def test_qlora_without_cuda_is_refused(short_pack):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(TrainingError, match="--qlora needs a CUDA GPU; drop it to train in fp32 on the CPU"):
        train(short_pack, TrainSettings(qlora=True))


def test_a_pack_without_examples_is_refused(short_pack, tmp_path):
    pack = tmp_path / "p"
    shutil.copytree(short_pack, pack)
    shutil.rmtree(pack / "examples")
    with pytest.raises(PackError, match="rolecast prepare"):
        train(pack, TrainSettings())
    (pack / "examples").mkdir()
    (pack / "examples" / "train.jsonl").write_text("")
    with pytest.raises(EmptyResultError, match="no training examples"):
        train(pack, TrainSettings())
    assert not (pack / "adapter").exists()


@pytest.mark.parametrize("base", ["/nonexistent/model.gguf", "./no-such-folder", "nobody/no-such-model-xyz"])
def test_a_missing_base_is_a_model_error(short_pack, base):
    with pytest.raises(ModelError, match="not found"):
        train(short_pack, TrainSettings(base=base))


def test_an_unsupported_architecture_is_a_model_error(short_pack, tmp_path):
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "architectures": ["NoSuchModel"]}))
    with pytest.raises(ModelError):
        train(short_pack, TrainSettings(base=str(folder)))


def test_an_architecture_export_cannot_write_is_refused_before_training(short_pack, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    with pytest.raises(ModelError, match=r"cannot export a LoRA for the 'gpt2' architecture .* one of: gemma2, gemma3, llama, phi3, qwen2, qwen3"):
        train(short_pack, TrainSettings(base=str(folder)))
    assert not (short_pack / "adapter").exists()


def test_resume_without_checkpoints_is_refused(short_pack):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(short_pack, TrainSettings(resume=True))


# ----------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def trained(short_pack, tmp_path_factory):
    pack = tmp_path_factory.mktemp("run") / "maggie"
    shutil.copytree(short_pack, pack)
    (pack / "adapter.gguf").write_bytes(b"GGUF from an earlier adapter")
    Pack.open(pack).record("adapter_gguf")
    settings = TrainSettings(max_steps=2, batch_size=2, max_context_turns=2, max_length=160, save_steps=1,
                             eval_steps=1, max_eval_examples=4, early_stopping_patience=0)
    return pack, train(pack, settings, progress=False)


@pytest.mark.slow
def test_a_short_run_writes_the_adapter_and_its_records(trained):
    pack, result = trained
    assert result.steps == 2 and result.stopped == "max_steps" and result.eval_loss > 0
    assert (pack / "adapter" / "adapter_config.json").exists()
    assert (pack / "adapter" / "adapter_model.safetensors").exists()
    assert (pack / "train" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = read_json(pack / "train" / "metrics.json")
    assert metrics["steps"] == 2 and metrics["eval_loss"] == pytest.approx(result.eval_loss)
    meta = read_json(pack / "train" / "meta.json")
    assert meta["settings"]["max_steps"] == 2 and meta["base"] is None
    assert len(meta["examples"]["train"]["sha256"]) == 64 and meta["versions"]["trl"]
    record = Pack.open(pack).info["parts"]["adapter"]
    assert record["steps"] == 2 and record["base_name"].endswith(".gguf") and record["checksum"]
    assert not (pack / "adapter.gguf").exists() and "adapter_gguf" not in Pack.open(pack).info["parts"], \
        "the previous adapter's GGUF export must not be served with the new adapter"
    # A budget stop keeps the checkpoints, so the run can go on.
    assert (pack / "train" / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(trained):
    pack, _ = trained
    options = resume_options(pack, {"resume": True, "max_steps": 3})
    assert options["max_length"] == 160 and options["max_steps"] == 3  # the run's settings, overridden by the new ones
    result = train(pack, TrainSettings(**options), progress=False)
    assert result.steps == 3
    meta = read_json(pack / "train" / "meta.json")
    assert meta["resumed_from"] == "checkpoint-2"
    history = read_json(pack / "train" / "metrics.json")["history"]
    assert [e["step"] for e in history if "eval_loss" in e] == [1, 2, 3], "the history goes on from the first run"
    with pytest.raises(TrainingError, match="changed lora_r"):
        train(pack, TrainSettings(**{**options, "lora_r": 4}), progress=False)


@pytest.mark.slow
def test_the_cli_trains_and_prints_a_summary(short_pack, tmp_path):
    from rolecast.cli import main

    pack = tmp_path / "p"
    shutil.copytree(short_pack, pack)
    code = main(["train", str(pack), "--max-steps", "1", "--batch-size", "1", "--max-length", "160",
                 "--max-eval-examples", "2", "--no-progress"])
    assert code == 0
    assert Path(pack / "adapter" / "adapter_config.json").exists()


def test_a_folder_base_trains_and_its_adapter_exports(tokenizer, short_pack, tmp_path):
    """--base as a Hugging Face folder (a tiny random Llama with the default tokenizer): train, record, export."""
    from conftest import tiny_llama
    from rolecast.training.export import export

    base = tiny_llama(tmp_path / "tiny-llama", tokenizer)
    pack = tmp_path / "p"
    shutil.copytree(short_pack, pack)
    result = train(pack, TrainSettings(base=str(base), max_steps=2, batch_size=2, max_length=160, max_eval_examples=2,
                                       early_stopping_patience=0), progress=False)
    assert result.steps == 2
    record = Pack.open(pack).info["parts"]["adapter"]
    assert record["base"] == str(base.resolve()) and record["base_sha256"] is None
    assert read_json(pack / "adapter" / "adapter_config.json")["base_model_name_or_path"] == str(base.resolve())
    assert export(pack)["adapter_gguf"].stat().st_size > 0
    with pytest.raises(ModelError, match="GGUF base"):
        export(pack, merged="f16")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [("--max-steps", "3"), ("--max-minutes", "0.03", "--epochs", "50")])
def test_two_processes_train_one_adapter_under_torchrun(tokenizer, short_pack, tmp_path, stop):
    """What accelerate launch does on GPUs, on the CPU (gloo): two processes share the steps, one writes the pack;
    on a time budget they stop together (were one to stop alone, the other would wait in a collective: a timeout)."""
    import subprocess
    import sys

    from conftest import tiny_llama

    base = tiny_llama(tmp_path / "tiny-llama", tokenizer)
    pack = tmp_path / "p"
    shutil.copytree(short_pack, pack)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rolecast.cli", "train", str(pack), "--base", str(base), *stop, "--batch-size", "2",
                           "--max-length", "160", "--max-eval-examples", "2", "--eval-steps", "1", "--save-steps", "1",
                           "--early-stopping-patience", "0", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_json(pack / "train" / "meta.json")["processes"] == 2
    metrics = read_json(pack / "train" / "metrics.json")
    if stop[0] == "--max-steps":
        assert Pack.open(pack).info["parts"]["adapter"]["steps"] == 3 and metrics["stopped"] == "max_steps"
    else:
        assert metrics["stopped"] == "max_minutes" and metrics["epochs"] < 50, metrics["stopped"]
    assert (pack / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(("precision", "bf16"), [("bf16", True), ("fp32", False)])
def test_the_precision_setting_reaches_the_trainer_on_the_cpu(tmp_path, precision, bf16):
    pytest.importorskip("trl")
    from rolecast.training.sft import sft_config

    config = sft_config(TrainSettings(precision=precision), tmp_path, "cpu", False, 100.0, False)
    assert (config.bf16, config.fp16, config.use_cpu) == (bf16, False, True)


def test_batches_are_padded_to_a_multiple_of_64_on_the_cpu_and_the_padding_changes_no_loss(tokenizer, short_pack, tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from rolecast.training.data import load_rows
    from rolecast.training.sft import build_trainer

    data = load_rows(Pack.open(short_pack), "train", tokenizer, TrainSettings(max_length=200), limit=6)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    losses = {}
    for multiple in (0, 1):  # auto (64 on the CPU), none
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
        trainer = build_trainer(model, tokenizer, data, None, TrainSettings(max_length=200, pad_to_multiple=multiple),
                                tmp_path, progress=False)
        batch = next(iter(trainer.get_train_dataloader()))
        real = int(batch["attention_mask"].sum())
        assert (batch["input_ids"].shape[1] % 64 == 0) == (multiple == 0)
        assert (batch["labels"][0, real:] == -100).all() and not batch["attention_mask"][0, real:].any()
        with torch.no_grad():
            losses[multiple] = float(trainer.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_training_says_how_long_an_epoch_will_take_before_it_starts():
    torch = pytest.importorskip("torch")
    from rolecast.training.sft import epoch_estimate

    model = torch.nn.Linear(1000, 135_000)  # 135M parameters
    one = epoch_estimate(1_032_731, model, "cpu", TrainSettings(precision="bf16"))
    assert "about 57 minutes on two CPU cores with bf16" in one, one
    assert "without bf16" in epoch_estimate(1_032_731, model, "cpu", TrainSettings(precision="fp32"))
    assert "caps it" in epoch_estimate(1000, model, "cpu", TrainSettings(max_minutes=60))
    assert "about 1 minute on" in epoch_estimate(18_500, model, "cpu", TrainSettings(precision="bf16")), "one minute"


def test_checkpoints_of_other_rows_are_not_resumed(short_pack, tmp_path):
    """Re-preparing a pack kept train/ with its checkpoints; resuming then put the old optimizer state on new rows."""
    from rolecast.files import write_json
    from rolecast.training.sft import RUN_FILE, changed_on_resume, data_checksum, resume_checkpoint

    pack = Pack.open(short_pack)
    out = tmp_path / "train"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / "trainer_state.json").write_text("{}")
    settings = TrainSettings()
    write_json(out / RUN_FILE, {"settings": settings.model_dump(), "data": data_checksum(pack)})
    assert changed_on_resume(out, settings, data_checksum(pack)) == []
    assert resume_checkpoint(out, settings.updated(resume=True), data_checksum(pack)) == out / "checkpoint-5"
    other = "0" * 64  # what a re-prepared pack's rows give
    assert changed_on_resume(out, settings, other) == ["training data (the pack was prepared again since)"]
    with pytest.raises(TrainingError, match="training data"):
        resume_checkpoint(out, settings.updated(resume=True), other)
