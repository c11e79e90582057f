"""pyproject's dependency floors and constraints-min.txt (what `make test-min` installs) agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "dev"}
    found = {}
    for spec in project["dependencies"] + [s for group in extras.values() for s in group]:
        if ";" in spec:  # only for other Pythons (tomli): CI's Python never installs it
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^]]*\])?\s*>=\s*([0-9][^,;\s]*)", spec)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints-min.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line.strip() and not line.startswith("#"))


def test_every_floor_is_pinned_at_that_version_in_constraints_min():
    wanted, pinned = floors(), pins()
    assert wanted, "no floors found in pyproject.toml"
    assert {name: pinned.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("name", ["transformers", "trl", "gradio", "llama-cpp-python"])
def test_the_libraries_whose_new_apis_rolecast_uses_have_floors(name):
    assert name in floors()


def test_the_installed_versions_are_the_floors_in_the_min_venv_and_above_them_elsewhere():
    """`make test-min` sets ROLECAST_MIN_VENV: there every floor must be the version installed, so that the fast suite
    it runs is a test of that floor; elsewhere, nothing installed may be below its floor."""
    import importlib.metadata
    import os

    from packaging.version import Version

    at_floor = os.environ.get("ROLECAST_MIN_VENV") == "1"
    checked = 0
    for name, floor in floors().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this venv does not have
        checked += 1
        if at_floor:
            # torch's "+cpu" names the build, not the version
            assert Version(Version(installed).public) == Version(floor), f"{name} {installed} is not its floor {floor} in the min venv"
        else:
            assert Version(installed) >= Version(floor), f"{name} {installed} is below its floor {floor}"
    assert checked >= 10, "the floors of the installed extras were checked"
