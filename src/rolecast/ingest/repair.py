"""Repair speaker labels spliced into dialogue text by an upstream search-and-replace.

Some corpora (the House MD transcripts) were damaged upstream: every case-insensitive
occurrence of a speaker label inside the dialogue was replaced by the label's own casing
("never" -> "nEver" for the label ``Eve``, "human" -> "huMan", "patient" -> "Patient"), and one
label by another name ("chi" -> "Park": "watching" -> "watParkng"). The damage is total, so the
corpus never shows the clean forms: the reference lexicon is wordfreq's English list plus the
corpus's own lowercase words. Nothing is hard-coded per show; every decision is logged on
``rolecast.ingest.repair``.

Use::

    repairs = learn_repairs(texts, labels)   # every dialogue line; Counter of speaker labels
    text, n = repairs.repair(line)           # repaired line, number of tokens changed

``repair`` fixes the damaged forms seen by ``learn_repairs`` (it is meant for the corpus it learned
from) with one precompiled token regex and dictionary look-ups.

What is learned:

- splice rules ``{label: x}``: a token with a capitalised label glued to other letters
  (``wat|Park|ng``, ``n|Eve|r``, ``Park|ld``, ``N|Eve|R``) is damaged. x is the label lowercased,
  unless that fails for most of the label's damaged words; then the 1-5 letter string that turns
  most of them into frequent words (voting; "chi" for ``Park``). A rule needs several distinct
  words and a majority. A token is repaired only into a word more frequent than itself, keeping
  the capitalisation of the rest of the token ("WatParkng" -> "Watching", "NEveR" -> "NEVER").
- stray capitals: other capitals after two or more lowercase letters ("canNOT"), where the
  lowercase form is a common word. "iPhone", "eBay", "McDonald", "DeMarco" do not qualify.
- common nouns: a label whose lowercase form is a common English word, never lowercase in the
  corpus, and mostly preceded by a determiner mid-sentence ("the Patient", "my Patients"; the
  names of the show almost never are) is lowercased mid-sentence, with its plural.
- words beginning with a pervasively damaged label ("Even", "Many", "Child" from "Parkld") are
  lowercased mid-sentence, unless they look like proper names: a speaker label, or a word about as
  frequent across other European languages as in English ("Parkinson", "Robert", "Chicago").

Deliberately not repaired: tokens at a sentence start, other than splices; the bare labels that
are names (``House`` is both the lead and a damaged "house", ``Park`` the doctor and "park":
ambiguous, left capitalised); internal capitals no rule explains; words the name test gets
wrong either way (a damaged "Chinese" mid-sentence is lowercased; "Robot", "Chips" stay
capitalised); forms that first appear after learning.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from statistics import median

from wordfreq import get_frequency_dict, zipf_frequency

log = logging.getLogger(__name__)

MIN_ZIPF = 2.5  # a "frequent word" of the reference lexicon
MIN_RULE_TYPES = 3  # distinct words a splice rule must repair
MIN_RULE_SUPPORT = 0.5  # share of a label's damaged token types a rule must repair
MIN_PREFIX_TYPES = 10  # words a rule repairs before words beginning with its label are lowercased mid-sentence
MIN_NOUN_USES = 20  # mid-sentence uses needed to judge a label
MIN_NOUN_ZIPF = 4.0  # a label lowercased as a common noun must be a common English word
MIN_NOUN_DET_SHARE = 0.3  # share of mid-sentence uses after a determiner that marks a common noun
MIN_MID_ZIPF = 3.0  # words lowercased mid-sentence must be at least this common
MAX_NAME_ZIPF = 5.0  # a speaker label rarer than this in English is a character name
NAME_LANGS = ("de", "fr", "es", "it", "nl", "pt", "sv", "pl")  # wordfreq "small" lists: fast to load
NAME_MARGIN = -0.75  # median zipf in NAME_LANGS minus zipf in English above this: a proper name
DETERMINERS = frozenset(
    ["the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this", "these", "those", "every", "each"]
    + ["another", "any", "some", "whose"]
)
_WORD = re.compile(r"[A-Za-z]+")
_CAPITALISED = re.compile(r"(?<![A-Za-z])[A-Za-z]*[A-Z][A-Za-z]*")
_LABEL = re.compile(r"[A-Z][a-z]{2,}")
_MID_TITLE = re.compile(r"(?<=[A-Za-z0-9,;]) +([A-Z][a-z]+)(?![A-Za-z])")  # a capitalised word mid-sentence
_STRAY = re.compile(r"[a-z]{2,}[A-Z][A-Za-z]*")


@dataclass
class Repairs:
    """What learn_repairs learned; repair() applies it to one line."""

    rules: dict[str, str] = field(default_factory=dict)  # label -> replacement, {"Park": "chi"}
    common_nouns: set[str] = field(default_factory=set)  # labels lowercased mid-sentence
    fixes: dict[str, str] = field(default_factory=dict)  # damaged token -> repaired token
    lower_mid: set[str] = field(default_factory=set)  # capitalised words lowercased mid-sentence

    def repair(self, text: str) -> tuple[str, int]:
        """Return the repaired text and how many tokens changed."""
        changed = 0

        def fix(m: re.Match[str]) -> str:
            nonlocal changed
            tok = m.group()
            new = self.fixes.get(tok, tok)
            if new in self.lower_mid and _mid_sentence(m.string, m.start()):
                new = new[0].lower() + new[1:]
            changed += new != tok
            return new

        if not (self.fixes or self.lower_mid):
            return text, 0
        return _CAPITALISED.sub(fix, text), changed


def learn_repairs(texts: Sequence[str], labels: Counter[str]) -> Repairs:
    """Learn splice rules, common-noun labels and mid-sentence lowercasing from a corpus."""
    tokens = Counter(_WORD.findall("\n".join(texts)))
    lex = _lexicon(tokens)
    names = {lab for lab in labels if _LABEL.fullmatch(lab)}
    damaged = _damaged_tokens(tokens, names, lex)
    pairs = {(t[:i].lower(), t[i + len(lab) :].lower()) for lab, toks in damaged.items() for t, i in toks}
    middles = _middles(pairs, lex)
    votes = {lab: v for lab, toks in sorted(damaged.items()) if (v := _vote(lab, toks, middles, lex))}
    rules = {lab: x for lab, (x, _) in votes.items()}
    pervasive = {lab for lab, (_, hits) in votes.items() if hits >= MIN_PREFIX_TYPES}
    fixes = {t: new for toks in damaged.values() for t, _ in toks if (new := _repair_token(t, rules, lex)) != t}
    fixes.update(_stray_capitals(tokens, fixes, lex))
    spliced = {new for tok, new in fixes.items() if any(tok.startswith(lab) for lab in rules)}
    mid, det = _mid_contexts(texts)
    nouns = _common_nouns(names, (mid, det), tokens, lex)
    lower_mid = _lower_mid(pervasive | nouns, nouns, mid, spliced, labels, lex)
    msg = "repair: splice rules %s, common nouns %s, %d damaged forms, %d words lowercased mid-sentence"
    log.info(msg, rules, sorted(nouns), len(fixes), len(lower_mid))
    return Repairs(rules, nouns, fixes, lower_mid)


def _freq(zipf: float) -> float:
    return 10 ** (zipf - 9)


def _lexicon(tokens: Counter[str]) -> dict[str, float]:
    """wordfreq's English words plus the corpus's own lowercase words, with their frequencies."""
    lex = dict(get_frequency_dict("en"))
    floor = _freq(MIN_ZIPF)
    for w, n in tokens.items():
        if n >= 2 and w.islower() and w not in lex:
            lex[w] = floor
    return lex


def _mid_sentence(text: str, start: int) -> bool:
    """True if the token at start follows a word or comma in the same sentence (after a space)."""
    j = start - 1
    if j < 1 or text[j] != " ":
        return False
    while j > 0 and text[j] == " ":
        j -= 1
    return text[j].isalnum() or text[j] in ",;"


def _is_glued(tok: str, i: int, lab: str, lex: dict[str, float]) -> bool:
    """The label at tok[i:] is glued to other letters in a way no clean word shows: "nEver", "NEveR",
    "Parkld", "EveRY"; not "Even" or "Parking" (words as they stand: see _lower_mid)."""
    after = tok[i + len(lab) : i + len(lab) + 1]
    if i:
        return True
    return tok[len(lab) :].isupper() or (after.islower() and tok.lower() not in lex)


def _damaged_tokens(tokens: Counter[str], names: set[str], lex: dict[str, float]) -> dict[str, set[tuple[str, int]]]:
    """Label -> {(token, position)} for the labels glued into tokens."""
    lengths = sorted({len(n) for n in names}, reverse=True)
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for tok in tokens:
        for i, ch in enumerate(tok):
            if ch.isupper() and (i == 0 or tok[i - 1].islower() or tok[i + 1 : i + 2].islower()):
                lab = next((tok[i : i + n] for n in lengths if tok[i : i + n] in names and i + n <= len(tok)), None)
                if lab and len(lab) < len(tok) and _is_glued(tok, i, lab, lex):
                    out[lab].add((tok, i))
    return out


def _middles(pairs: set[tuple[str, str]], lex: dict[str, float]) -> dict[tuple[str, str], set[str]]:
    """For each (prefix, suffix): the middles m (1-5 letters) making prefix + m + suffix a lexicon word.

    One pass over the lexicon fills buckets keyed by the longer of prefix[:3] / suffix[-3:].
    """

    def key(p: str, s: str) -> tuple[str, str]:
        return ("p", p[:3]) if len(p) >= len(s) else ("s", s[-3:])

    keys = {key(p, s) for p, s in pairs}
    pre, suf = {k for side, k in keys if side == "p"}, {k for side, k in keys if side == "s"}
    buckets: dict[tuple[str, str], list[str]] = defaultdict(list)
    floor = _freq(MIN_ZIPF)
    for w, f in lex.items():
        if f < floor or not (w.isascii() and w.isalpha()):
            continue
        for k in range(1, min(3, len(w) - 1) + 1):
            if w[:k] in pre:
                buckets["p", w[:k]].append(w)
            if w[-k:] in suf:
                buckets["s", w[-k:]].append(w)
    out = {}
    for p, s in pairs:
        lo, hi = len(p), len(s)
        out[p, s] = {
            w[lo : len(w) - hi]
            for w in buckets[key(p, s)]
            if 1 <= len(w) - lo - hi <= 5 and w.startswith(p) and w.endswith(s)
        }
    return out


def _vote(lab: str, toks: set[tuple[str, int]], middles: dict, lex: dict[str, float]) -> tuple[str, int] | None:
    """The replacement for a label: its own lowercase, unless that fails for most damaged words; then
    the string that turns most of them into words. None unless well supported."""
    parts = [(t[:i].lower(), t[i + len(lab) :].lower()) for t, i in toks]
    best, hits = lab.lower(), sum(p + lab.lower() + s in lex for p, s in parts)
    if hits < MIN_RULE_SUPPORT * len(toks):
        votes = Counter(m for ps in parts for m in middles[ps])
        if votes:
            best, hits = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
    ok = hits >= MIN_RULE_TYPES and hits >= MIN_RULE_SUPPORT * len(toks)
    log.debug(
        "repair: label %r -> %r repairs %d of %d damaged words: %s",
        lab,
        best,
        hits,
        len(toks),
        "accepted" if ok else "rejected",
    )
    return (best, hits) if ok else None


def _glued(tok: str, rules: dict[str, str], lex: dict[str, float]) -> list[tuple[int, str]]:
    """Non-overlapping (position, label) of rule labels glued into tok."""
    occ, i = [], 0
    while i < len(tok):
        hit = next((lab for lab in rules if tok.startswith(lab, i)), None)
        if hit and len(hit) < len(tok) and _is_glued(tok, i, hit, lex):
            occ.append((i, hit))
            i += len(hit)
        else:
            i += 1
    return occ


def _splice(tok: str, occ: list[tuple[int, str]], choice: Sequence[str]) -> str:
    """Put the replacements in, in the capitalisation of the rest of the token ("NEveR" -> "NEVER")."""
    ends = [i + len(lab) for i, lab in occ]
    pieces = [tok[j:i] for j, (i, _) in zip([0, *ends], occ, strict=False)] + [tok[ends[-1] :]]
    upper = len("".join(pieces)) >= 2 and "".join(pieces).isupper()
    out = [pieces[0]]
    for (i, _), x, piece in zip(occ, choice, pieces[1:], strict=True):
        out += [x.upper() if upper else x[0].upper() + x[1:] if i == 0 else x, piece]
    return "".join(out)


def _repair_token(tok: str, rules: dict[str, str], lex: dict[str, float]) -> str:
    """The most frequent word the rules (or plain lowercasing of the labels) make of tok; tok if none."""
    occ = _glued(tok, rules, lex)
    if not occ or len(occ) > 3:
        return tok
    options = product(*[{rules[lab], lab.lower()} for _, lab in occ])
    best, best_f = tok, lex.get(tok.lower(), 0.0)
    for choice in options:
        new = _splice(tok, occ, choice)
        f = lex.get(new.lower(), 0.0)
        if f > best_f or (f and new.lower() == tok.lower() and best is tok):
            best, best_f = new, f
    return best


def _stray_capitals(tokens: Counter[str], fixes: dict[str, str], lex: dict[str, float]) -> dict[str, str]:
    """Other capitals after two or more lowercase letters ("canNOT"), where the lowercase form is a common
    word. Tokens like "iPhone", "eBay", "McDonald" or "YouTube" do not match the pattern."""
    return {
        tok: tok.lower()
        for tok in tokens
        if tok not in fixes and _STRAY.fullmatch(tok) and lex.get(tok.lower(), 0.0) >= _freq(MIN_MID_ZIPF)
    }


def _mid_contexts(texts: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    """Capitalised words mid-sentence: how often, and how often right after a determiner."""
    text = "\n".join(texts)
    mid: Counter[str] = Counter()
    det: Counter[str] = Counter()
    for m in _MID_TITLE.finditer(text):
        start = m.start()
        prev = text[max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1 : start]
        mid[m.group(1)] += 1
        det[m.group(1)] += prev.lower() in DETERMINERS
    return mid, det


def _common_nouns(
    names: set[str], mids: tuple[Counter[str], Counter[str]], tokens: Counter[str], lex: dict[str, float]
) -> set[str]:
    """Labels that are common nouns capitalised by the damage, not names of the show."""
    mid, det = mids
    nouns = set()
    for lab in sorted(names - {n + "s" for n in names}):
        n = mid[lab] + mid[lab + "s"]
        low = tokens[lab.lower()] + tokens[lab.lower() + "s"]
        if n < MIN_NOUN_USES or lex.get(lab.lower(), 0.0) < _freq(MIN_NOUN_ZIPF) or low > 0.05 * n:
            continue
        share = (det[lab] + det[lab + "s"]) / n
        is_noun = share >= MIN_NOUN_DET_SHARE
        log.info(
            "repair: label %r mid-sentence %d times, %.0f%% after a determiner: %s",
            lab,
            n,
            100 * share,
            "common noun, lowercased" if is_noun else "a name, kept",
        )
        if is_noun:
            nouns.add(lab)
    return nouns


def _is_name(word: str, labels: Counter[str]) -> bool:
    """A speaker label that is no very common English word, or a word about as frequent across other
    European languages as in English: a proper name (or an international word, left alone too)."""
    en = zipf_frequency(word, "en")
    if word.title() in labels and en < MAX_NAME_ZIPF:
        return True
    return median(zipf_frequency(word, lang, wordlist="small") for lang in NAME_LANGS) - en > NAME_MARGIN


def _lower_mid(
    prefixes: set[str],
    nouns: set[str],
    mid: Counter[str],
    spliced: set[str],
    labels: Counter[str],
    lex: dict[str, float],
) -> set[str]:
    """Capitalised words to lowercase mid-sentence: common-noun labels and words beginning with a damaged label."""
    out = set()
    for w in set(mid) | spliced:
        if not (w[:1].isupper() and w[1:].islower()) or lex.get(w.lower(), 0.0) < _freq(MIN_ZIPF):
            continue
        lab = max((p for p in prefixes if w.startswith(p)), key=len, default=None)
        if w in spliced or (lab and w not in (lab, lab + "s")):
            ok = lex[w.lower()] >= _freq(MIN_MID_ZIPF) and not _is_name(w.lower(), labels)
        else:
            ok = lab in nouns
        if ok:
            out.add(w)
    return out
