"""docs/tools.md is generated from the catalogue and must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schemas.tools import TOOLS
from schemas.tools_doc import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


def test_the_committed_tools_page_is_what_the_catalogue_generates() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/tools.md is out of date: run `.venv/bin/python -m schemas.tools_doc > docs/tools.md`"
    )


def test_the_page_shows_every_tool_with_its_description_parameters_result_and_errors() -> None:
    page = render()
    for spec in TOOLS.values():
        assert f"## `{spec.name}`" in page
        assert spec.description in page
        for field in spec.params.model_fields:
            assert f"| `{field}` |" in page
        for code in spec.errors:
            assert f"| {int(code)} |" in page


def test_the_module_prints_the_page() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "schemas.tools_doc"],
        capture_output=True,
        text=True,
        check=True,
        encoding="utf-8",
    ).stdout
    assert printed == render()
