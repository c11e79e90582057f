"""Preference tuning (--dpo / --orpo) after SFT: pairs from the pack, TRL's trainers, the SFT adapter kept.

The tuning tests run on a tiny random Llama with the default tokenizer (a few seconds); they
check the mechanics, not whether preference tuning helps (the note of the run says that).
"""

from __future__ import annotations

import os
import shutil

import pytest

from rolecast.errors import TrainingError
from rolecast.files import read_json, sha256
from rolecast.pack import Pack
from rolecast.settings import TrainSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_preference_tuning_needs_a_trained_sft_adapter(short_pack, tmp_path, capsys):
    from rolecast.cli import main
    from rolecast.training.preference import tune

    pack = tmp_path / "p"
    shutil.copytree(short_pack, pack)
    with pytest.raises(TrainingError, match=f"train it first: rolecast train {pack}"):
        tune(pack, TrainSettings(dpo=True))
    with pytest.raises(TrainingError, match="pick one of them"):
        tune(pack, TrainSettings(dpo=True, orpo=True))
    assert main(["train", str(pack), "--orpo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--orpo tunes a trained SFT adapter" in err


@pytest.fixture(scope="module")
def sft_pack(tokenizer, short_pack, tmp_path_factory):
    """The short sample pack with a two-step SFT adapter on a tiny random Llama."""
    from conftest import tiny_llama
    from rolecast.training.sft import train

    root = tmp_path_factory.mktemp("pref")
    base = tiny_llama(root / "tiny-llama", tokenizer)
    pack = root / "maggie"
    shutil.copytree(short_pack, pack)
    train(pack, TrainSettings(base=str(base), max_steps=2, batch_size=2, max_length=160, max_eval_examples=0),
          progress=False)
    return pack


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_tuning_continues_the_sft_adapter_and_keeps_it(sft_pack, tmp_path, method):
    from rolecast.training.preference import SFT_BACKUP, tune

    pack = tmp_path / "p"
    shutil.copytree(sft_pack, pack)
    (pack / "adapter.gguf").write_bytes(b"GGUF of the SFT adapter")
    Pack.open(pack).record("adapter_gguf")
    before = sha256(pack / "adapter" / "adapter_model.safetensors")
    result = tune(pack, TrainSettings(**{method: True}, preference_pairs=6, max_steps=2, batch_size=2, max_length=160,
                                      preference_learning_rate=1e-3))
    assert result["method"] == method and result["steps"] == 2
    assert result["pairs"] == result["own_samples"] + result["other_scenes"] and result["own_samples"] > 0
    assert sha256(pack / SFT_BACKUP / "adapter_model.safetensors") == before, "the SFT adapter is kept as it was"
    assert sha256(pack / "adapter" / "adapter_model.safetensors") != before, "the tuning changed the adapter"
    assert not (pack / "adapter" / "ref").exists(), "only the tuned adapter is saved, not DPO's reference copy"
    record = Pack.open(pack).info["parts"]["adapter"]
    assert record["preference"]["pairs"] == result["pairs"] and record["base"] == read_json(
        sft_pack / "pack.json")["parts"]["adapter"]["base"]
    assert not (pack / "adapter.gguf").exists(), "the SFT adapter's export must not be served with the tuned one"
    again = tune(pack, TrainSettings(**{method: True}, preference_pairs=4, max_steps=1, batch_size=2, max_length=160))
    assert again["steps"] == 1 and sha256(pack / SFT_BACKUP / "adapter_model.safetensors") == before, \
        "a second tuning starts from the SFT adapter, which stays kept"


def test_pairs_reject_an_off_topic_sample_and_another_scenes_line(sft_pack):
    import peft

    from rolecast.models.base_model import load_model, load_tokenizer, resolve_base
    from rolecast.pack.examples import read_examples
    from rolecast.training.preference import build_pairs

    pack = Pack.open(sft_pack)
    source, kwargs, _ = resolve_base(pack.info["parts"]["adapter"]["base"])
    tokenizer = load_tokenizer(source, kwargs)
    model = peft.PeftModel.from_pretrained(load_model(source, kwargs, "cpu", False), str(pack.part("adapter")))
    pairs, counts = build_pairs(pack, model, tokenizer, TrainSettings(preference_pairs=8, max_length=160), "card")
    assert len(pairs) == counts["own_samples"] + counts["other_scenes"] and counts["other_scenes"] > 0
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "system" and pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"] != pair["rejected"] and pair["chosen"][0]["role"] == "assistant"
    real = {ex["completion"][0]["content"] for ex in read_examples(pack.path / "examples" / "train.jsonl")}
    assert all(p["chosen"][0]["content"] in real for p in pairs), "chosen is always a real reply"


@pytest.mark.parametrize("batch, per, accumulate", [(6, 3, 2), (4, 4, 1), (8, 4, 2), (5, 1, 5), (2, 2, 1)])
def test_the_batch_size_is_honoured(batch, per, accumulate):
    from rolecast.training.preference import preference_batch

    assert preference_batch(batch) == {"per_device_train_batch_size": per, "gradient_accumulation_steps": accumulate}


def test_the_preference_stage_has_a_budget_of_its_own(sft_pack, tmp_path, monkeypatch):
    """`build --train --dpo --max-minutes 60` gave DPO SFT's 60 minutes too: it now has --preference-max-minutes."""
    import rolecast.training.preference as pref

    budgets = []

    class Stop(Exception):
        pass

    def budget(minutes):
        budgets.append(minutes)
        raise Stop

    monkeypatch.setattr(pref, "Budget", budget)
    pack = tmp_path / "p"
    shutil.copytree(sft_pack, pack)
    with pytest.raises(Stop):
        pref.tune(pack, TrainSettings(dpo=True, preference_pairs=4, max_length=160, max_minutes=60,
                                      preference_max_minutes=20))
    assert budgets == [20]


def test_a_preference_run_stopped_by_its_budget_leaves_no_checkpoint(sft_pack, tmp_path):
    """It saved one under train/preference that nothing resumes, and said to continue with a command that starts over."""
    from rolecast.training.preference import tune

    pack = tmp_path / "p"
    shutil.copytree(sft_pack, pack)
    result = tune(pack, TrainSettings(dpo=True, preference_pairs=4, max_steps=50, batch_size=2, max_length=160,
                                      preference_max_minutes=0.0001))
    assert result["steps"] < 50, "the budget stopped it"
    assert not list((pack / "train" / "preference").glob("checkpoint-*"))
