"""Readers: one per source format, each turning a script file into raw dialogue records.

    result = read_file(Path("season1.csv"), settings)   # decode + detect (or settings.format) + read
    result.format, len(result.lines), result.skipped     # "table", 9796, []

A reader splits, never cleans: speakers and texts come out as in the source, decoded
with LF line ends (the cleaner normalises whitespace and strips directions). A new
format is one ``Reader`` subclass with ``@register``: ``sniff`` says how sure (0..1) it
is that a text is its format, ``read`` turns the text into a ``ReadResult``.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, InputFileError

if TYPE_CHECKING:
    from ..settings import PrepareSettings

logger = logging.getLogger(__name__)

#: Speaker label a pair reader gives to responses: ingest maps it to --character.
PAIR_RESPONSE = "{{char}}"


@dataclass(slots=True)
class RawLine:
    speaker: str  # the label as in the source, decoded, otherwise untouched ("" when blank)
    text: str  # the line as in the source, decoded, otherwise untouched
    episode: str | None = None  # stable id ("s01e03", or the source's own id); None: the source has none
    scene: str | None = None  # the source's scene id; None: infer from breaks
    brk: bool = False  # a scene break (blank line, scene heading, new pair) comes right before this line
    source: str = ""  # "file.csv:123" for messages


@dataclass
class ReadResult:
    path: str
    format: str
    lines: list[RawLine] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # 1-based source line numbers of malformed rows
    decoding: dict[str, int] = field(default_factory=dict)  # e.g. {"bom": 1, "cp1252_bytes": 3, "crlf": 1}


SNIFF_CHARS = 8192  # sniffers look at this much of the text
BINARY_WINDOW = 8192  # a NUL byte in this many leading bytes means a binary file
MAX_BAD_SHARE = 0.05  # more invalid UTF-8 than this is a wrong encoding, not a stray byte
CSV_SUFFIXES = (".csv", ".tsv", ".tab")

# ----------------------------------------------------------------------------- decoding

# surrogateescape turns each invalid byte b into U+DC00+b, so one regex pass finds and replaces them all.
_ESCAPED = re.compile("[\udc80-\udcff]")
# cp1252 leaves five bytes undefined; Windows maps them to the C1 controls, as latin-1 does.
_CP1252 = {chr(0xDC00 + b): bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(0x80, 0x100)}


def decode(path: Path) -> tuple[str, dict[str, int]]:
    """The file's text with LF line ends, and counts of what was repaired on the way."""
    path, counts = Path(path), {}
    data = _read_bytes(path)
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        try:
            text = data.decode("utf-16")  # the codec reads and drops the BOM itself
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{path}: invalid UTF-16 at byte offset {exc.start}", "save it as UTF-8") from None
        counts.update(bom=1, utf16=1)
    else:
        skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        if skip:
            counts["bom"] = 1
        text = _decode_utf8(path, data, skip, counts)
    if "\r" in text:
        crlf, text = text.count("\r\n"), text.replace("\r\n", "\n")
        counts["crlf"] = crlf + text.count("\r")  # lone CRs (old Mac files) end lines too
        text = text.replace("\r", "\n")
    return text, counts


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise InputFileError(f"{path} is a directory, not a file", "pass a script file, or the folder to prepare")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"file not found: {path}", "check the path") from None
    except PermissionError:
        raise InputFileError(f"cannot read {path}: permission denied", "check the file's permissions") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}", "check the path") from None


def _decode_utf8(path: Path, data: bytes, skip: int, counts: dict[str, int]) -> str:
    nul = data.find(b"\x00", 0, BINARY_WINDOW)
    if nul >= 0:
        raise InputFileError(f"{path} is not a text file (a NUL byte at byte offset {nul})", "save it as UTF-8 text")
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        first = exc.start + skip
    text = data[skip:].decode("utf-8", "surrogateescape")
    bad = sum(1 for _ in _ESCAPED.finditer(text))
    if bad > MAX_BAD_SHARE * len(data):
        raise InputFileError(
            f"{path} is not UTF-8: {bad} of {len(data)} bytes are invalid, the first at byte offset {first}",
            "save it as UTF-8",
        )
    counts["cp1252_bytes"] = bad  # a few stray bytes: a Windows editor's quote or accent
    return _ESCAPED.sub(lambda m: _CP1252[m.group()], text)


