"""search_files, edit_file and ranged read_files through the real hub and a real client, over REST;
and the same tools in the typed envelope framing."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import Hub, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def code(project: Path, tmp_path: Path) -> Path:
    (project / "src" / "util.py").write_text(
        "def helper():\n    return 41\n\n\ndef other():\n    return 41\n"
    )
    (project / "src" / "win.txt").write_bytes(b"first\r\nsecond\r\n")
    (project / "log.txt").write_text("".join(f"entry {i}\n" for i in range(1, 1001)))
    (project / ".env").write_text("API_KEY=s3cret\n")
    (project / "src" / "escape").symlink_to(tmp_path)  # outside-secret.txt is there
    return project


def test_search_edit_and_ranged_reads_over_rest(hub: Hub, code: Path, start_client) -> None:
    env = {**os.environ, "AIHUB_HOME": str(hub.home)}
    client = start_client(hub, code, "--dangerous", "deny", env=env)
    wid = hub.workspace_id(client.name)

    # search_files: matches as path:line: text; secrets and links out of the root never searched.
    found = hub.call(wid, "search_files", {"pattern": "return 41|API_KEY|SECRET"}).json()
    assert found["status"] == "success"
    assert found["matches"] == ["src/util.py:2:     return 41", "src/util.py:6:     return 41"]
    assert "s3cret" not in json.dumps(found) and "TOP SECRET" not in json.dumps(found)
    globbed = hub.call(wid, "search_files", {"pattern": "print", "glob": "src/**/*.py"}).json()
    assert globbed["matches"] == ["src/main.py:1: print('hello')"]
    bad = hub.call(wid, "search_files", {"pattern": "(unclosed"}).json()
    assert bad["status"] == "error" and bad["error_code"] == -32602 and "missing )" in bad["error_message"]
    assert hub.call(wid, "search_files", {"pattern": "x", "max_results": 5.5}).status_code == 422

    # edit_file: a unique replacement with its diff; ambiguity and absence are refused with advice.
    ambiguous = hub.call(
        wid, "edit_file", {"path": "src/util.py", "old_string": "return 41", "new_string": "return 42"}
    )
    assert ambiguous.json()["error_code"] == -32016 and "2 times" in ambiguous.json()["error_message"]
    read = hub.call(wid, "read_files", {"files": ["src/util.py"]}).json()
    edited = hub.call(
        wid,
        "edit_file",
        {
            "path": "src/util.py",
            "old_string": "def helper():\n    return 41",
            "new_string": "def helper():\n    return 42",
            "expected_sha256": read["sha256"]["src/util.py"],
        },
    ).json()
    assert edited["status"] == "success" and edited["replacements"] == 1
    assert "-    return 41\n+    return 42\n" in edited["diff"] and edited["diff"].startswith(
        "--- a/src/util.py"
    )
    assert edited["sha256"] == hashlib.sha256((code / "src" / "util.py").read_bytes()).hexdigest()
    stale = hub.call(
        wid,
        "edit_file",
        {
            "path": "src/util.py",
            "old_string": "other",
            "new_string": "another",
            "expected_sha256": read["sha256"]["src/util.py"],
        },
    ).json()
    assert stale["error_code"] == -32014
    missing = hub.call(
        wid, "edit_file", {"path": "src/util.py", "old_string": "nope", "new_string": "x"}
    ).json()
    assert missing["error_code"] == -32015 and "read" in missing["error_message"].lower()
    crlf = hub.call(
        wid, "edit_file", {"path": "src/win.txt", "old_string": "first\nsecond", "new_string": "1\n2"}
    ).json()
    assert crlf["status"] == "success" and (code / "src" / "win.txt").read_bytes() == b"1\r\n2\r\n"
    secret = hub.call(wid, "edit_file", {"path": ".env", "old_string": "API_KEY", "new_string": "X"}).json()
    assert secret["error_code"] == -32003 and (code / ".env").read_text() == "API_KEY=s3cret\n"

    # undo restores what the edit replaced.
    undone = hub.call(wid, "undo", {"checkpoint": edited["checkpoint"]}).json()
    assert undone["status"] == "success"
    assert "return 41\n\n\ndef other" in (code / "src" / "util.py").read_text()

    # read_files in pages: only those lines, the whole file's digest and line count.
    page = hub.call(
        wid, "read_files", {"files": ["log.txt", "src/main.py"], "offset": 500, "limit": 2}
    ).json()
    assert page["files"] == {"log.txt": "entry 500\nentry 501\n", "src/main.py": ""}
    assert page["total_lines"] == {"log.txt": 1000, "src/main.py": 1}
    assert page["sha256"]["log.txt"] == hashlib.sha256((code / "log.txt").read_bytes()).hexdigest()
    whole = hub.call(wid, "read_files", {"files": ["src/main.py"]}).json()
    assert whole["files"] == {"src/main.py": "print('hello')\n"} and whole["total_lines"] == {
        "src/main.py": 1
    }
    # offset 2.0 is JSON Schema's integer 2: accepted by the hub's validation and the client's.
    assert hub.call(wid, "read_files", {"files": ["log.txt"], "offset": 2.0, "limit": 1}).json()["files"] == {
        "log.txt": "entry 2\n"
    }
    wait_until(
        lambda: "search_files return 41|API_KEY|SECRET in ./ -> ok" in client.output(), what="the log line"
    )


def test_the_new_tools_are_offered_to_models_and_to_a_read_only_client(
    hub: Hub, code: Path, start_client
) -> None:
    import httpx2

    tools = {
        t["function"]["name"]: t["function"]
        for t in httpx2.get(hub.http + "/api/tools", headers=hub.headers()).json()
    }
    assert {"search_files", "edit_file"} <= set(tools)
    assert "offset" in tools["read_files"]["parameters"]["properties"]
    wid = hub.workspace_id(start_client(hub, code, "--read-only", "--dangerous", "deny").name)
    refused = hub.call(
        wid, "edit_file", {"path": "src/util.py", "old_string": "41", "new_string": "42", "replace_all": True}
    )
    assert refused.json()["error_code"] == -32003 and "read-only" in refused.json()["error_message"]
    assert "41" in (code / "src" / "util.py").read_text()
    assert hub.call(wid, "search_files", {"pattern": "hello"}).json()["matches"] == [
        "src/main.py:1: print('hello')"
    ]


def test_the_new_tools_travel_as_typed_envelopes(hub: Hub) -> None:
    with connect(hub.ws, additional_headers=hub.headers(), open_timeout=10) as ws:
        ws.send(
            json.dumps({"type": "initialize", "request_id": "1", "payload": {"workspace": "typed-tools"}})
        )
        wid = json.loads(ws.recv(timeout=10))["payload"]["workspace_id"]
        cases = [
            (
                "search_files",
                {"pattern": "TODO", "glob": "*.py"},
                {
                    "status": "success",
                    "matches": ["a.py:3: # TODO"],
                    "truncated": False,
                    "files_searched": 1,
                    "files_matched": 1,
                },
            ),
            (
                "edit_file",
                {"path": "a.py", "old_string": "x", "new_string": "y"},
                {
                    "status": "error",
                    "error_message": "old_string occurs 2 times",
                    "error_code": -32016,
                    "matches": 2,
                },
            ),
            (
                "read_files",
                {"files": ["a.py"], "offset": 3, "limit": 1},
                {"status": "success", "files": {"a.py": "# TODO\n"}, "total_lines": {"a.py": 9}},
            ),
        ]
        for method, params, payload in cases:
            outcome: dict[str, object] = {}

            def run(
                method: str = method, params: dict[str, object] = params, outcome: dict[str, object] = outcome
            ) -> None:
                response = hub.call(wid, method, params, timeout=30)
                outcome.update(status=response.status_code, body=response.json())

            worker = threading.Thread(target=run)
            worker.start()
            request = json.loads(ws.recv(timeout=10))
            assert request["type"] == method and request["payload"] == params
            ws.send(
                json.dumps(
                    {"type": f"{method}_response", "request_id": request["request_id"], "payload": payload}
                )
            )
            worker.join(30)
            assert outcome == {"status": 200, "body": payload}
