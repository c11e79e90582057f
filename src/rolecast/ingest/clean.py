"""Text cleaning for dialogue lines: encoding damage, stage directions, whitespace.

Every function takes a ``Counter`` and adds what it changed, so that ``prepare``
can report the count of every cleaning step.

    >>> from collections import Counter
    >>> counts = Counter()
    >>> clean_line("  Sit down. [He sits.] (quietly) Now.", counts)
    'Sit down. Now.'
    >>> counts["directions"]
    2
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import ftfy

# Runs of characters outside ASCII: candidates for Mac Roman mojibake ("ÔøΩ" is the
# UTF-8 bytes of U+FFFD read as Mac Roman). ftfy covers the cp1252/latin-1 family but
# not Mac Roman, which is what these fan transcripts were saved through.
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]{2,}")
# "ì"/"ù" standing for lost curly quotes: only where they touch a straight quote, so
# that real accented words survive.
_QUOTE_DEBRIS = re.compile(r'"[ìùî]|[ìùî]"')
_LOST_PUNCT = "\ufffd"
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "})

# Stage directions: [...] and (...), or an opening bracket never closed on the line.
_DIRECTION = re.compile(r"\[[^\[\]]*\]|\([^()]*\)")
_UNCLOSED = re.compile(r"[\[(][^\[\]()]*$")
_STRAY_CLOSER = re.compile(r"^[^\[(]*?[\])]")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_EMPTYISH = re.compile(r"^[\W_]*$")


def fix_encoding(text: str, counts: Counter) -> str:
    """Repair mojibake (ftfy, plus Mac Roman), lost punctuation and quote debris; NFC."""
    if text.isascii():  # the common case, and ftfy is the slowest step of ingest
        return text
    fixed = ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
    fixed = _NON_ASCII_RUN.sub(_unmac, fixed)
    if _LOST_PUNCT in fixed:
        counts["lost_punctuation"] += fixed.count(_LOST_PUNCT)
        fixed = _restore_lost_punctuation(fixed)
    if _QUOTE_DEBRIS.search(fixed):
        counts["quote_debris"] += len(_QUOTE_DEBRIS.findall(fixed))
        fixed = _QUOTE_DEBRIS.sub('"', fixed)
    fixed = unicodedata.normalize("NFC", fixed.translate(_TYPOGRAPHY))
    if fixed != text:
        counts["encoding_fixed_lines"] += 1
    return fixed


def _unmac(match: re.Match) -> str:
    run = match.group(0)
    try:
        return run.encode("mac_roman").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return run


def _restore_lost_punctuation(text: str) -> str:
    # The lost character was a dash or an ellipsis (or a curly quote, after a straight one).
    text = re.sub(r'(^|\s)"\ufffd', r"\1-", text)  # an opening quote glued to it: debris
    text = text.replace('"\ufffd', '"')
    return text.replace("\ufffd", " - ")


def balance_quotes(text: str) -> str:
    """Drop a lone straight quote left dangling at either end of the line."""
    if text.count('"') % 2 == 0:
        return text
    if text.endswith('"') and (len(text) < 2 or text[-2].isspace()):
        return text[:-1].rstrip()
    if text.startswith('"') and (len(text) < 2 or text[1].isspace()):
        return text[1:].lstrip()
    return text


def strip_directions(text: str, counts: Counter) -> str:
    """Remove ``[...]`` / ``(...)`` directions, an unclosed one at the end, a stray closer at the start."""
    out, n = _DIRECTION.subn(" ", text)
    while n:  # nested brackets: peel from the inside out
        counts["directions"] += n
        out, n = _DIRECTION.subn(" ", out)
    out, n = _UNCLOSED.subn(" ", out)
    counts["unclosed_directions"] += n
    out, n = _STRAY_CLOSER.subn(" ", out)
    counts["stray_closers"] += n
    return out


def normalise_space(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return re.sub(r"^[-,;:\s]+(?=\w)", "", text)


def clean_line(text: str, counts: Counter) -> str:
    """The spoken words of one raw line; '' when nothing spoken is left."""
    fixed = fix_encoding(text, counts)
    spoken = balance_quotes(normalise_space(strip_directions(fixed, counts)))
    if _EMPTYISH.match(spoken):
        return ""
    return spoken