# ----------------------------------------------------------------------------- registry and detection


class Reader:
    """One source format: ``sniff`` (0..1: is ``text``, read from ``path``, this format?) and ``read``."""

    name: str = ""

    def sniff(self, path: Path, text: str) -> float:
        return 0.0

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        raise NotImplementedError


#: Every known format by name, in registration order (which also breaks ties in detection).
READERS: dict[str, Reader] = {}


def register(cls: type[Reader]) -> type[Reader]:
    READERS[cls.name] = cls()
    return cls


def read_file(path: Path, settings: PrepareSettings) -> ReadResult:
    """Decode ``path``, pick its reader (``settings.format`` or auto-detection) and read it."""
    path = Path(path)
    text, counts = decode(path)
    if not text.strip():
        raise InputFileError(f"{path} is empty", "pass a script file with dialogue in it")
    reader = detect(path, text, settings)
    result = reader.read(path, text, settings)
    result.decoding = counts
    logger.info("%s: %d lines as %s, %d rows skipped", path, len(result.lines), reader.name, len(result.skipped))
    return result


def detect(path: Path, text: str, settings: PrepareSettings) -> Reader:
    """The reader ``settings.format`` names, else the one whose sniff is most confident."""
    if settings.format != "auto":
        if settings.format not in READERS:
            known = ", ".join(READERS)
            raise FormatError(f"unknown format '{settings.format}' (known: {known})", "pass one of them, or auto, to --format")
        return READERS[settings.format]
    # Column flags only make sense for a table, so they settle the question for CSVs.
    if any(getattr(settings, f"{role}_col", None) for role in ROLES) and (
        path.suffix.lower() in CSV_SUFFIXES or READERS["table"].sniff(path, text) > 0
    ):
        return READERS["table"]
    scores = {name: reader.sniff(path, text) for name, reader in READERS.items()}
    best = max(scores, key=lambda name: scores[name])
    logger.debug("%s: format scores %s", path, scores)
    if scores[best] <= 0.3:
        header, first = _head(path, text)[1], text.lstrip().split("\n", 1)[0]
        seen = f"columns found: {_found(header)}" if len(header) > 1 else f"first line: {first[:60]!r}"
        raise FormatError(f"cannot tell the format of {path} ({seen})", f"pass --format {'|'.join(READERS)}")
    return READERS[best]


