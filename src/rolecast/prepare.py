"""``rolecast prepare``: script files → a character pack (see ``pack.py`` for the layout).

    rolecast prepare ../shared/data/house-md/*.csv --character House --out packs/house

The pack is built in a temporary folder beside ``--out`` and renamed into place at
the end, so a failed run never leaves a half-written pack. With the ``chat`` extra
installed, the retrieval index and the style classifier are built too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from . import __version__
from .errors import MissingExtraError, SettingsError
from .files import atomic_dir, write_json
from .ingest import ingest
from .ingest.speakers import find_character
from .pack import Pack, new_pack_info
from .pack.card import save_card
from .pack.draft import draft_card
from .pack.examples import SPLITS, assign_splits, build_examples, write_splits
from .pack.profile import write_profile
from .settings import PrepareSettings

log = logging.getLogger(__name__)


def prepare(paths: list[Path], settings: PrepareSettings, out: Path) -> str:
    """Build the pack; return a short summary for the terminal."""
    check_out(out)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    script, report = ingest(paths, settings)
    lap("ingest")
    character = find_character(settings.character, script.speakers())
    counts: Counter = Counter()
    examples = build_examples(script, character, settings, counts)
    splits = assign_splits(examples, settings.split, settings.seed)
    lap("examples")
    card = draft_card(script, character, splits["train"] or examples, aliases=report.merged_speakers.get(character))
    card["data"]["extensions"]["rolecast"]["fallback"] = fallback_line(script, character)
    lap("card")
    report_dict = report.as_dict() | {"examples": {name: len(rows) for name, rows in splits.items()}}
    report_dict["counts"] |= dict(counts)
    with atomic_dir(out) as tmp:
        script.save(tmp / "script.jsonl")
        write_splits(splits, tmp / "examples")
        save_card(card, tmp / "card.json")
        write_profile(script, character, card, report_dict, tmp)
        lap("write")
        write_json(tmp / "pack.json", new_pack_info(character, script.show, speakers=speaker_names(script)))
        _optional_parts(Pack.open(tmp), out, settings, lap)
        carry_over(out, tmp)
        write_json(tmp / "meta.json", {
            "stage": "prepare",
            "rolecast_version": __version__,
            "settings": settings.model_dump(mode="json"),
            "inputs": report_dict["files"],
            "counts": report_dict["counts"],
            "examples": report_dict["examples"],
            "timings_s": timings,
        })
    sizes = " / ".join(f"{name} {len(splits[name]):,}" for name in SPLITS)
    return (f"Wrote {out}: {character} ({script.show}), {len(examples):,} examples ({sizes}) "
            f"from {len(script.lines):,} lines; profile: {out / 'profile.md'}")


#: What a re-prepared pack keeps of the one it replaces: what prepare does not make (training, its exports, eval).
KEPT = ("adapter", "adapter.gguf", "train", "eval", ".eval-runs", "build.json")
KEPT_PARTS = ("adapter", "adapter_gguf", "eval")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that holds something other than a pack: it would be replaced."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "pack.json").exists())):
        raise SettingsError(f"{out} exists and is not a character pack; prepare would replace it",
                            "choose another --out, or empty that folder first", param="out")


def carry_over(out: Path, tmp: Path) -> None:
    """Hard-link the old pack's training, exports and evaluation into the new one (the old stays until the swap)."""
    if not (out / "pack.json").exists():
        return
    old, new = Pack.open(out), Pack.open(tmp)
    if (old.character, old.show) != (new.character, new.show):  # another character's adapter must not move in
        log.warning("%s held %s (%s): nothing of it is kept for %s (%s)", out, old.character, old.show,
                    new.character, new.show)
        return
    kept = []
    for name in KEPT:
        source = out / name
        if source.is_dir():
            shutil.copytree(source, tmp / name, copy_function=_link)
        elif source.is_file():
            _link(source, tmp / name)
        else:
            continue
        kept.append(name)
    if not kept:
        return
    parts = {k: v for k, v in old.info.get("parts", {}).items() if k in KEPT_PARTS}
    info = {**new.info, "parts": {**new.info.get("parts", {}), **parts}}
    write_json(tmp / "pack.json", info)
    log.warning("kept %s from the previous pack %s; if the examples changed, retrain: rolecast train %s",
                ", ".join(kept), out, out)


def _link(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or no hard links: a copy
        shutil.copy2(source, target)


def speaker_names(script, limit: int = 300) -> list[str]:
    """Names the post-processor cuts at: the main speakers, and their first names when unambiguous."""
    main = [name for name, n in script.speakers().most_common(limit) if n >= 2]
    firsts = Counter(name.split()[0] for name in main if " " in name)
    extra = [first for first, n in firsts.items() if n == 1 and len(first) >= 3 and first.isalpha() and first not in main]
    return main + extra


def fallback_line(script, character: str) -> str:
    """The character's commonest short line: said when every candidate reply came out empty."""
    short = Counter(line.text for line in script.lines if line.speaker == character
                    and 1 <= len(line.text.split()) <= 4 and line.text[-1] in ".?!")
    return short.most_common(1)[0][0] if short else "Hm."


def _build_index(pack: Pack) -> None:
    from .chat.retrieval import build_index  # lazily: the chat extra may be missing

    build_index(pack)


def _train_style(pack: Pack) -> None:
    from .chat.style import train_style

    train_style(pack)


def _optional_parts(pack: Pack, out: Path, settings: PrepareSettings, lap) -> None:
    """Retrieval index and style classifier: built when the chat extra is installed."""
    steps = []
    if settings.index:
        steps.append(("index", _build_index))
    if settings.style:
        steps.append(("style", _train_style))
    for name, builder in steps:
        try:
            builder(pack)
        except (ImportError, MissingExtraError) as exc:
            log.warning("skipped the %s (%s); install the chat extra and run: rolecast %s %s",
                        name, exc, "index" if name == "index" else "style train", out)
            continue
        lap(name)
