"""A listing has a deadline, like a search: a huge tree (millions of ignored files) is cut short, not walked for ever."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rpc_client.files import FileLimits, list_files
from rpc_client.ignore import IgnoreRules
from rpc_client.sandbox import Sandbox
from schemas.tools import ListFilesParams, ListFilesResult


def tree(root: Path, folders: int = 20, files: int = 10) -> None:
    for d in range(folders):
        folder = root / f"d{d:02}"
        folder.mkdir(parents=True)
        for f in range(files):
            (folder / f"f{f}.txt").write_text("x")


def test_a_listing_past_its_time_is_truncated_and_says_so(tmp_path: Path) -> None:
    tree(tmp_path)
    limits = dataclasses.replace(FileLimits(), list_seconds=0.0)
    with Sandbox(tmp_path) as sandbox:
        answer = list_files(sandbox, ListFilesParams(path=".", recursive=True), limits)
    assert answer["truncated"] is True and answer["timed_out"] is True
    ListFilesResult.model_validate(answer)  # the shape the hub expects


def test_a_withdrawn_listing_stops_at_the_next_folder_and_keeps_what_it_listed(tmp_path: Path) -> None:
    tree(tmp_path)
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return asked > 3  # withdrawn while the third folder is being listed

    with Sandbox(tmp_path) as sandbox:
        answer = list_files(sandbox, ListFilesParams(path=".", recursive=True), stop=stop)
    assert answer["truncated"] is True and answer["timed_out"] is True
    listed = {row["path"] for row in answer["files"]}
    assert "d00/f0.txt" in listed and "d19/f9.txt" not in listed


def test_a_folder_of_hidden_files_is_judged_under_the_deadline_too(tmp_path: Path) -> None:
    for n in range(3000):  # none is ever a row: only the judging of names could hold the listing
        (tmp_path / f"{n}.log").write_text("x")
    rules = IgnoreRules(["*.log"])
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return asked > 1  # the first check (the folder) passes; the next, among the names, stops it

    with Sandbox(tmp_path) as sandbox:
        whole = list_files(sandbox, ListFilesParams(path="."), rules=rules)
        assert whole["truncated"] is False and "timed_out" not in whole
        cut = list_files(sandbox, ListFilesParams(path="."), rules=rules, stop=stop)
    assert cut["timed_out"] is True and asked == 2


def test_a_listing_in_time_is_unchanged(tmp_path: Path) -> None:
    tree(tmp_path, folders=3, files=2)
    with Sandbox(tmp_path) as sandbox:
        answer = list_files(sandbox, ListFilesParams(path=".", recursive=True), stop=lambda: False)
    assert answer == {"files": answer["files"], "truncated": False} and len(answer["files"]) == 9