def _found(header: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(name.strip()[:30] for name in header[:12])
    return shown + (f", ... ({len(header)} in all)" if len(header) > 12 else "")


def _sample_lines(text: str) -> list[str]:
    """The complete lines among the first SNIFF_CHARS characters."""
    lines = text[:SNIFF_CHARS].split("\n")
    return lines[:-1] if len(text) > SNIFF_CHARS and len(lines) > 1 else lines


# ----------------------------------------------------------------------------- tables (CSV/TSV)

#: Header names each role is auto-mapped from (case-insensitive), most likely first.
ROLES: dict[str, tuple[str, ...]] = {
    "speaker": ("name", "speaker", "character", "char", "actor", "person", "raw_character_text", "who"),
    "text": ("line", "text", "dialogue", "dialog", "utterance_text", "spoken_words", "transcript", "quote"),
    "episode": ("episode", "ep", "episode_id", "episode_number"),
    "season": ("season", "series"),
    "scene": ("scene", "scene_id", "scene_number"),
}
_SXE = re.compile(r"s?0*([0-9]{1,6})\s*[_ .-]?\s*(?:e|ep|x)\s*0*([0-9]{1,6})", re.I)  # s01_e01, S1E3, 1x03
_NUMBER = re.compile(r"(?:s|season\s*)?0*([0-9]{1,6})(?:\.0+)?", re.I)  # 3, 03, 3.0 (pandas), s01


@lru_cache(maxsize=4096)
def _episode_id(season: str | None, episode: str | None) -> str | None:
    """A stable episode id: ``s01e03`` with both numbers, ``e03`` with the episode's only."""
    ep = (episode or "").strip()
    if m := _SXE.fullmatch(ep):
        return f"s{int(m[1]):02d}e{int(m[2]):02d}"
    if not (n := _NUMBER.fullmatch(ep)) or ep[:1].isalpha():
        return ep or None
    s = _NUMBER.fullmatch((season or "").strip())
    return f"s{int(s[1]):02d}e{int(n[1]):02d}" if s else f"e{int(n[1]):02d}"


def _head(path: Path, text: str) -> tuple[str, tuple[str, ...]]:
    return _sniff_csv(path.suffix.lower(), "\n".join(_sample_lines(text)[:6]))


@lru_cache(maxsize=16)
def _sniff_csv(suffix: str, sample: str) -> tuple[str, tuple[str, ...]]:
    """(delimiter, header row) of a table's first lines; cached, as every table reader sniffs."""
    first = sample.split("\n", 1)[0]
    delimiter = "\t" if suffix in (".tsv", ".tab") else ""
    with contextlib.suppress(csv.Error):  # only the delimiter: its quotechar guess takes apostrophes for quotes
        delimiter = delimiter or csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    if not delimiter or delimiter not in first:  # Sniffer gives up on (or misreads) ragged samples; the header decides
        delimiter = max(",\t;|", key=first.count) if any(d in first for d in ",\t;|") else ","
    try:
        header = next((row for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if row), [])
    except csv.Error:
        header = []
    return delimiter, tuple(header)


def _names(header: list[str] | tuple[str, ...]) -> list[str]:
    return [name.strip().lower() for name in header]


def _table(path: Path, text: str) -> tuple[list[str], Iterator[tuple[int, list[str] | None]]]:
    """The header row, and (first line number, fields or None if refused by csv) for each row after it."""

    def rows(reader: Any) -> Iterator[tuple[int, list[str] | None]]:
        while True:
            start = reader.line_num + 1
            try:
                yield start, next(reader)
            except StopIteration:
                return
            except csv.Error:  # e.g. a field over the size limit; the reader resumes on the next line
                yield start, None

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_head(path, text)[0], quotechar='"', doublequote=True)
    found = rows(reader)
    header = next((row for _, row in found if row != []), None)
    if not header:
        raise FormatError(f"{path}: no header row", "put the column names on the first line")
    return header, found


def _columns(path: Path, header: list[str], settings: PrepareSettings | None) -> dict[str, int | None]:
    """Role -> column index, from the --*-col flags first, else the usual header names."""
    names, cols = _names(header), {}
    for role, aliases in ROLES.items():
        flag = (getattr(settings, f"{role}_col", None) or "").strip().lower()
        if flag and flag not in names:
            raise FormatError(
                f"{path}: no column '{flag}' (--{role}-col) among the columns found ({_found(header)})",
                f"pass one of them to --{role}-col",
            )
        cols[role] = names.index(flag) if flag else next((names.index(a) for a in aliases if a in names), None)
        if cols[role] is None and role in ("speaker", "text") and settings is not None:
            raise FormatError(
                f"{path}: no {role} column among the columns found ({_found(header)})",
                f"map it with --{role}-col NAME (the first row must name the columns)",
            )
    return cols


