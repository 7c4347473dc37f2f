"""The chat loop against a hostile model, a hub killed mid-turn and a caller that does not read."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e import test_chat
from tests.e2e.conftest import Client, Hub, wait_until
from tests.scripted_llm import Call, Raw, Reply, ScriptedLLM

pytestmark = pytest.mark.e2e

# The chat tests' fixtures (a scripted model, a hub that uses it, a small project) and helpers.
llm, make_hub, calc_project = test_chat.llm, test_chat.make_hub, test_chat.calc_project
chat, chat_events = test_chat.chat, test_chat.chat_events


def detail(hub: Hub, conversation: str) -> dict[str, Any]:
    response = httpx2.get(f"{hub.http}/api/conversations/{conversation}", headers=hub.headers(), timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_conversation_whose_hub_was_killed_mid_call_goes_on(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """The call's answer was never recorded: every later request of the conversation used to carry
    a tool call with no answer, which OpenAI-compatible endpoints refuse."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("", [
            Call("read_files", {"files": ["calc.py"]}, id="quick"),
            Call("execute_command", {"command": "sleep 30", "timeout": 60}, id="slow"),
        ]),
    )  # fmt: skip
    env = {"AIHUB_TOKEN": hub.token, "PATH": "/usr/bin:/bin", "COLUMNS": "80", "HOME": str(hub.home)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "chat", "--hub", hub.http, "run it"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    def started() -> str | None:
        listing = httpx2.get(f"{hub.http}/api/conversations", headers=hub.headers(), timeout=10).json()
        return listing[0]["id"] if listing and len(llm.requests) == 1 else None

    conversation = str(wait_until(started, what="the turn to start"))
    wait_until(lambda: any(m["role"] == "assistant" for m in detail(hub, conversation)["messages"]))
    hub.stop(signal.SIGKILL)

    # The chat command's stream is cut: one line, no traceback.
    _, stderr = cli.communicate(timeout=30)
    assert cli.returncode == 1 and stderr.strip().count("\n") == 0, stderr
    assert "lost the hub" in stderr

    hub.start()
    hub.workspace_id("calc", timeout=30)
    llm.add(Reply("Where was I?"))
    again = chat(hub, "calc", {"message": "go on", "conversation_id": conversation})

    assert again.status_code == 200, again.text
    sent = llm.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in sent[3:5]] == ["quick", "slow"]
    assert "no answer" in json.loads(sent[4]["content"])["error_message"]


def test_a_hundred_calls_in_one_turn_all_run(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """The client serves 64 requests at once and answers "busy" beyond: the loop used to send them all."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("", [Call("read_files", {"files": ["calc.py"]}) for _ in range(90)]
            + [Call("execute_command", {"command": "sleep 0.2"}) for _ in range(10)]),
        Reply("Read."),
    )  # fmt: skip

    answer = chat(hub, "calc", {"message": "read it a hundred times"}).json()

    assert answer["stop_reason"] == "done" and len(answer["steps"]) == 100
    assert {s["status"] for s in answer["steps"]} == {"success"}, {s.get("error") for s in answer["steps"]}
    assert all(a["status"] == "success" for a in llm.tool_messages(1).values())


def test_tool_call_ids_a_model_repeats_are_made_unique(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """Models that number their calls call_0, call_1... at each step: calls and answers were mixed up,
    and the store kept one call of each id."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("", [Call("read_files", {"files": ["calc.py"]}, id="call_0"), Call("list_files", {}, id="call_0")]),
        Reply("", [Call("read_files", {"files": ["test_calc.py"]}, id="call_0"), Call("list_files", {}, id="")]),
        Reply("Done."),
    )  # fmt: skip

    events = chat_events(hub, "calc", {"message": "look"})

    calls = [d["id"] for n, d in events if n == "tool_call"]
    assert len(set(calls)) == 4 and sorted(d["id"] for n, d in events if n == "tool_result") == sorted(calls)
    assert calls[0] == "call_0" and "" not in calls
    sent = llm.requests[-1]["messages"]
    asked = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    assert asked == calls and [m["tool_call_id"] for m in sent if m["role"] == "tool"] == calls
    stored = detail(hub, events[0][1]["conversation_id"])["tool_calls"]
    assert sorted(c["tool_call_id"] for c in stored) == sorted(calls)


def test_arguments_nested_deep_are_refused_and_every_answer_still_serializes(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """Parsed, they came back in the steps: the JSON answer failed (500) from 950 levels on, and the
    conversation's detail for ever from 400."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    deep = '{"files": ' + "[" * 950 + "]" * 950 + "}"
    llm.add(Reply("", [Call("read_files", deep, id="deep")]), Reply("Hm."))

    answer = chat(hub, "calc", {"message": "go"})

    assert answer.status_code == 200, answer.text
    (step,) = answer.json()["steps"]
    assert step["status"] == "error" and "nested" in step["error"] and step["arguments"] == deep
    assert detail(hub, answer.json()["conversation_id"])["tool_calls"][0]["arguments"] == deep
    llm.add(Reply("", [Call("read_files", '{"files": ' + "[" * 400 + "]" * 400 + "}")]), Reply("Hm."))
    events = chat_events(hub, "calc", {"message": "again"})
    assert events[-1][0] == "done"
    detail(hub, events[0][1]["conversation_id"])


def test_a_stream_cut_mid_answer_keeps_what_the_caller_saw(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    words: list[dict[str, Any] | str] = [
        {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
        for w in ("I will ", "fix")
    ]
    llm.add(Raw(words, cut=True))

    events = chat_events(hub, "calc", {"message": "fix it"})

    assert [n for n, _ in events] == ["start", "text", "text", "error"]
    conversation = events[0][1]["conversation_id"]
    assert events[-1][1]["conversation_id"] == conversation and events[-1][1]["status_code"] == 502
    messages = detail(hub, conversation)["messages"]
    assert messages[-1] == {"role": "assistant", "content": "I will fix [failed]"}


def test_output_a_stream_caller_does_not_read_is_dropped_with_a_note(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """Every output event used to wait in memory for a caller that does not read."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    loud = "head -c 5000000 /dev/zero | tr '\\0' x"  # each command's live output stops at 4 MiB
    llm.add(Reply("", [Call("execute_command", {"command": loud}) for _ in range(6)]), Reply("Loud."))
    headers = {**hub.headers(), "Accept": "text/event-stream"}
    url = f"{hub.http}/api/workspaces/calc/chat"
    with httpx2.Client(timeout=60) as http:
        request = http.build_request("POST", url, json={"message": "shout"}, headers=headers)
        response = http.send(request, stream=True)
        try:
            lines = response.iter_lines()
            start = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
            wait_until(lambda: not detail(hub, start["conversation_id"])["running"], 60, "the turn to end")
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        finally:
            response.close()

    shown = "".join(e["data"] for e in events if "tool_call_id" in e and "data" in e)
    assert "characters of output not shown" in shown
    assert shown.count("x") < 6 * 4 * 1024 * 1024
    assert events[-1]["stop_reason"] == "done"


def test_a_conversation_store_that_cannot_be_written_is_a_503_that_says_so(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """It was a bare 500 "Internal Server Error" (and a traceback in the log)."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    other = sqlite3.connect(hub.home / "conversations.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (the hub waits 5 s)
        refused = chat(hub, "calc", {"message": "hi"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"] == "the hub cannot use its conversation store: database is locked"
    finally:
        other.close()
    llm.add(Reply("Fine again."))
    assert chat(hub, "calc", {"message": "hi"}).json()["reply"] == "Fine again."
