"""Ingest: script files → one cleaned :class:`~rolecast.ingest.script.Script`, with every step counted.

    script, report = ingest([Path("season1.csv"), Path("season2.csv")], PrepareSettings(character="House"))

Steps, in order: read each file (``readers``), give every line an episode and a scene,
canonicalise speakers (``speakers``), clean the text (``clean``), repair upstream damage
learned from the corpus (``repair``), drop exact duplicates within a scene.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EmptyResultError, InputFileError
from ..files import sha256
from ..settings import PrepareSettings
from .clean import clean_line
from .readers import PAIR_RESPONSE, RawLine, ReadResult, read_file
from .repair import learn_repairs
from .script import NON_CHARACTERS, Line, Script
from .speakers import SpeakerMap, clean_label

log = logging.getLogger(__name__)

# A direction that moves the camera elsewhere: a scene break in sources without scenes.
_SCENE_CUE = re.compile(r"[\[(][^\])]*\b(cut to|opening credits|fade (?:in|out)|scene|flashback|later)\b", re.I)
SCRIPT_SUFFIXES = {".csv", ".tsv", ".txt", ".json", ".jsonl"}


@dataclass
class IngestReport:
    files: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    repair_samples: list[tuple[str, str]] = field(default_factory=list)
    repair_rules: dict[str, str] = field(default_factory=dict)
    merged_speakers: dict[str, list[str]] = field(default_factory=dict)
    pairs: bool = False

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "counts": dict(self.counts),
            "repair_rules": self.repair_rules,
            "repair_samples": self.repair_samples[:20],
            "merged_speakers": {k: v for k, v in self.merged_speakers.items() if len(v) > 1},
        }


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named, and the script files inside folders named, in a stable order."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SCRIPT_SUFFIXES)
            if not found:
                raise InputFileError(f"folder {path} holds no script files ({', '.join(sorted(SCRIPT_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(path)
    return out


def ingest(paths: Iterable[Path], settings: PrepareSettings) -> tuple[Script, IngestReport]:
    report = IngestReport()
    files = expand(paths)
    results = [read_file(path, settings) for path in files]
    for path, result in zip(files, results):
        report.files.append(_file_entry(path, result))
        report.counts.update({f"decode_{k}": v for k, v in result.decoding.items()})
        report.counts["rows_skipped"] += len(result.skipped)
        report.pairs |= result.format == "pairs"
    raw = _place(results)
    report.counts["rows_read"] = len(raw)
    show = settings.show or guess_show(files)
    lines = _clean(raw, settings, report)
    if settings.repair:
        _repair(lines, report)
    lines = _dedupe(lines, report)
    if not any(row[2] not in NON_CHARACTERS for row in lines):
        raise EmptyResultError("no dialogue lines left after cleaning", "check the input files and --format")
    script = Script(show, [Line(show, ep, sc, i, spk, text, rs, rt) for i, (ep, sc, spk, text, rs, rt) in enumerate(lines)])
    report.counts["lines"] = len(script.lines)
    return script, report


def _file_entry(path: Path, result: ReadResult) -> dict:
    return {"path": str(path), "format": result.format, "rows": len(result.lines), "sha256": sha256(path),
            "skipped": len(result.skipped), "skipped_first": result.skipped[:5]}


def _place(results: list[ReadResult]) -> list[tuple[str, str, RawLine]]:
    """Give every raw line an episode (the file stem when the source has none) and a scene."""
    placed = []
    for result in results:
        stem = Path(result.path).stem
        scene, last_episode, cut_after = 0, None, False
        for raw in result.lines:
            episode = raw.episode or stem
            cue = _SCENE_CUE.search(raw.text)
            if episode != last_episode or raw.brk or cut_after or (cue and cue.start() == 0):
                scene += 1
            cut_after = bool(cue and cue.start() > 0)
            last_episode = episode
            placed.append((episode, raw.scene if raw.scene is not None else str(scene), raw))
    return placed


def _clean(placed, settings: PrepareSettings, report: IngestReport) -> list[list]:
    labels = Counter(raw.speaker for _, _, raw in placed if raw.speaker != PAIR_RESPONSE)
    speakers = SpeakerMap.build(labels, settings.alias)
    report.merged_speakers = speakers.merged()
    character = clean_label(settings.character)
    out = []
    for episode, scene, raw in placed:
        text = clean_line(raw.text, report.counts)
        if not text:
            report.counts["empty_after_cleaning"] += 1
            continue
        speaker = character if raw.speaker == PAIR_RESPONSE else speakers(raw.speaker)
        if speaker in NON_CHARACTERS:
            report.counts[f"non_character_{speaker.strip('()')}"] += 1
        out.append([episode, scene, speaker, text, raw.speaker, raw.text])
    report.counts["speakers_merged"] = sum(len(v) - 1 for v in report.merged_speakers.values() if len(v) > 1)
    return out


def _repair(lines: list[list], report: IngestReport) -> None:
    labels = Counter(clean_label(row[4]) for row in lines)
    repairs = learn_repairs([row[3] for row in lines], labels)
    report.repair_rules = dict(repairs.rules) | {noun: noun.lower() for noun in sorted(repairs.common_nouns)}
    for row in lines:
        fixed, n = repairs.repair(row[3])
        if n:
            report.counts["repaired_tokens"] += n
            report.counts["repaired_lines"] += 1
            if len(report.repair_samples) < 50:
                report.repair_samples.extend(_changed_tokens(row[3], fixed))
            row[3] = fixed


def _changed_tokens(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.split(), after.split()
    return [(x, y) for x, y in zip(a, b) if x != y] if len(a) == len(b) else [(before, after)]


def _dedupe(lines: list[list], report: IngestReport) -> list[tuple]:
    seen: set[tuple] = set()
    out = []
    for episode, scene, speaker, text, raw_speaker, raw_text in lines:
        key = (episode, scene, speaker, text)
        if key in seen:
            report.counts["duplicates_dropped"] += 1
            continue
        seen.add(key)
        out.append((episode, scene, speaker, text, raw_speaker, raw_text))
    return out


def guess_show(files: list[Path]) -> str:
    """A show name from the files' folder (``house-md`` → ``House MD``) or the first file's stem."""
    folder = files[0].resolve().parent.name if files else ""
    name = folder if folder and folder not in {"data", "scripts", "tmp", "."} else (files[0].stem if files else "")
    words = re.split(r"[-_\s]+", name)
    return " ".join(w.upper() if len(w) <= 2 else w.capitalize() for w in words if w) or "Show"