@register
class TableReader(Reader):
    """Any CSV/TSV with a header: columns mapped by name or by the --*-col flags."""

    name = "table"
    required: frozenset[str] = frozenset()  # header names that identify a specialised table
    blank_row_is_break = False  # a row with neither speaker nor text: scene break (Simpsons), not malformed

    def sniff(self, path: Path, text: str) -> float:
        header = _head(path, text)[1]
        if self.required:
            return 0.95 if self.required <= set(_names(header)) else 0.0
        if len(header) < 2:
            return 0.0
        cols = _columns(path, list(header), None)
        if cols["speaker"] is not None and cols["text"] is not None:
            return 0.8
        # A .csv with unknown columns is still a table: reading it says which flag to pass.
        return 0.4 if path.suffix.lower() in CSV_SUFFIXES else 0.2

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        header, rows = _table(path, text)
        cols = _columns(path, header, settings)
        result, brk = ReadResult(str(path), self.name), False
        for line_no, row in rows:
            if row == []:  # a blank line: a gap in the source
                brk = True
            elif row is None or len(row) != len(header):
                result.skipped.append(line_no)
            elif self.blank_row_is_break and not (row[cols["speaker"]].strip() or row[cols["text"]].strip()):
                brk = True
            elif not row[cols["text"]].strip():
                result.skipped.append(line_no)
            else:
                result.lines.append(self._line(f"{path.name}:{line_no}", row, cols, brk))
                brk = False
        return result

    @staticmethod
    def _line(source: str, row: list[str], cols: dict[str, int | None], brk: bool) -> RawLine:
        cell = {role: (row[i] if i is not None else None) for role, i in cols.items()}
        episode = _episode_id(cell["season"], cell["episode"])
        return RawLine(row[cols["speaker"]], row[cols["text"]], episode, (cell["scene"] or "").strip() or None, brk, source)


@register
class FriendsReader(TableReader):
    """The emorynlp Friends CSV: ``text,speaker,season,episode,scene,utterance``."""

    name = "friends"
    required = frozenset({"text", "speaker", "season", "episode", "scene", "utterance"})


@register
class SimpsonsReader(TableReader):
    """Kaggle's "Dialogue Lines of The Simpsons": ``raw_character_text,spoken_words``; empty rows split scenes."""

    name = "simpsons"
    required = frozenset({"raw_character_text", "spoken_words"})
    blank_row_is_break = True


PAIR_COLUMNS = (("anchor", "response"), ("question", "answer"), ("context", "response"), ("prompt", "response"), ("input", "output"))


def _pair_columns(header: list[str] | tuple[str, ...]) -> tuple[int, int] | None:
    names = _names(header)
    return next(((names.index(a), names.index(r)) for a, r in PAIR_COLUMNS if a in names and r in names), None)


@register
class PairsReader(Reader):
    """(anchor, response) CSVs: each pair is its own scene, the response spoken by the character."""

    name = "pairs"

    def sniff(self, path: Path, text: str) -> float:
        return 0.95 if _pair_columns(_head(path, text)[1]) else 0.0

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        header, rows = _table(path, text)
        if (cols := _pair_columns(header)) is None:
            pairs = " or ".join(",".join(pair) for pair in PAIR_COLUMNS)
            raise FormatError(f"{path}: no pair columns among the columns found ({_found(header)})", f"name them {pairs}")
        result = ReadResult(str(path), self.name)
        for line_no, row in rows:
            if row == []:
                continue  # every pair starts its own scene anyway
            if row is None or len(row) != len(header) or not row[cols[1]].strip():
                result.skipped.append(line_no)
                continue
            source, anchor = f"{path.name}:{line_no}", row[cols[0]]
            if anchor.strip():
                result.lines.append(RawLine("", anchor, brk=True, source=source))
            result.lines.append(RawLine(PAIR_RESPONSE, row[cols[1]], brk=not anchor.strip(), source=source))
        return result


# ----------------------------------------------------------------------------- plain-text screenplays

