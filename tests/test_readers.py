"""Readers: decoding, each format on invented fixtures, detection, errors, fuzzing, real corpora."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from conftest import needs_shared_data
from rolecast.errors import FormatError, InputFileError, RolecastError
from rolecast.ingest.readers import PAIR_RESPONSE, READERS, RawLine, ReadResult, decode, read_file
from rolecast.settings import PrepareSettings

FIXTURES = Path(__file__).parent / "fixtures" / "readers"
SETTINGS = PrepareSettings(character="Keeper")
ALL_FORMATS = "table|friends|simpsons|pairs|screenplay|json|jsonl"


def read(name: str, **changes) -> ReadResult:
    return read_file(FIXTURES / name, SETTINGS.updated(**changes) if changes else SETTINGS)


def error_of(path: Path, settings: PrepareSettings = SETTINGS, kind: type[RolecastError] = FormatError) -> str:
    """The one-line message of the ``kind`` error that reading ``path`` raises."""
    with pytest.raises(kind) as info:
        read_file(path, settings)
    return str(info.value)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------- decoding


def test_decode_strips_bom_and_normalises_crlf():
    raw = (FIXTURES / "crlf_bom.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw, "fixture lost its BOM or CRLF (check .gitattributes)"
    text, counts = decode(FIXTURES / "crlf_bom.csv")
    assert counts == {"bom": 1, "crlf": 9}, f"counts: {counts}"
    assert text.startswith("name,line\nMarlow,"), f"text starts {text[:20]!r}"
    assert "\r" not in text and "\ufeff" not in text


def test_decode_reads_a_stray_byte_as_cp1252():
    text, counts = decode(FIXTURES / "stray_byte.csv")
    assert counts == {"cp1252_bytes": 1}, f"counts: {counts}"
    assert "Café au lait" in text and "No — tea." in text, f"text: {text!r}"


def test_decode_utf16_with_bom_and_lone_cr(tmp_path):
    path = write(tmp_path, "wide.csv", "name,line\rAda,Hello there\r".encode("utf-16"))
    text, counts = decode(path)
    assert text == "name,line\nAda,Hello there\n", f"text: {text!r}"
    assert counts == {"bom": 1, "utf16": 1, "crlf": 2}, f"counts: {counts}"


# ----------------------------------------------------------------------------- formats


def test_table_house_like_csv():
    result = read("crlf_bom.csv")
    assert result.format == "table"
    assert result.decoding == {"bom": 1, "crlf": 9}
    assert result.skipped == [6, 7], "the ragged row (line 6) and the empty text (line 7) are skipped"
    assert [(line.speaker, line.text, line.source) for line in result.lines] == [
        ("Marlow", " Who moved my stapler?", "crlf_bom.csv:2"),
        ("Quinn", ' The "stapler" is in the fridge,\nwhere you left it.', "crlf_bom.csv:3"),
        ("Marlow", " Of course it is.", "crlf_bom.csv:5"),
        ("", " [A phone rings somewhere.]", "crlf_bom.csv:8"),
        ("Dr. Okafor", " Nobody answers phones anymore.", "crlf_bom.csv:9"),
    ], "text is kept as in the source, quoted newlines and doubled quotes decoded, blank speakers kept"
    assert all(line.episode is None and line.scene is None and not line.brk for line in result.lines)


def test_table_with_semicolons_and_other_header_names(tmp_path):
    path = write(tmp_path, "show.csv", "Character;Dialogue;Ep\nAda;Hello, you;7\nBo;Hi;x7\n")
    result = read_file(path, SETTINGS)
    assert result.format == "table"
    assert [(line.speaker, line.text, line.episode) for line in result.lines] == [
        ("Ada", "Hello, you", "e07"),
        ("Bo", "Hi", "x7"),
    ], "numeric episodes become e07, others are kept as they are"


def test_table_column_flags_override_auto_mapping():
    auto = read("mapped.csv")
    assert [line.speaker for line in auto.lines] == ["Captain Vex", "Ensign Ro"], "auto: 'character' and 'line'"
    result = read("mapped.csv", speaker_col="actor", text_col="dialogue", episode_col="episode", season_col="season")
    assert result.format == "table"
    assert result.lines == [
        RawLine("Dana Holt", "Hold the bridge.", "s02e03", None, False, "mapped.csv:2"),
        RawLine("Sam Idle", "Holding, captain.", "s02e03", None, False, "mapped.csv:3"),
    ]


def test_column_flags_imply_table(tmp_path):
    path = write(tmp_path, "cast.csv", "who_said,words\nAda,Hello there\n")
    with pytest.raises(FormatError):
        read_file(path, SETTINGS)
    result = read_file(path, SETTINGS.updated(speaker_col="who_said", text_col="words"))
    assert (result.format, result.lines[0].speaker, result.lines[0].text) == ("table", "Ada", "Hello there")


def test_friends_csv():
    result = read("friends_like.csv")
    assert result.format == "friends"
    assert result.skipped == [5], "the row with an empty text"
    assert [(line.speaker, line.episode, line.scene, line.source) for line in result.lines] == [
        ("Lena Park", "s01e02", "1", "friends_like.csv:2"),
        ("Tom Reyes", "s01e02", "1", "friends_like.csv:3"),
        ("Scene Directions", "s01e02", "2", "friends_like.csv:4"),
        ("", "s02e10", "1", "friends_like.csv:6"),
    ]
    assert result.lines[1].text == "It's raining, take mine."


def test_simpsons_csv_blank_rows_are_breaks():
    result = read("simpsons_like.csv")
    assert result.format == "simpsons"
    assert result.skipped == [5], "a speaker without words is malformed; an all-empty row is a break"
    assert [(line.speaker, line.text, line.brk) for line in result.lines] == [
        ("Gus Fenwick", "Who parked a tractor in my garden?", False),
        ("Mabel Fenwick", "Your cousin did.", False),
        ("", "A tractor horn honks.", True),
        ("Mabel Fenwick", "Breakfast is ready.", False),
    ]


def test_screenplay_three_scenes():
    result = read("three_scenes.txt")
    assert result.format == "screenplay"
    assert result.skipped == [1, 14], "the notice and the loose line after a blank line"
    assert [(line.speaker, line.text, line.brk, line.source) for line in result.lines] == [
        ("KEEPER", "The lamp is out again.", True, "three_scenes.txt:5"),
        ("Wren_Ashby", "Then we light it by hand, like the old days.", False, "three_scenes.txt:6"),
        ("Dr. Pell", "(SIGHING) I brought matches.", False, "three_scenes.txt:8"),
        ("Wren_Ashby", "Nobody saw a thing.", True, "three_scenes.txt:11"),
        ("O'MALLEY", "I saw a gull.", False, "three_scenes.txt:12"),
        ("KEEPER", "Quiet, both of you.", True, "three_scenes.txt:16"),
    ]
    assert {line.episode for line in result.lines} == {"s02e05"}, "'# s02e05' sets the episode"
    assert {line.scene for line in result.lines} == {None}


def test_screenplay_episode_headings(tmp_path):
    path = write(tmp_path, "eps.txt", "Episode 3\nAda: One.\nBo: Two.\n\nSeason 2, Episode 11\nAda: Three.\n")
    result = read_file(path, SETTINGS)
    assert [(line.text, line.episode) for line in result.lines] == [("One.", "e03"), ("Two.", "e03"), ("Three.", "s02e11")]


def test_emorynlp_json():
    result = read("emory.json")
    assert result.format == "json"
    assert result.skipped == [4], "the 4th utterance has an empty transcript"
    assert [(line.speaker, line.episode, line.scene, line.brk) for line in result.lines] == [
        ("Nell Varga", "s03e07", "s03_e07_c01", True),
        ("Otto Brandt and Iris Cole", "s03e07", "s03_e07_c01", False),
        ("", "s03e07", "s03_e07_c01", False),
        ("Iris Cole", "s03e07", "s03_e07_c02", True),
        ("Otto Brandt", "s03e08", "s03_e08_c01", True),
    ]
    assert result.lines[0].source == "emory.json:s03_e07_c01_u001"
    assert result.lines[1].text == "Not us!"


def test_emorynlp_json_list_of_seasons(tmp_path):
    season = json.loads((FIXTURES / "emory.json").read_text())
    path = write(tmp_path, "all.json", json.dumps([season, {**season, "season_id": "s04", "episodes": []}]))
    assert len(read_file(path, SETTINGS).lines) == 5


def test_jsonl():
    result = read("lines.jsonl")
    assert result.format == "jsonl"
    assert result.skipped == [3, 4, 6], "not JSON, no text, not an object"
    assert result.lines == [
        RawLine("Tam", "Is the kettle on?", "s01e02", "4", False, "lines.jsonl:1"),
        RawLine("Bo", "Since dawn.", None, None, False, "lines.jsonl:2"),
        RawLine("Tam and Bo", "Tea time!", "s01e03", None, True, "lines.jsonl:7"),
    ]


def test_pairs_csv_with_bom():
    result = read("pairs_bom.csv")
    assert result.format == "pairs"
    assert result.decoding == {"bom": 1}
    assert result.skipped == [4], "a pair without a response"
    assert [(line.speaker, line.text, line.brk) for line in result.lines] == [
        ("", "Why is the kettle on the roof?", True),
        (PAIR_RESPONSE, "Because the roof asked nicely.", False),
        (PAIR_RESPONSE, "You never listen to me.", True),
        ("", "Two, no, three cats?", True),
        (PAIR_RESPONSE, "Four. Count again.", False),
    ]
    assert all(line.episode is None and line.scene is None for line in result.lines)


@pytest.mark.parametrize("header", ["anchor,response", "question,answer", "CONTEXT,Response", "prompt,response", "input,output"])
def test_pair_headers(tmp_path, header):
    result = read_file(write(tmp_path, "p.csv", f"{header}\nHi?,Hello.\n"), SETTINGS)
    assert (result.format, [line.text for line in result.lines]) == ("pairs", ["Hi?", "Hello."])


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("crlf_bom.csv", "table"),
        ("stray_byte.csv", "table"),
        ("mapped.csv", "table"),
        ("friends_like.csv", "friends"),
        ("simpsons_like.csv", "simpsons"),
        ("pairs_bom.csv", "pairs"),
        ("three_scenes.txt", "screenplay"),
        ("emory.json", "json"),
        ("lines.jsonl", "jsonl"),
    ],
)
def test_detection(name, expected):
    assert read(name).format == expected


def test_detection_ignores_the_extension(tmp_path):
    for name, target in [("three_scenes.txt", "script.dat"), ("emory.json", "data.txt"), ("friends_like.csv", "f.txt")]:
        path = write(tmp_path, target, (FIXTURES / name).read_bytes())
        assert read_file(path, SETTINGS).format == read(name).format, f"{name} renamed {target}"


def test_forced_format_wins(tmp_path):
    result = read("friends_like.csv", format="table")
    assert result.format == "table" and len(result.lines) == 4
    path = write(tmp_path, "odd.txt", "Ada: Hi.\n")
    assert read_file(path, SETTINGS.updated(format="screenplay")).lines[0].speaker == "Ada"


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    assert error_of(path, kind=InputFileError) == f"file not found: {path}. check the path."


def test_directory(tmp_path):
    assert error_of(tmp_path, kind=InputFileError) == f"{tmp_path} is a directory, not a file. pass a script file, or the folder to prepare."


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path, "locked.csv", "name,line\n")

    def refuse(self):  # chmod 0 does not stop root, so refuse the way the OS would
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert error_of(path, kind=InputFileError) == f"cannot read {path}: permission denied. check the file's permissions."


def test_binary_file_names_the_offset(tmp_path):
    path = write(tmp_path, "model.csv", b"name,line\n\x00\x01\x02")
    assert error_of(path, kind=InputFileError) == f"{path} is not a text file (a NUL byte at byte offset 10). save it as UTF-8 text."


def test_mostly_invalid_utf8_names_the_first_bad_byte(tmp_path):
    path = write(tmp_path, "latin.csv", b"abc" + b"\xff" * 10)
    assert error_of(path, kind=InputFileError) == f"{path} is not UTF-8: 10 of 13 bytes are invalid, the first at byte offset 3. save it as UTF-8."


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.csv", b"\xef\xbb\xbf\r\n")
    assert error_of(path, kind=InputFileError) == f"{path} is empty. pass a script file with dialogue in it."


def test_unknown_format():
    settings = SETTINGS.model_copy(update={"format": "xml"})  # the CLI refuses it earlier; the library too
    message = error_of(FIXTURES / "crlf_bom.csv", settings)
    assert message == f"unknown format 'xml' (known: {ALL_FORMATS.replace('|', ', ')}). pass one of them, or auto, to --format."


def test_missing_columns_name_the_columns_found(tmp_path):
    path = write(tmp_path, "my.csv", "actor_name,words,ep\nAda,Hi,1\n")
    expected = f"{path}: no speaker column among the columns found (actor_name, words, ep). map it with --speaker-col NAME (the first row must name the columns)."
    assert error_of(path) == expected
    assert error_of(path, SETTINGS.updated(format="table")) == expected
    message = error_of(path, SETTINGS.updated(speaker_col="actor_name"))
    assert message == f"{path}: no text column among the columns found (actor_name, words, ep). map it with --text-col NAME (the first row must name the columns)."


def test_column_flag_naming_a_missing_column(tmp_path):
    path = write(tmp_path, "my.csv", "name,line\nAda,Hi\n")
    message = error_of(path, SETTINGS.updated(speaker_col="actor"))
    assert message == f"{path}: no column 'actor' (--speaker-col) among the columns found (name, line). pass one of them to --speaker-col."


def test_cannot_tell_the_format(tmp_path):
    path = write(tmp_path, "novel.txt", "It was a dark and stormy night.\nThe end.\n")
    assert error_of(path) == f"cannot tell the format of {path} (first line: 'It was a dark and stormy night.'). pass --format {ALL_FORMATS}."


def test_pairs_without_pair_columns(tmp_path):
    path = write(tmp_path, "qa.csv", "name,line\nAda,Hi\n")
    message = error_of(path, SETTINGS.updated(format="pairs"))
    assert message.startswith(f"{path}: no pair columns among the columns found (name, line). name them anchor,response or")


def test_invalid_json(tmp_path):
    path = write(tmp_path, "bad.json", '{"episodes": [1,\n')
    assert error_of(path, kind=InputFileError).startswith(f"{path} is not valid JSON (line 2, column 1: Expecting value)")
    path = write(tmp_path, "other.json", '{"rows": []}')
    assert error_of(path, SETTINGS.updated(format="json")).startswith(f"{path}: JSON in an unknown layout")


# ----------------------------------------------------------------------------- fuzzing: never a bare exception

FUZZ = hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = st.sampled_from(["auto", *READERS])


def read_or_refuse(path: Path, fmt: str) -> None:
    try:
        result = read_file(path, SETTINGS.updated(format=fmt))
    except RolecastError as exc:
        event(type(exc).__name__)  # shown by --hypothesis-show-statistics
        return
    event(f"read as {result.format}, {'some' if result.lines else 'no'} lines")
    assert isinstance(result, ReadResult)
    assert all(isinstance(line, RawLine) and isinstance(line.text, str) and line.text.strip() for line in result.lines)


# Bytes that make up real scripts, so that random files get past the decoder and the sniffers often.
PIECES = [b"name,line\n", b"anchor,response\n", b"Ada: hi\n", b"INT. HALL\n", b"\n", b"\r\n", b"\r", b",", b'"', b"\xe9",
          b"\xef\xbb\xbf", b"\x00", b"{", b"}", b"[", b'"speaker": "A", "text": "b"', b"episodes", b"utterances", b"1"]
SCRIPTISH = st.lists(st.sampled_from(PIECES) | st.sampled_from(PIECES) | st.binary(max_size=3), max_size=60).map(b"".join)
BYTES = SCRIPTISH | SCRIPTISH | st.binary(max_size=3000)


@FUZZ
@given(data=BYTES, suffix=st.sampled_from([".csv", ".tsv", ".txt", ".json", ".jsonl"]), fmt=FORMATS)
def test_fuzz_random_bytes(tmp_path_factory, data, suffix, fmt):
    read_or_refuse(write(tmp_path_factory.mktemp("fuzz"), "f" + suffix, data), fmt)


CELL = st.text(max_size=30) | st.sampled_from(["", " ", '"', '""', ",", "\n", "1", "s01_e02", "3.0"])
HEADERS = st.sampled_from(
    ["name,line", "text,speaker,season,episode,scene,utterance", "raw_character_text,spoken_words", "anchor,response", "a;b"]
)
ROW = st.lists(CELL, min_size=2, max_size=2) | st.lists(CELL, min_size=6, max_size=6) | st.lists(CELL, max_size=7)


@FUZZ
@given(header=HEADERS | st.text(max_size=40), rows=st.lists(ROW | st.text(max_size=40), max_size=15), crlf=st.booleans(), fmt=FORMATS)
def test_fuzz_malformed_csv(tmp_path_factory, header, rows, crlf, fmt):
    out = io.StringIO()
    out.write(header + "\n")
    for row in rows:  # well-formed rows of any length, and raw text lines (unbalanced quotes and all)
        if isinstance(row, list):
            csv.writer(out, lineterminator="\n").writerow(row)
        else:
            out.write(row + "\n")
    text = out.getvalue().replace("\n", "\r\n") if crlf else out.getvalue()
    read_or_refuse(write(tmp_path_factory.mktemp("fuzz"), "f.csv", text), fmt)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def mostly(valid):
    """``valid`` three times in four, any JSON value otherwise."""
    return st.one_of(valid, valid, valid, JSON)


# The emorynlp layout, with any JSON value in place of any part of it.
UTTERANCE = st.fixed_dictionaries(
    {"speakers": mostly(st.lists(st.text(max_size=8), max_size=3)), "transcript": mostly(st.text(max_size=20))},
    optional={"utterance_id": JSON},
)
SCENE = st.fixed_dictionaries({"utterances": mostly(st.lists(mostly(UTTERANCE), min_size=1, max_size=4))}, optional={"scene_id": JSON})
EPISODE = st.fixed_dictionaries({"scenes": mostly(st.lists(mostly(SCENE), min_size=1, max_size=3))}, optional={"episode_id": JSON})
SEASON = st.fixed_dictionaries({"episodes": mostly(st.lists(mostly(EPISODE), min_size=1, max_size=3))}, optional={"season_id": JSON})
RECORD = st.fixed_dictionaries(
    {"speaker": st.text(max_size=8) | JSON, "text": st.text(max_size=20) | JSON},
    optional={"episode": JSON, "season": JSON, "scene": JSON},
)


@FUZZ
@given(doc=SEASON | st.lists(SEASON, max_size=2) | JSON, fmt=st.sampled_from(["auto", "json"]))
def test_fuzz_json(tmp_path_factory, doc, fmt):
    read_or_refuse(write(tmp_path_factory.mktemp("fuzz"), "f.json", json.dumps(doc)), fmt)


@FUZZ
@given(lines=st.lists(RECORD | JSON | st.text(max_size=30), max_size=10))
def test_fuzz_jsonl(tmp_path_factory, lines):
    text = "\n".join(item if isinstance(item, str) else json.dumps(item) for item in lines)
    read_or_refuse(write(tmp_path_factory.mktemp("fuzz"), "f.jsonl", text), "auto")


# ----------------------------------------------------------------------------- the real corpora (../shared/data)

HOUSE = {1: 9796, 2: 10703, 3: 10947, 4: 7637, 5: 10411, 6: 8733, 7: 9046, 8: 8038}
REAL = [(f"house-md/season{n}.csv", "table", lines, [17] if n == 8 else []) for n, lines in HOUSE.items()] + [
    ("friends/friends.csv", "friends", 67359, []),
    ("simpsons/moes_tavern_lines.txt", "screenplay", 3995, [1]),
    ("house-qa/questions_answers.csv", "pairs", 2 * 21821, []),
]
@pytest.mark.slow
@pytest.mark.parametrize(("name", "fmt", "lines", "skipped"), REAL)
def test_real_corpora(name, fmt, lines, skipped):
    result = read_file(needs_shared_data(*name.split("/")), SETTINGS)
    assert (result.format, len(result.lines), result.skipped) == (fmt, lines, skipped), name


@pytest.mark.slow
def test_real_corpora_details():
    data = needs_shared_data()
    friends = read_file(data / "friends" / "friends.csv", SETTINGS)
    speakers = Counter(line.speaker for line in friends.lines)
    assert (speakers["Chandler Bing"], speakers["Joey Tribbiani"], speakers["Scene Directions"], speakers[""]) == (8462, 8171, 6060, 276)
    assert len({line.episode for line in friends.lines}) == 236
    assert len({(line.episode, line.scene) for line in friends.lines}) == 3106
    moes = read_file(data / "simpsons" / "moes_tavern_lines.txt", SETTINGS)
    assert Counter(line.speaker for line in moes.lines)["Homer_Simpson"] == 974
    house = read_file(data / "house-md" / "season1.csv", SETTINGS)
    assert house.decoding == {"bom": 1, "crlf": 9796}
    assert all(line.text.startswith(" ") or line.text.startswith('"') for line in house.lines[:50])
    qa = read_file(data / "house-qa" / "questions_answers.csv", SETTINGS)
    assert sum(line.speaker == PAIR_RESPONSE for line in qa.lines) == 21821
    with pytest.raises(FormatError, match="no speaker column among the columns found"):
        read_file(data / "friends" / "friends_info.csv", SETTINGS)
