"""Post-processing rules, one by one, batch and streamed: speaker cuts, stage directions, loops, sentences."""

import re

import pytest

from rolecast.chat.postprocess import PostProcessor, ends_sentence, loops, split_sentences

POST = PostProcessor("Gregory House", speakers=["Wilson", "Cuddy", "Foreman", "Irene"], aliases=["House"])


@pytest.mark.parametrize(
    ("raw", "expected", "rule"),
    [
        ("It's not lupus.\nWilson: It never is.", "It's not lupus.", "cut_speaker"),
        ("It is not lupus. Wilson: It never is.", "It is not lupus.", "cut_speaker"),
        ("It is not lupus. wilson : It never is.", "It is not lupus.", "cut_speaker"),
        ("Fine. User: and you?", "Fine.", "cut_speaker"),
        ("Fine.\nYou: and you?", "Fine.", "cut_speaker"),
        ("Sure thing.\nPatient: thanks", "Sure thing.", "cut_speaker"),
        ("Sure thing.\nNurse Jeffrey Sparkman: thanks", "Sure thing.", "cut_speaker"),
        ("Here is the plan.\n\n1. **Drink water**", "Here is the plan.", "cut_speaker"),
        ("House: It's not lupus.", "It's not lupus.", "strip_name"),
        ("Gregory House: Hi there.", "Hi there.", "strip_name"),
        ("Dr. House: Hi there.", "Hi there.", "strip_name"),
        ("(sighs) Everybody lies. [leaves]", "Everybody lies.", "directions"),
        ("*rolls eyes* Go away.", "Go away.", "directions"),
        ("**Bold** claims need proof.", "Bold claims need proof.", "directions"),
        ("As an AI language model, I cannot diagnose. It is probably nothing.", "It is probably nothing.", "persona"),
        ("I'm an AI assistant. Ask me anything.", "Ask me anything.", "persona"),
        ("Go home. Go home. Take two aspirin.", "Go home. Take two aspirin.", "loops"),
        ("I know I know I know I know.", "I know.", "loops"),
        ("It is fine. I think that", "It is fine.", "trim"),
        ("I think that you should", "I think that you should...", "trim"),
        ("Well, maybe,", "Well, maybe...", "trim"),
    ],
)
def test_each_rule(raw, expected, rule):
    cleaned = POST(raw)
    assert cleaned.text == expected, raw
    assert rule in cleaned.rules, f"{rule} not in {cleaned.rules} for {raw!r}"


@pytest.mark.parametrize("text", ["You know what? You were right.", "Irene is not here.", "I'm a doctor, not a priest.",
                                  "Wilson is an idiot.", "😀", "Ça va? Très bien."])
def test_clean_replies_pass_unchanged(text):
    cleaned = POST(text)
    assert (cleaned.text, cleaned.rules) == (text, []), text


def test_line_breaks_become_spaces_and_count_as_no_rule():
    cleaned = POST("I can't.\nIt's only a migraine.")
    assert (cleaned.text, cleaned.rules) == ("I can't. It's only a migraine.", [])


def test_stop_strings_cover_speakers_and_user():
    assert "\nWilson:" in POST.stop_strings and "\nUser:" in POST.stop_strings and "\n\n" in POST.stop_strings
    assert "\nHouse:" not in POST.stop_strings


def pieces(text):
    return re.findall(r"\s*\S+|\s+", text)


def run_stream(text):
    stream = POST.stream()
    shown = []
    for piece in pieces(text):
        shown.append(stream.feed(piece))
        if stream.stopped:
            break
    shown.append(stream.finish())
    return stream, shown


@pytest.mark.parametrize(
    "raw",
    ["House: It's not lupus.\nWilson: It never is.", "Fine. User: and you?", "As an AI, I can't. It is probably nothing.",
     "Gregory House: Hi there.", "Yes, you. You: are an idiot.", "Idiots. Irene is not here. Irene: yes I am",
     "(sighs) Everybody lies.", "Go home. Go home. Take two aspirin.", "Sure thing.\nPatient: thanks",
     "I can't.\nIt's only a migraine.", "Go home.\nGo home. Take two aspirin."],
)
def test_stream_matches_batch(raw):
    stream, shown = run_stream(raw)
    assert "".join(shown).strip() == POST(raw).text, raw
    assert stream.text == POST(raw).text


def test_stream_shows_words_as_they_come_and_stops_at_another_speaker():
    stream, shown = run_stream("It is not lupus. Wilson: It never is. Cuddy: Stop.")
    assert shown[:4] == ["It", " is", " not", " lupus."], shown
    assert stream.stopped


def test_stream_never_shows_a_name_prefix_or_direction():
    _, shown = run_stream("House: (smirks) Hello there.")
    assert "".join(shown) == "Hello there."
    assert all("House" not in s and "smirk" not in s for s in shown)


def test_stream_closes_an_unfinished_sentence():
    stream, shown = run_stream("It is fine. I think that")
    assert stream.text == "It is fine. I think that...", "streamed text cannot be taken back, so it is closed"
    assert ends_sentence(stream.text)


def test_loops_counts_repeats_not_line_breaks():
    assert loops("Go home.\nGo home. Take two aspirin.") and loops("I know I know I know.")
    assert not loops("I can't.\nIt's only a migraine.") and not loops("  Fine.  ") and not loops("")


def test_split_sentences():
    assert split_sentences('Hi. "Go!" he said. What?') == ["Hi.", '"Go!"', "he said.", "What?"]


@pytest.mark.parametrize("text", [
    "I'm just a script, but I can still get you to the 50th line.",
    "I'm just a character.",
    "Relax, we just have a new episode of Harbor Lights!",
    "Say hi to our viewers.",
    "The writers' room never lets me win.",
    "I am a fictional character, so no.",
])
def test_a_fourth_wall_break_is_a_persona_break(text):
    from rolecast.chat.postprocess import breaks_persona

    assert breaks_persona(text), text


@pytest.mark.parametrize("text", [
    "He had a psychotic episode last night.",
    "Stick to the script and nobody gets hurt.",
    "What a character your uncle is.",
    "Scene of the accident? Ask the cops.",
    "I'm just a doctor.",
])
def test_in_character_lines_about_episodes_and_scripts_are_not(text):
    from rolecast.chat.postprocess import breaks_persona

    assert not breaks_persona(text), text
