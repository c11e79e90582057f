"""The README's file tree stays true: every module and package of src/rolecast is in it, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("src/rolecast/\n")
    return text[start:text.index("```", start)]


def test_every_module_and_package_is_in_the_readme_tree():
    listed = tree()
    src = ROOT / "src" / "rolecast"
    missing = [str(p.relative_to(src)) for p in src.rglob("*.py")
               if p.name != "__init__.py" and not re.search(rf"\b{re.escape(p.name)}\b", listed)]
    missing += [f"{d.name}/" for d in src.iterdir() if d.is_dir() and (d / "__init__.py").exists()
                and f"{d.name}/" not in listed]
    assert not missing, f"add them to the README's file tree: {missing}"


def test_the_readme_tree_names_no_module_that_is_gone():
    names = set(re.findall(r"\b([a-z_]+\.py)\b", tree()))
    present = {p.name for p in (ROOT / "src" / "rolecast").rglob("*.py")}
    others = {"convert_hf_to_gguf.py", "llama_converter.py"} | {p.name for d in ("benchmarks", "docs") for p in (ROOT / d).glob("*.py")}
    assert names - present - others == set(), "the README lists modules that no longer exist"


def test_every_relative_link_of_the_readme_and_the_guide_resolves():
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    broken = [f"{page.relative_to(ROOT)} → {link}" for page in pages
              for link in re.findall(r"\]\(([^)#\s]+)", page.read_text(encoding="utf-8"))
              if "://" not in link and not (page.parent / link).exists()]
    assert not broken, f"links to nothing: {broken}"
