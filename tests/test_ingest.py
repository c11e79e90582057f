"""Ingestion: several files as one corpus, episode groups, scenes and the reader overrides."""

from collections import Counter

import pytest

from rolecast.errors import FormatError, InputFileError
from rolecast.ingest import expand, guess_show, ingest
from rolecast.ingest.script import GROUP, NARRATION, UNKNOWN
from rolecast.settings import PrepareSettings


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "night-shift"
    folder.mkdir()
    write(folder / "ep1.csv", "name,line\nAnn, Hello there. [waves]\nBOB, Hi Ann.\nAnn, Hello there. [waves]\n"
          "Bob [to Ann], (quietly) Coffee?\n,Someone mumbles.\nAnn, [Cut to the office]\nAnn, We watKimng the clock.\n")
    write(folder / "ep2.csv", "name,line\nann, New day.\nKim, Morning.\nAnn, Are you watKimng me?\nKim, I am matKimng socks.\n"
          "Ann, You are always watKimng.\nKim, I am a Kimld at heart.\n")
    return folder


def test_episodes_scenes_speakers_and_counts(corpus):
    script, report = ingest([corpus / "ep1.csv", corpus / "ep2.csv"], PrepareSettings(character="Ann", repair=False))
    assert script.show == "Night Shift"
    assert script.episodes() == ["ep1", "ep2"], "each file without an episode column is one episode"
    assert script.speakers() == Counter({"Ann": 5, "Bob": 2, "Kim": 3})
    assert [line.speaker for line in script.lines][:5] == ["Ann", "Bob", "Bob", UNKNOWN, "Ann"]
    first = script.lines[0]
    assert (first.text, first.raw_text, first.raw_speaker) == ("Hello there.", " Hello there. [waves]", "Ann")
    assert report.counts["duplicates_dropped"] == 1
    assert report.counts["empty_after_cleaning"] == 1, "[Cut to the office] leaves nothing spoken"
    assert report.counts["decode_crlf"] == 0 and report.counts["rows_read"] == 13
    scenes = {(line.episode, line.scene) for line in script.lines}
    assert len(scenes) == 3, "the cut direction starts a new scene"


def test_repairs_learned_from_the_corpus(corpus):
    script, report = ingest(sorted(corpus.glob("*.csv")), PrepareSettings(character="Ann"))
    texts = " ".join(line.text for line in script.lines)
    assert "watKimng" not in texts and "watching" in texts
    assert report.repair_rules.get("Kim") == "chi"
    assert report.counts["repaired_tokens"] >= 3


def test_pairs_become_the_character(tmp_path):
    path = write(tmp_path / "qa.csv", "\ufeffanchor,response\nHow are you?,Terrible. Next.\nIs it lupus?,It's never lupus.\n")
    script, _ = ingest([path], PrepareSettings(character="House"))
    assert [(line.speaker, line.text) for line in script.lines] == [
        (UNKNOWN, "How are you?"), ("House", "Terrible. Next."), (UNKNOWN, "Is it lupus?"), ("House", "It's never lupus.")]
    assert len({line.scene for line in script.lines}) == 2, "each pair is its own scene"


def test_non_characters_stay_as_context(tmp_path):
    path = write(tmp_path / "f.csv", "text,speaker,season,episode,scene,utterance\nThey enter.,Scene Directions,1,1,1,1\n"
                 "Hi!,#ALL#,1,1,1,2\nHey.,Joey Tribbiani,1,1,1,3\nHow you doin'?,Joey,1,1,1,4\n")
    script, _ = ingest([path], PrepareSettings(character="Joey"))
    assert [line.speaker for line in script.lines] == [NARRATION, GROUP, "Joey Tribbiani", "Joey Tribbiani"]
    assert script.lines[0].episode == "s01e01"


def test_folder_expansion_and_errors(tmp_path, corpus):
    assert [p.name for p in expand([corpus])] == ["ep1.csv", "ep2.csv"]
    with pytest.raises(InputFileError, match="holds no script files"):
        expand([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])
    with pytest.raises(InputFileError, match="not found"):
        ingest([tmp_path / "missing.csv"], PrepareSettings(character="x"))
    junk = write(tmp_path / "junk.csv", "a,b\n1,2\n")
    with pytest.raises(FormatError, match="--speaker-col"):
        ingest([junk], PrepareSettings(character="x"))


def test_guess_show(tmp_path):
    assert guess_show([tmp_path / "house-md" / "season1.csv"]) == "House MD"
    assert guess_show([tmp_path / "data" / "friends.csv"]) == "Friends"
