"""The deployment guides name only settings that exist, so a user following them sets nothing
the code ignores (a renamed setting would otherwise fail silently, at its default)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from tasks.settings import REPO_ROOT, RestyleSettings

GUIDES = sorted((REPO_ROOT / "deployments").rglob("*.md"))
SECTIONS = "|".join(RestyleSettings.model_fields)
DOTTED = re.compile(rf"`({SECTIONS})\.([a-z_]+)`")
VARIABLE = re.compile(r"RESTYLE_([A-Z_]+?)__([A-Z_]+)")


def _fields(section: str) -> set[str]:
    model = RestyleSettings.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel), section
    return set(model.model_fields)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_setting_a_guide_names_exists(guide: Path) -> None:
    text = guide.read_text()
    named = {(s, f) for s, f in DOTTED.findall(text)}
    named |= {(s.lower(), f.lower()) for s, f in VARIABLE.findall(text)}
    assert named, f"{guide.name} names no setting: the patterns above no longer match"
    unknown = sorted(f"{s}.{f}" for s, f in named
                     if s not in RestyleSettings.model_fields or f not in _fields(s))
    assert not unknown, f"{guide.name} names settings that do not exist: {unknown}"