_NAME_WORD = r"[\w.'#\"()&/-]+"  # Moe_Szyslak, JERRY, Dr. Hibbert, HOMER_(CONT'D, Patron_#1
_CUE = re.compile(rf"\s*(?P<name>{_NAME_WORD}(?: {_NAME_WORD}){{0,3}})\s*:(?:\s+(?P<text>.*)|\s*$)")
_HEADING = re.compile(
    r"""\s*(?:
        (?:INT|EXT|INT\./EXT|EXT\./INT|I/E)[.\s/]                                # INT. MOE'S TAVERN - NIGHT
      | \[\s*(?i:scene)\b.*\]\s*$                                            # [Scene: Central Perk]
      | (?i:scene|act)\s+(?:[0-9]+|[IVXLC]+|(?i:one|two|three|four|five))\b  # SCENE 3, ACT ONE, ACT II
      | [-=*~_]{3,}                                                          # --- scene ---
    )""",
    re.X,
)
_EPISODE_HEADING = re.compile(
    r"\s*\#*\s*(?:(?i:season)\s*(?P<season>[0-9]{1,4})\s*[,.:-]?\s*)?(?i:episode)\s*(?P<episode>[0-9]{1,4})\b"
    r"|\s*\#*\s*(?P<sxe>[sS][0-9]{1,4}\s*[_ ]?[eE][0-9]{1,4})\s*$"
)


def _episode_heading(line: str) -> str | None:
    """The episode a heading like ``Episode 3`` or ``# s01e03`` starts, else None."""
    if m := _EPISODE_HEADING.match(line):
        return _episode_id(m["season"], m["episode"]) if m["episode"] else _episode_id(None, m["sxe"])
    return None


def _cue(line: str) -> tuple[str, str] | None:
    """(name, text) of a ``NAME: text`` line; a name starts with a letter or digit and holds a letter."""
    m = _CUE.match(line)
    if not m or not m["name"][0].isalnum() or not any(c.isalpha() for c in m["name"]):
        return None
    return m["name"], m["text"] or ""


@register
class ScreenplayReader(Reader):
    """Plain text, one ``NAME: line`` per line; blank lines and headings split scenes."""

    name = "screenplay"

    def sniff(self, path: Path, text: str) -> float:
        lines = [line for line in _sample_lines(text) if line.strip() and not _HEADING.match(line)]
        ratio = sum(1 for line in lines if _cue(line)) / len(lines) if lines else 0.0
        bonus = 0.05 if ratio and path.suffix.lower() in (".txt", ".text", ".script", ".fountain", ".md") else 0.0
        return min(1.0, 0.9 * ratio + bonus)

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        result, episode, brk = ReadResult(str(path), self.name), None, False
        found: list[tuple[int, RawLine]] = []
        current: RawLine | None = None  # the dialogue line a continuation belongs to
        for line_no, line in enumerate(text.split("\n"), 1):
            heading = _episode_heading(line)
            if not line.strip() or heading or _HEADING.match(line):
                episode, brk, current = heading or episode, True, None
            elif cue := _cue(line):
                current = RawLine(cue[0], cue[1], episode, None, brk, f"{path.name}:{line_no}")
                found.append((line_no, current))
                brk = False
            elif current is not None:
                current.text = f"{current.text} {line.strip()}" if current.text.strip() else line.strip()
            else:
                result.skipped.append(line_no)  # a title, a copyright notice, a loose direction
        for line_no, line in found:  # a "NAME:" cue that never got any text is malformed
            if line.text.strip():
                result.lines.append(line)
            else:
                result.skipped.append(line_no)
        result.skipped.sort()
        return result


# ----------------------------------------------------------------------------- JSON and JSON lines


