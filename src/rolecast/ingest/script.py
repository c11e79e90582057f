"""The data model every stage shares: a ``Line`` of dialogue and a ``Script`` of them.

A Script is the ordered, cleaned lines of one corpus. It is saved in a pack as
``script.jsonl`` (one Line per row) so that later stages — examples, the style
classifier's negatives, retrieval — read the same cleaned text.

    >>> s = Script("Demo", [Line("Demo", "s01e01", "1", 0, "Ann", "Hi.")])
    >>> s.speakers()
    Counter({'Ann': 1})
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PackError

#: Labels that are never a character: they stay in the script as context only.
NARRATION = "(narration)"
#: "Wilson: " before another speaker's line in a user turn (examples name speakers when a scene has several).
NAME_PREFIX = re.compile(r"^[^:\n]{1,40}: ")
GROUP = "(several)"
UNKNOWN = "(unknown)"
NON_CHARACTERS = frozenset({NARRATION, GROUP, UNKNOWN})


@dataclass(slots=True)
class Line:
    show: str
    episode: str
    scene: str
    index: int
    speaker: str
    text: str
    raw_speaker: str = ""
    raw_text: str = ""

    @property
    def is_character(self) -> bool:
        return self.speaker not in NON_CHARACTERS

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies, and a House script has 75k lines.
        return json.dumps({name: getattr(self, name) for name in self.__slots__}, ensure_ascii=False)


@dataclass
class Script:
    show: str
    lines: list[Line] = field(default_factory=list)

    def speakers(self) -> Counter:
        """Line counts per character (non-character labels left out)."""
        return Counter(line.speaker for line in self.lines if line.is_character)

    def scenes(self) -> Iterator[list[Line]]:
        """The lines grouped by (episode, scene), in order."""
        for _, group in itertools.groupby(self.lines, key=lambda line: (line.episode, line.scene)):
            yield list(group)

    def episodes(self) -> list[str]:
        return list(dict.fromkeys(line.episode for line in self.lines))

    def save(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for line in self.lines:
                fh.write(line.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Script:
        if not path.exists():
            raise PackError(f"{path} is missing", "rebuild the pack with: rolecast prepare SCRIPTS --character NAME --out PACK")
        lines = [Line(**json.loads(row)) for row in path.read_text(encoding="utf-8").splitlines() if row]
        return cls(lines[0].show if lines else "", lines)


def renumber(lines: Iterable[Line]) -> list[Line]:
    """Give lines consecutive indexes in their current order."""
    out = list(lines)
    for i, line in enumerate(out):
        line.index = i
    return out
