"""rolecast compose: the GPU compose file comes from the packs (their base, their LoRAs), not from hard-coded names."""

from __future__ import annotations

import json

import pytest

from rolecast.cli import main
from rolecast.errors import ModelError, PackError
from rolecast.pack import new_pack_info
from rolecast.serve.compose import DEFAULT_HF_BASE, render

yaml = pytest.importorskip("yaml")


def trained_pack(root, character, base=None, lora_r=16):
    path = root / character.lower()
    (path / "adapter").mkdir(parents=True)
    info = new_pack_info(character, "Show")
    info["parts"] = {"adapter": {"base": base, "base_name": "x", "lora_r": lora_r}}
    (path / "pack.json").write_text(json.dumps(info))
    return path


def test_two_packs_give_one_vllm_with_both_loras_and_their_base(tmp_path):
    house, chandler = trained_pack(tmp_path, "House"), trained_pack(tmp_path, "Chandler", lora_r=32)
    spec = yaml.safe_load(render([house, chandler]))
    vllm, app = spec["services"]["vllm"], spec["services"]["rolecast"]
    args = vllm["command"]
    assert args[args.index("--model") + 1] == DEFAULT_HF_BASE
    assert args[args.index("--max-lora-rank") + 1] == "32"
    assert args[args.index("--lora-modules") + 1:] == ["house=/packs/house/adapter", "chandler=/packs/chandler/adapter"]
    assert f"{house.resolve()}:/packs/house:ro" in vllm["volumes"] and f"{chandler.resolve()}:/packs/chandler:ro" in app["volumes"]
    serve = app["command"]
    assert serve[:4] == ["rolecast", "serve", "/packs/house", "/packs/chandler"]
    assert serve[serve.index("--base-url") + 1] == "http://vllm:8001/v1" and "openai" in serve


def test_an_hf_folder_base_is_mounted(tmp_path):
    base = tmp_path / "qwen"
    base.mkdir()
    spec = yaml.safe_load(render([trained_pack(tmp_path, "Ann", base=str(base))]))
    args = spec["services"]["vllm"]["command"]
    assert args[args.index("--model") + 1] == "/base" and f"{base.resolve()}:/base:ro" in spec["services"]["vllm"]["volumes"]


def test_what_vllm_cannot_serve_is_refused(tmp_path):
    with pytest.raises(ModelError, match="different bases"):
        render([trained_pack(tmp_path, "Ann", base="Qwen/Qwen2.5-0.5B-Instruct"), trained_pack(tmp_path, "Bob")])
    with pytest.raises(ModelError, match="trained on the GGUF file q.gguf"):
        render([trained_pack(tmp_path, "Cy", base="/models/q.gguf")])
    untrained = trained_pack(tmp_path, "Di")
    (untrained / "adapter").rmdir()
    with pytest.raises(PackError, match="no LoRA adapter"):
        render([untrained])


def test_the_cli_writes_the_file_or_says_why_not(tmp_path, capsys):
    out = tmp_path / "gpu.yml"
    assert main(["compose", str(trained_pack(tmp_path, "House")), "--out", str(out)]) == 0
    assert "house=/packs/house/adapter" in out.read_text()
    assert main(["compose", str(tmp_path / "nope"), "--out", str(tmp_path / "x.yml")]) == 2
    assert "no character pack" in capsys.readouterr().err and not (tmp_path / "x.yml").exists()
