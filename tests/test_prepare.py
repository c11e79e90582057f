"""rolecast prepare: the pack folder, meta.json, atomic writes and the errors a user can meet."""

import json
import re

import pytest

from conftest import SAMPLE_SCRIPT, needs_shared_data
from rolecast.cli import main
from rolecast.errors import UnknownCharacterError
from rolecast.ingest.script import Script
from rolecast.pack import Pack
from rolecast.pack.examples import read_examples
from rolecast.prepare import prepare
from rolecast.settings import PrepareSettings

FAST = {"index": False, "style": False}


def test_sample_pack(tmp_path):
    out = tmp_path / "maggie"
    summary = prepare([SAMPLE_SCRIPT], PrepareSettings(character="maggie", show="Harbor Lights", **FAST), out)
    assert summary.startswith(f"Wrote {out}: Maggie (Harbor Lights)")
    pack = Pack.open(out)
    assert (pack.character, pack.name, pack.show) == ("Maggie", "maggie", "Harbor Lights")
    for name in ("card.json", "script.jsonl", "examples/train.jsonl", "examples/validation.jsonl", "examples/test.jsonl",
                 "profile.md", "profile.png", "meta.json", "pack.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["character"] == "maggie" and meta["inputs"][0]["sha256"]
    assert meta["counts"]["directions"] > 0 and meta["counts"]["lines"] == len(Script.load(out / "script.jsonl").lines)
    card = pack.card()
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Maggie"
    assert card["data"]["extensions"]["rolecast"]["fallback"]
    assert "Otto" not in pack.info["speakers"] and "Juno" in pack.info["speakers"]
    splits = {name: list(read_examples(out / "examples" / f"{name}.jsonl")) for name in ("train", "validation", "test")}
    episodes = {name: {ex["episode"] for ex in rows} for name, rows in splits.items()}
    assert all(episodes[a].isdisjoint(episodes[b]) for a, b in [("train", "test"), ("train", "validation"),
                                                                 ("validation", "test")])
    assert not list(tmp_path.glob(".maggie*")), "no temp folder left behind"


def test_failed_prepare_leaves_the_old_pack(tmp_path):
    out = tmp_path / "maggie"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", **FAST), out)
    before = (out / "card.json").read_text()
    with pytest.raises(UnknownCharacterError) as err:
        prepare([SAMPLE_SCRIPT], PrepareSettings(character="Magie", **FAST), out)
    assert "nearest: Maggie (301 lines)" in str(err.value)
    assert (out / "card.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maggie"]


def test_out_that_is_not_a_pack_is_refused(tmp_path):
    from rolecast.errors import SettingsError

    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not a pack")
    with pytest.raises(SettingsError, match="not a character pack"):
        prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", **FAST), out)
    assert (out / "holiday.jpg").read_bytes() == b"not a pack", "a user's folder is never replaced"
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", **FAST), empty)  # an empty folder is fine


def test_re_preparing_a_pack_keeps_its_adapter_training_and_evaluation(tmp_path):
    out = tmp_path / "maggie"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", **FAST), out)
    kept = {"adapter/adapter_model.safetensors": b"weights", "adapter.gguf": b"GGUF", "train/metrics.json": b"{}",
            "eval/report.md": b"# report", ".eval-runs/abc/base.json": b"{}"}
    for name, data in kept.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    pack = Pack.open(out)
    pack.record("adapter", base="smollm")
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", min_words=2, **FAST), out)
    for name, data in kept.items():
        assert (out / name).read_bytes() == data, name
    assert Pack.open(out).info["parts"]["adapter"]["base"] == "smollm", "pack.json still records the adapter"


def test_preparing_another_character_into_a_pack_carries_nothing_of_the_old_one(tmp_path):
    """`prepare --out packs/house --character Wilson` kept House's adapter, which then served as Wilson's."""
    out = tmp_path / "pack"
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Maggie", **FAST), out)
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"Maggie's weights")
    (out / "adapter.gguf").write_bytes(b"GGUF")
    Pack.open(out).record("adapter", base="smollm")
    prepare([SAMPLE_SCRIPT], PrepareSettings(character="Juno", **FAST), out)
    pack = Pack.open(out)
    assert pack.character == "Juno"
    assert not (out / "adapter").exists() and not (out / "adapter.gguf").exists()
    assert "adapter" not in pack.info.get("parts", {})


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nope.csv"), "--character", "X", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: file not found") and err.count("\n") == 1, err
    assert main(["prepare", str(SAMPLE_SCRIPT), "--character", "Nobody", "--out", str(tmp_path / "p"), "--no-index",
                 "--no-style"]) == 2
    err = capsys.readouterr().err
    assert "nearest:" in err and "Traceback" not in err
    assert main(["prepare", str(SAMPLE_SCRIPT), "--character", "Maggie", "--out", str(tmp_path / "p"),
                 "--min-words", "500", "--no-index", "--no-style"]) == 2
    assert "--min-words 500 removed" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_speakers_command(capsys):
    assert main(["speakers", str(SAMPLE_SCRIPT)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Maggie\s+│\s+301", out), out


# -- the real corpora (skipped where ../shared/data is absent) -------------------------------------

def check_pack(out, character):
    script = Script.load(out / "script.jsonl")
    lines = {line.index: line for line in script.lines}
    examples = [ex for split in ("train", "validation", "test") for ex in read_examples(out / "examples" / f"{split}.jsonl")]
    for ex in examples[::25]:
        index = int(ex["id"].rsplit("-", 1)[1])
        line = lines[index]
        assert (line.episode, line.scene, line.speaker) == (ex["episode"], ex["scene"], character)
        before = [lines[i] for i in range(max(0, index - 10), index)]
        same = [ln for ln in before if (ln.episode, ln.scene) == (line.episode, line.scene)]
        context = {re.sub(r"^[^:\n]{1,40}: ", "", row) if m["role"] == "user" else row
                   for m in ex["messages"] for row in m["content"].split("\n")}
        assert all(ln.text in context for ln in same[-3:]), ex["id"]
        own = {ln.text for ln in same}
        others = [ln for ln in before if (ln.episode, ln.scene) != (line.episode, line.scene) and ln.text not in own]
        assert not any(ln.text in context for ln in others), f"context crosses a scene: {ex['id']}"
    texts = [m["content"] for ex in examples for m in ex["messages"] + ex["completion"]]
    assert not [t for t in texts if re.search(r"\[[^\]]*\]|\([^)]*\)", t)][:3], "stage directions left"
    return examples


@pytest.mark.slow
def test_real_house(tmp_path):
    files = sorted(needs_shared_data("house-md").glob("season*.csv"))
    out = tmp_path / "house"
    prepare(files, PrepareSettings(character="House", **FAST), out)
    script = Script.load(out / "script.jsonl")
    assert script.speakers()["House"] >= 21_000
    examples = check_pack(out, "House")
    assert len(examples) >= 20_000


@pytest.mark.slow
def test_real_friends_chandler(tmp_path):
    out = tmp_path / "chandler"
    prepare([needs_shared_data("friends", "friends.csv")], PrepareSettings(character="Chandler Bing", **FAST), out)
    examples = check_pack(out, "Chandler Bing")
    assert len(examples) >= 8_000
    assert len({ex["episode"] for ex in examples}) > 200


@pytest.mark.slow
@pytest.mark.parametrize(("parts", "character", "least"), [
    (("simpsons", "moes_tavern_lines.txt"), "Homer Simpson", 900),
    (("house-qa", "questions_answers.csv"), "House", 21_000),
])
def test_real_other_sources(tmp_path, parts, character, least):
    out = tmp_path / "pack"
    prepare([needs_shared_data(*parts)], PrepareSettings(character=character, **FAST), out)
    assert len(check_pack(out, Pack.open(out).character)) >= least


def test_default_output_is_a_summary_and_verbose_says_more(tmp_path):
    import subprocess
    import sys

    def run(*flags):
        code = "import sys; from rolecast.cli import main; sys.exit(main(sys.argv[1:]))"
        args = [*flags, "prepare", str(SAMPLE_SCRIPT), "--character", "Maggie", "--no-style", "--no-index",
                "--out", str(tmp_path / f"p{len(flags)}{''.join(flags)}")]
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)

    quiet = run()
    assert quiet.stdout.startswith("Wrote ") and "INFO" not in quiet.stderr, quiet.stderr
    assert "INFO rolecast" in run("-v").stderr
    assert run("-q").stderr == ""
