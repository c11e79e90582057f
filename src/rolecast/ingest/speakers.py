"""Speaker labels: from a script's raw labels to one canonical name per character.

Raw labels are messy: ``"House "``, ``"House [to Cuddy]"``, ``"HOUSE"``, ``"Moe_Szyslak"``,
``"Chandler"`` beside ``"Chandler Bing"``, ``"#ALL#"``, ``""``. :class:`SpeakerMap`
learns from all labels of a corpus which ones name the same character.

    >>> from collections import Counter
    >>> m = SpeakerMap.build(Counter({"Chandler Bing": 90, "Chandler": 3, "Scene Directions": 9, "JOEY": 4}))
    >>> m("Chandler"), m("JOEY"), m("Scene Directions")
    ('Chandler Bing', 'Joey', '(narration)')
"""

from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from ..errors import SettingsError, UnknownCharacterError
from .script import GROUP, NARRATION, NON_CHARACTERS, UNKNOWN

_NOTE = re.compile(r"\s*[\[(][^\])]*[\])]?")  # "House [to Cuddy]", "JERRY (V.O.)", "Joey (cont'd"
_EDGE_PUNCT = re.compile(r"^[\s:#*\-\"'.]+|[\s:#*\-\"'.,]+$")
_GROUP_JOINER = re.compile(r"\s(?:and|&|\+)\s|[,/&+]", re.IGNORECASE)

NARRATION_LABELS = {"scene directions", "scene direction", "stage directions", "directions", "direction",
                    "description", "action", "transition", "scene", "setting", "narration"}
GROUP_LABELS = {"all", "both", "everyone", "everybody", "together", "group", "crowd", "chorus", "others",
                "the others", "the gang", "guys", "all three", "all together"}
UNKNOWN_LABELS = {"", "?", "unknown", "unk", "none", "nan", "null", "n/a"}


def clean_label(raw: str) -> str:
    """Strip notes, underscores, edge punctuation and extra spaces from a raw label."""
    label = raw.replace("_", " ")
    label = _NOTE.sub(" ", label)
    label = _EDGE_PUNCT.sub("", label)
    return " ".join(label.split())


def label_kind(label: str) -> str | None:
    """NARRATION / GROUP / UNKNOWN for non-character labels, None for a character."""
    key = label.casefold().strip("#").strip()
    if key in UNKNOWN_LABELS or not any(c.isalnum() for c in key):  # "]", "--": debris, not a name
        return UNKNOWN
    if key in NARRATION_LABELS:
        return NARRATION
    if key in GROUP_LABELS or _GROUP_JOINER.search(label):
        return GROUP
    return None


_STRAY_CAPS = re.compile(r"[a-z][A-Z]{2,}")  # "JeffREY COLE": a damaged spelling, not McCoy or DeLuca


def _display(variants: Counter) -> str:
    """The spelling to show: the commonest one that is not ALL CAPS nor damaged, else Title Case."""
    mixed = [(n, v) for v, n in variants.items() if not v.isupper() and not _STRAY_CAPS.search(v)]
    if mixed:
        return max(mixed)[1]
    return max((n, v) for v, n in variants.items())[1].title()


class SpeakerMap:
    """Maps raw labels to canonical character names (or a non-character label)."""

    def __init__(self, mapping: dict[str, str], counts: Counter):
        self.mapping = mapping  # raw label → canonical
        self.counts = counts  # canonical → lines

    @classmethod
    def build(cls, raw_counts: Counter, aliases: Iterable[str] = ()) -> SpeakerMap:
        variants: dict[str, Counter] = defaultdict(Counter)  # casefolded → spellings
        cleaned: dict[str, str] = {}
        for raw, n in raw_counts.items():
            label = clean_label(raw)
            cleaned[raw] = label
            if label_kind(label) is None:
                variants[label.casefold()][label] += n
        canon = {key: _display(spellings) for key, spellings in variants.items()}
        _merge_first_names(canon, variants)
        alias_map = {k: canon.get(v.casefold(), v) for k, v in parse_aliases(aliases).items()}
        mapping: dict[str, str] = {}
        for raw, label in cleaned.items():
            kind = label_kind(label)
            name = kind or canon[label.casefold()]
            mapping[raw] = alias_map.get(label.casefold(), alias_map.get(name.casefold(), name))
        counts: Counter = Counter()
        for raw, n in raw_counts.items():
            if mapping[raw] not in NON_CHARACTERS:
                counts[mapping[raw]] += n
        return cls(mapping, counts)

    def __call__(self, raw: str) -> str:
        return self.mapping.get(raw) or UNKNOWN

    def merged(self) -> dict[str, list[str]]:
        """Canonical name → the distinct raw labels folded into it (for the report)."""
        out: dict[str, list[str]] = defaultdict(list)
        for raw, name in self.mapping.items():
            out[name].append(raw)
        return out


def _merge_first_names(canon: dict[str, str], variants: dict[str, Counter]) -> None:
    """Point a lone first name at the one full name that starts with it (Chandler → Chandler Bing).

    Only towards an established full name: capitalised words (not "Thirteen enters", a
    direction left in a label) with at least as many lines as the lone first name.
    """
    full_by_first: dict[str, list[str]] = defaultdict(list)
    for key in canon:
        parts = canon[key].split()
        if len(parts) >= 2 and all(p[:1].isupper() for p in parts):
            full_by_first[key.split()[0]].append(key)
    for key in list(canon):
        fulls = full_by_first.get(key, [])
        if " " not in key and len(fulls) == 1 and sum(variants[fulls[0]].values()) >= sum(variants[key].values()):
            canon[key] = canon[fulls[0]]


def parse_aliases(aliases: Iterable[str]) -> dict[str, str]:
    """``["Greg=House"]`` → ``{"greg": "House"}``."""
    out = {}
    for alias in aliases:
        left, sep, right = alias.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise SettingsError(f"alias '{alias}' is not NAME=CHARACTER", 'write it like --alias "Greg=House"')
        out[clean_label(left).casefold()] = clean_label(right)
    return out


def find_character(name: str, counts: Counter) -> str:
    """The canonical speaker ``name`` refers to, or an error listing the nearest ones."""
    wanted = clean_label(name).casefold()
    by_key = {speaker.casefold(): speaker for speaker in counts}
    if wanted in by_key:
        return by_key[wanted]
    firsts = [s for s in counts if s.casefold().split()[0] == wanted]
    if len(firsts) == 1:
        return firsts[0]
    raise UnknownCharacterError(f"no speaker '{name}' in the script; nearest: {nearest(name, counts)}",
                                "pass one of these to --character (rolecast speakers lists them all)")


def nearest(name: str, counts: Counter, k: int = 5) -> str:
    wanted = name.casefold()

    def score(speaker: str) -> float:
        s = speaker.casefold()
        ratio = difflib.SequenceMatcher(None, wanted, s).ratio()
        return ratio + (0.3 if wanted in s or s in wanted else 0.0)

    best = sorted(counts, key=lambda s: (-score(s), -counts[s]))[:k]
    return ", ".join(f"{s} ({counts[s]:,} lines)" for s in best) or "(no speakers)"
