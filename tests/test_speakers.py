"""Speaker names: canonical forms, first-name merges, aliases and non-character labels."""

from collections import Counter

import pytest

from rolecast.errors import SettingsError, UnknownCharacterError
from rolecast.ingest.script import GROUP, NARRATION, UNKNOWN
from rolecast.ingest.speakers import SpeakerMap, clean_label, find_character, label_kind, parse_aliases


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("House ", "House"), ("House [to Cuddy]", "House"), ("Moe_Szyslak", "Moe Szyslak"),
     ("JERRY (V.O.)", "JERRY"), ("  Joey  (cont'd", "Joey"), ("#ALL#", "ALL"), ("", "")],
)
def test_clean_label(raw, expected):
    assert clean_label(raw) == expected


@pytest.mark.parametrize(
    ("label", "kind"),
    [("Scene Directions", NARRATION), ("ALL", GROUP), ("Both", GROUP), ("Ross and Rachel", GROUP),
     ("Monica & Phoebe", GROUP), ("", UNKNOWN), ("?", UNKNOWN), ("]", UNKNOWN), ("--", UNKNOWN), ("Chandler Bing", None),
     ("Andy", None)],
)
def test_label_kind(label, kind):
    assert label_kind(label) == kind


def test_case_variants_merge_to_the_common_spelling():
    m = SpeakerMap.build(Counter({"House": 50, "HOUSE": 3, "house ": 1, "MAN": 4}))
    assert (m("HOUSE"), m("house "), m("MAN")) == ("House", "House", "Man")
    assert m.counts == Counter({"House": 54, "Man": 4})


def test_a_damaged_spelling_is_not_the_one_shown():
    m = SpeakerMap.build(Counter({"JeffREY COLE": 40, "JEFFREY COLE": 2, "McCoy": 5}))
    assert (m("JeffREY COLE"), m("McCoy")) == ("Jeffrey Cole", "McCoy"), "stray capitals in a label, not a name's own"


def test_first_name_merges_only_when_unambiguous():
    m = SpeakerMap.build(Counter({"Chandler Bing": 90, "Chandler": 3, "Ross Geller": 9, "Ross Kemp": 2, "Ross": 5}))
    assert m("Chandler") == "Chandler Bing"
    assert m("Ross") == "Ross", "two full names start with Ross: ambiguous"
    m = SpeakerMap.build(Counter({"Thirteen": 1971, "Thirteen enters": 1, "Cam": 50, "Cam Reyes": 3}))
    assert m("Thirteen") == "Thirteen", "a direction glued to a label is no full name"
    assert m("Cam") == "Cam", "a rare full name does not swallow the established label"


def test_aliases_and_non_characters():
    m = SpeakerMap.build(Counter({"House": 10, "Greg": 2, "#ALL#": 3, "": 4}), aliases=["Greg=house"])
    assert m("Greg") == "House"
    assert m("#ALL#") == GROUP and m("") == UNKNOWN
    assert m.counts == Counter({"House": 12})


def test_bad_alias():
    with pytest.raises(SettingsError, match='--alias "Greg=House"'):
        parse_aliases(["Greg"])


def test_find_character():
    counts = Counter({"Chandler Bing": 90, "Joey Tribbiani": 80, "Janice": 4})
    assert find_character("chandler bing", counts) == "Chandler Bing"
    assert find_character("Joey", counts) == "Joey Tribbiani"
    with pytest.raises(UnknownCharacterError) as err:
        find_character("Chandlr", counts)
    assert "nearest: Chandler Bing (90 lines)" in str(err.value)
    assert "--character" in str(err.value)
