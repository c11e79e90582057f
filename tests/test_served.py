"""Which model and adapter serve a pack (chat/served.py)."""

from __future__ import annotations

import pytest


def test_a_pack_serves_its_lora_on_the_base_it_was_trained_on(tmp_path):
    from conftest import make_pack
    from rolecast.chat.served import pack_backend
    from rolecast.errors import ModelError
    from rolecast.files import sha256
    from rolecast.pack import Pack
    from rolecast.settings import BackendSettings

    pack = Pack.open(make_pack(tmp_path / "p", "Maggie"))
    (pack.path / "adapter.gguf").write_bytes(b"GGUF")
    trained, other = tmp_path / "trained.gguf", tmp_path / "other.gguf"
    trained.write_bytes(b"GGUF trained")
    other.write_bytes(b"GGUF other")
    pack.info["parts"] = {"adapter": {"base": str(trained), "base_name": "trained.gguf", "base_sha256": sha256(trained)}}
    served = pack_backend(pack, BackendSettings())
    assert (served.model, served.adapter) == (str(trained), str(pack.path / "adapter.gguf"))
    with pytest.raises(ModelError, match="trained on trained.gguf, not on other.gguf"):
        pack_backend(pack, BackendSettings(model=str(other)))
    bare = pack_backend(pack, BackendSettings(model=str(other), no_adapter=True))
    assert (bare.model, bare.adapter) == (str(other), None)
    assert pack_backend(pack, BackendSettings(model=str(trained))).adapter == str(pack.path / "adapter.gguf")


def test_a_gguf_base_without_the_suffix_is_served_as_the_gguf_it_trained_on(tmp_path):
    """Training took `--base my-base` (a GGUF by its magic, no suffix); serving used to fall back to the default."""
    import shutil

    from conftest import make_pack
    from rolecast.chat.served import pack_backend
    from rolecast.files import sha256
    from rolecast.models.base_model import default_model_path, trained_on_gguf
    from rolecast.pack import Pack
    from rolecast.settings import BackendSettings

    base = tmp_path / "my-base"
    shutil.copy(default_model_path(), base)
    pack = Pack.open(make_pack(tmp_path / "p", "Maggie"))
    pack.record("adapter", base=str(base), base_format="gguf", base_sha256=sha256(base))
    assert trained_on_gguf(pack.info["parts"]["adapter"])
    assert pack_backend(Pack.open(pack.path), BackendSettings()).model == str(base)
    assert not trained_on_gguf({"base": "Qwen/Qwen2.5-0.5B-Instruct", "base_format": "hf"})
    assert trained_on_gguf({"base": "/old/pack/base.gguf"}), "packs from before the record: by the suffix"


def test_a_lora_trained_on_a_named_bases_hf_model_is_served_on_its_official_gguf(tmp_path, monkeypatch):
    """Trained on Qwen/Qwen2.5-0.5B-Instruct (say, with --qlora on a GPU): llama.cpp serves it on that base's pulled GGUF."""
    from conftest import make_pack
    from rolecast.chat.served import pack_backend
    from rolecast.errors import ModelError
    from rolecast.models.base_model import gguf_path
    from rolecast.models.bases import NAMED_BASES
    from rolecast.pack import Pack
    from rolecast.settings import BackendSettings

    pytest.importorskip("huggingface_hub")
    base = NAMED_BASES["qwen2.5-0.5b"]
    import huggingface_hub.constants

    # huggingface_hub reads HF_HOME once, at its import: an earlier test may have imported it already.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pack = Pack.open(make_pack(tmp_path / "p", "Maggie"))
    (pack.path / "adapter.gguf").write_bytes(b"GGUF")
    pack.record("adapter_gguf")
    pack.record("adapter", base=base.hf_repo, base_name=base.hf_repo, base_format="hf", base_sha256=None)
    served = pack_backend(Pack.open(pack.path), BackendSettings())
    assert served.model == base.name and served.adapter == str(pack.path / "adapter.gguf")
    with pytest.raises(ModelError, match=f"not pulled yet.*rolecast models pull {base.name}"):
        gguf_path(served.model)
    # Pulled: the file in the Hugging Face cache's own layout, as `rolecast models pull` leaves it.
    repo = tmp_path / "hf" / "hub" / f"models--{base.gguf_repo.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    pulled = repo / "snapshots" / ("0" * 40) / base.gguf_file
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(b"GGUF official")
    assert gguf_path(served.model) == pulled
    other = pack_backend(Pack.open(pack.path), BackendSettings(model="/somewhere/else.gguf"))
    assert other.model == "/somewhere/else.gguf", "--model still wins"
