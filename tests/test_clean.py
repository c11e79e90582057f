"""Cleaning: encodings, stage directions, speaker canonicalisation, duplicates, and the counts reported."""

from collections import Counter

import pytest

from rolecast.ingest.clean import balance_quotes, clean_line, fix_encoding, strip_directions


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Sit down. [He sits.] (quietly) Now.", "Sit down. Now."),
        ("[Cut to the office]", ""),
        ("I said [pause] no", "I said no"),
        ("Go (away [now]) please", "Go please"),
        ("Fine. [He leaves the room and", "Fine."),
        ("Fine. (to Ann", "Fine."),
        ("walks out.] Hello there.", "Hello there."),
        ("Hello   world ,  again .", "Hello world, again."),
        ("...", ""),
    ],
)
def test_clean_line(raw, expected):
    assert clean_line(raw, Counter()) == expected, raw


def test_directions_are_counted():
    counts = Counter()
    strip_directions("A [x] b (y) c [unclosed", counts)
    assert (counts["directions"], counts["unclosed_directions"]) == (2, 1)


def test_mac_roman_lost_punctuation_becomes_a_dash():
    counts = Counter()
    assert clean_line("Wait a second \"\u00d4\u00f8\u03a9 there are none.", counts) == "Wait a second - there are none."
    assert counts["lost_punctuation"] == 1
    assert clean_line('titled "Dead Air"\u00d4\u00f8\u03a9. Go.', Counter()) == 'titled "Dead Air". Go.'


def test_quote_debris_and_accents():
    assert clean_line('you think "horses"\u00f9 not zebras', Counter()) == 'you think "horses" not zebras'
    assert clean_line("Sì, così è.", Counter()) == "Sì, così è.", "real accents must survive"


def test_cp1252_mojibake_and_typography():
    counts = Counter()
    assert fix_encoding("It\u00e2\u20ac\u2122s caf\u00c3\u00a9 time\u2026", counts) == "It's café time..."
    assert counts["encoding_fixed_lines"] == 1


def test_ascii_lines_pass_untouched():
    counts = Counter()
    assert fix_encoding("plain line", counts) == "plain line"
    assert not counts


def test_balance_quotes():
    assert balance_quotes('I observed "') == "I observed"
    assert balance_quotes('" I know') == "I know"
    assert balance_quotes('He said "hi"') == 'He said "hi"'