def _speakers(value: Any) -> str | None:
    """One label: several speakers joined with " and " (the cleaner makes it a group line); None if invalid."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return " and ".join(value)
    return None


def _scalar(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@register
class JsonReader(Reader):
    """emorynlp character-mining JSON: a season (or a list) > episodes > scenes > utterances.

    JSON has no usable line numbers: ``skipped`` holds utterance ordinals (1-based) and
    ``source`` the utterance_id where there is one.
    """

    name = "json"

    def sniff(self, path: Path, text: str) -> float:
        head = text[:SNIFF_CHARS].lstrip()
        if not head.startswith(("{", "[")):
            return 0.0
        if '"utterances"' in head and ('"episodes"' in head or '"scenes"' in head):
            return 0.95
        return 0.5 if path.suffix.lower() == ".json" else 0.1

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
            raise InputFileError(f"{path} is not valid JSON{where}", "fix the file, or pass the right --format") from None
        seasons = [data] if isinstance(data, dict) else _items(data)
        if not all(isinstance(season, dict) and "episodes" in season for season in seasons):
            raise FormatError(
                f"{path}: JSON in an unknown layout (expected seasons > episodes > scenes > utterances)",
                "convert it to JSON lines of {speaker, text} objects and pass --format jsonl",
            )
        result, n = ReadResult(str(path), self.name), 0
        for season in seasons:
            for episode in (e for e in _items(season["episodes"]) if isinstance(e, dict)):
                episode_id = _episode_id(_scalar(season.get("season_id")), _scalar(episode.get("episode_id")))
                for scene in (s for s in _items(episode.get("scenes")) if isinstance(s, dict)):
                    brk = True
                    for utterance in _items(scene.get("utterances")):
                        n += 1
                        line = self._utterance(path, n, utterance, episode_id, _scalar(scene.get("scene_id")))
                        if line is None:
                            result.skipped.append(n)
                        else:
                            line.brk, brk = brk, False
                            result.lines.append(line)
        return result

    @staticmethod
    def _utterance(path: Path, n: int, utt: Any, episode: str | None, scene: str | None) -> RawLine | None:
        if not isinstance(utt, dict) or not isinstance(utt.get("transcript"), str) or not utt["transcript"].strip():
            return None
        if (speaker := _speakers(utt.get("speakers"))) is None:
            return None
        ref = utt["utterance_id"] if isinstance(utt.get("utterance_id"), str) else n
        return RawLine(speaker, utt["transcript"], episode, scene, source=f"{path.name}:{ref}")


_MISSING = object()


def _record(line: str, source: str) -> RawLine | None:
    """A JSON line ``{speaker, text, episode?, scene?, season?}`` as a RawLine; None when it is not one."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    lowered = {key.lower(): value for key, value in obj.items()}  # keys by ROLES' names, any case
    pick = {role: next((lowered[a] for a in aliases if a in lowered), _MISSING) for role, aliases in ROLES.items()}
    speaker, text = _speakers(pick["speaker"]) if pick["speaker"] is not _MISSING else None, pick["text"]
    if speaker is None or not isinstance(text, str) or not text.strip():
        return None
    episode = _episode_id(_scalar(pick["season"]), _scalar(pick["episode"]))
    return RawLine(speaker, text, episode, _scalar(pick["scene"]), source=source)


@register
class JsonlReader(Reader):
    """One JSON object per line: ``{"speaker", "text", "episode"?, "scene"?, "season"?}``; blank lines split scenes."""

    name = "jsonl"

    def sniff(self, path: Path, text: str) -> float:
        suffix_score = 0.4 if path.suffix.lower() in (".jsonl", ".ndjson") else 0.0
        lines = [line for line in _sample_lines(text) if line.strip()][:5]
        if lines and all(_record(line, "") for line in lines):
            return 0.9
        return suffix_score

    def read(self, path: Path, text: str, settings: PrepareSettings) -> ReadResult:
        result, brk = ReadResult(str(path), self.name), False
        for line_no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                brk = True
            elif (raw := _record(line, f"{path.name}:{line_no}")) is None:
                result.skipped.append(line_no)
            else:
                raw.brk, brk = brk, False
                result.lines.append(raw)
        return result
