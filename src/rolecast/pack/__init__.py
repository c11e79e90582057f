"""A character pack: one folder holding everything needed to serve one character.

Layout (every part is optional but ``card.json`` and ``pack.json``)::

    pack.json               name, character, show, versions, base model, checksums of parts
    meta.json               resolved prepare settings, input checksums, cleaning counts
    card.json               Character Card V2 (chara_card_v2), rolecast data in extensions.rolecast
    script.jsonl            the cleaned script of all speakers
    examples/{train,validation,test}.jsonl
    profile.md, profile.png
    index/                  the character's real exchanges and their embeddings (retrieval)
    style/                  the style classifier and its report
    adapter/                PEFT LoRA adapter (training); adapter.gguf: the same for llama.cpp
    eval/                   report.md, metrics.json, charts

    >>> pack = Pack.open("packs/house")          # doctest: +SKIP
    >>> pack.require("index")                    # raises PackError naming the command to run
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import PackError
from ..files import read_json, tree_checksum, write_json


@dataclass(frozen=True)
class Part:
    path: str
    what: str
    command: str


PARTS: dict[str, Part] = {
    "card": Part("card.json", "the character card", "rolecast prepare SCRIPTS --character NAME --out {pack}"),
    "script": Part("script.jsonl", "the cleaned script", "rolecast prepare SCRIPTS --character NAME --out {pack}"),
    "examples": Part("examples", "the training examples", "rolecast prepare SCRIPTS --character NAME --out {pack}"),
    "index": Part("index", "the retrieval index", "rolecast index {pack}"),
    "style": Part("style", "the style classifier", "rolecast style train {pack}"),
    "adapter": Part("adapter", "the LoRA adapter", "rolecast train {pack}"),
    "adapter_gguf": Part("adapter.gguf", "the GGUF LoRA adapter", "rolecast export {pack}"),
    "eval": Part("eval", "the evaluation report", "rolecast eval {pack}"),
}


def slug(name: str) -> str:
    """A model id for a character: 'Chandler Bing' → 'chandler-bing'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "character"


class Pack:
    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info

    @classmethod
    def open(cls, path: str | Path) -> Pack:
        path = Path(path)
        if not path.is_dir():
            raise PackError(
                f"no character pack at {path}",
                f"build one with: rolecast prepare SCRIPTS --character NAME --out {path}",
            )
        if not (path / "pack.json").exists():
            raise PackError(
                f"{path} is not a character pack (no pack.json)",
                f"build one with: rolecast prepare SCRIPTS --character NAME --out {path}",
            )
        try:
            info = read_json(path / "pack.json")
        except ValueError as exc:
            raise PackError(f"{path / 'pack.json'} is not valid JSON ({exc})", "rebuild the pack with rolecast prepare") from None
        return cls(path, info)

    # -- identity ------------------------------------------------------------
    @property
    def character(self) -> str:
        return self.info["character"]

    @property
    def name(self) -> str:
        """The model id the pack is served under."""
        return self.info.get("name") or slug(self.character)

    @property
    def created(self) -> int:
        """When the pack was prepared (Unix seconds); pack.json's modification time for packs made before it was kept."""
        return int(self.info.get("created") or (self.path / "pack.json").stat().st_mtime)

    @property
    def show(self) -> str:
        return self.info.get("show", "")

    # -- parts ---------------------------------------------------------------
    def part(self, name: str) -> Path:
        return self.path / PARTS[name].path

    def has(self, name: str) -> bool:
        return self.part(name).exists()

    def require(self, name: str) -> Path:
        path = self.part(name)
        if not path.exists():
            part = PARTS[name]
            raise PackError(
                f"the pack {self.path} has no {part.what} ({part.path})",
                "build it with: " + part.command.format(pack=self.path),
            )
        return path

    def card(self) -> dict[str, Any]:
        from .card import as_v2

        try:
            raw = read_json(self.require("card"))
        except ValueError as exc:
            raise PackError(f"{self.part('card')} is not valid JSON ({exc})", "fix it or re-run rolecast prepare") from None
        return as_v2(raw, self.part("card"))  # checked as an import is: a hand-edited card cannot crash the chat

    def record(self, part: str, **details: Any) -> None:
        """Note in pack.json that ``part`` was (re)built, with its checksum and details."""
        info = dict(self.info)
        parts = dict(info.get("parts", {}))
        parts[part] = {"checksum": tree_checksum(self.part(part)), **details}
        info["parts"] = parts
        write_json(self.path / "pack.json", info)
        self.info = info


def new_pack_info(character: str, show: str, **extra: Any) -> dict[str, Any]:
    return {
        "format": "rolecast-pack/1",
        "created": int(time.time()),
        "name": slug(character),
        "character": character,
        "show": show,
        "rolecast_version": __version__,
        "parts": {},
        **extra,
    }
