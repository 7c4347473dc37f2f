"""The tool-calling loop end to end: a scripted OpenAI-compatible server (real HTTP, the real
``openai`` SDK in a real hub process), a real client on a temporary project."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import Client, Hub, free_port, wait_until
from tests.scripted_llm import Call, Fail, Reply, ScriptedLLM

pytestmark = pytest.mark.e2e

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TEST = 'from calc import add, mul\n\nassert add(2, 3) == 5, f"add(2, 3) is {add(2, 3)}"\nassert mul(2, 3) == 6\nprint("all tests passed")\n'


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()


@pytest.fixture
def make_hub(tmp_path: Path, llm: ScriptedLLM) -> Iterator[Callable[..., Hub]]:
    hubs: list[Hub] = []

    def make(*args: str) -> Hub:
        home = tmp_path / f"home-{len(hubs)}"
        home.mkdir()
        hub = Hub(
            port=free_port(),
            home=home,
            args=[
                "--llm-base-url",
                llm.base_url,
                "--llm-model",
                "scripted-model",
                "--llm-max-retries",
                "0",
                *args,
            ],
            env={"AIHUB_LLM_API_KEY": "sk-scripted-key"},
        )
        hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture
def calc_project(tmp_path: Path) -> Path:
    root = tmp_path / "calc"
    root.mkdir()
    (root / "calc.py").write_text(CALC)
    (root / "test_calc.py").write_text(TEST)
    (root / ".env").write_text("API_KEY=do-not-leak\n")
    return root


def chat(hub: Hub, workspace: str, body: dict[str, Any], timeout: float = 120) -> httpx2.Response:
    return httpx2.post(
        f"{hub.http}/api/workspaces/{workspace}/chat", json=body, headers=hub.headers(), timeout=timeout
    )


def chat_events(
    hub: Hub, workspace: str, body: dict[str, Any], events: list[tuple[str, dict[str, Any]]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events, appended to ``events`` as they arrive."""
    events = [] if events is None else events
    headers = {**hub.headers(), "Accept": "text/event-stream"}
    with httpx2.stream(
        "POST", f"{hub.http}/api/workspaces/{workspace}/chat", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                assert name is not None
                events.append((name, json.loads(line[5:])))
    return events


def test_a_bug_gets_fixed_through_list_search_read_edit_and_a_test_run(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("Let me look at the project and run its tests.", [
            Call("list_files", {"path": "./", "recursive": True}),
            Call("execute_command", {"command": "python3 test_calc.py", "timeout": 30}),
        ]),
        Reply("", [Call("search_files", {"pattern": r"def add\("})]),
        Reply("", [Call("read_files", {"files": ["calc.py"], "offset": 1, "limit": 3})]),
        Reply("add subtracts; fixing it.", [
            Call("edit_file", {"path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}),
        ]),
        Reply("", [Call("execute_command", {"command": "python3 test_calc.py", "timeout": 30})]),
        Reply("Fixed: `add` returned a - b. The tests pass now."),
    )  # fmt: skip

    response = chat(hub, "calc", {"message": "The tests fail. Fix it."})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stop_reason"] == "done"
    assert answer["reply"] == "Fixed: `add` returned a - b. The tests pass now."
    assert (calc_project / "calc.py").read_text() == CALC.replace("a - b", "a + b")
    assert [s["tool"] for s in answer["steps"]] == [
        "list_files", "execute_command", "search_files", "read_files", "edit_file", "execute_command",
    ]  # fmt: skip
    assert all(s["status"] == "success" for s in answer["steps"]), answer["steps"]
    assert answer["usage"] == {"prompt_tokens": 600, "completion_tokens": 120, "total_tokens": 720}

    # What the model was told, request by request: every call answered by its id.
    first = llm.requests[0]
    assert first["model"] == "scripted-model"
    assert first["messages"][0]["role"] == "system" and "calc" in first["messages"][0]["content"]
    assert first["messages"][-1] == {"role": "user", "content": "The tests fail. Fix it."}
    offered = {t["function"]["name"] for t in first["tools"]}
    assert {
        "list_files",
        "read_files",
        "execute_command",
        "write_file",
        "edit_file",
        "search_files",
    } <= offered

    listing, failing_run = llm.tool_messages(1).values()
    names = {f["path"] for f in listing["files"]}
    assert {"calc.py", "test_calc.py"} <= names and ".env" not in names
    assert failing_run["status"] == "success" and failing_run["exit_code"] != 0
    assert "add(2, 3) is -1" in failing_run["stderr"]
    (search,) = llm.tool_messages(2).values()
    assert any(m.startswith("calc.py:1:") for m in search["matches"]), search
    (read,) = llm.tool_messages(3).values()
    assert read["files"]["calc.py"] == "def add(a, b):\n    return a - b\n\n"
    (edit,) = llm.tool_messages(4).values()
    assert "-    return a - b" in edit["diff"] and "+    return a + b" in edit["diff"]
    (passing_run,) = llm.tool_messages(5).values()
    assert passing_run["exit_code"] == 0 and "all tests passed" in passing_run["stdout"]
    # Each assistant message with tool calls is followed by one answer per call, in order.
    messages = llm.requests[-1]["messages"]
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            assert [a["tool_call_id"] for a in messages[i + 1 : i + 1 + len(ids)]] == ids


def test_tool_calls_of_one_turn_run_concurrently(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    """Two commands that each wait for the other's file: only concurrent runs both meet."""
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    wait_for = "touch {me}; for i in $(seq 150); do [ -e {other} ] && echo met-{me} && exit 0; sleep 0.1; done; exit 7"
    llm.add(
        Reply("", [
            Call("execute_command", {"command": wait_for.format(me="a", other="b"), "timeout": 30}, id="first"),
            Call("execute_command", {"command": wait_for.format(me="b", other="a"), "timeout": 30}, id="second"),
        ]),
        Reply("Both met."),
    )  # fmt: skip

    answer = chat(hub, "calc", {"message": "go"}).json()

    answers = llm.tool_messages(1)
    assert list(answers) == ["first", "second"]
    assert answers["first"]["stdout"] == "met-a\n" and answers["second"]["stdout"] == "met-b\n"
    assert answer["stop_reason"] == "done"


def test_broken_arguments_and_tool_errors_are_answered_and_the_loop_goes_on(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("", [
            Call("read_files", '{"files": ["calc.py"', id="not-json"),
            Call("read_files", {"files": "calc.py"}, id="wrong-type"),
            Call("read_files", {"files": ["calc.py"], "extra": 1}, id="unknown-field"),
            Call("delete_everything", {}, id="no-such-tool"),
            Call("read_files", {"files": ["../outside-secret.txt", ".env", "calc.py"]}, id="refused"),
            Call("read_files", "", id="empty"),
        ]),
        Reply("I see what went wrong."),
    )  # fmt: skip

    answer = chat(hub, "calc", {"message": "read things"}).json()

    assert answer["stop_reason"] == "done" and answer["reply"] == "I see what went wrong."
    answers = llm.tool_messages(1)
    assert list(answers) == ["not-json", "wrong-type", "unknown-field", "no-such-tool", "refused", "empty"]
    for key in answers:
        assert answers[key]["status"] == "error", key
    assert "not valid JSON" in answers["not-json"]["error_message"]
    assert "files" in answers["wrong-type"]["error_message"]
    assert "extra" in answers["unknown-field"]["error_message"]
    assert "no tool 'delete_everything'" in answers["no-such-tool"]["error_message"]
    assert "files: Field required" in answers["empty"]["error_message"]
    refused = answers["refused"]
    assert "outside" in refused["error_message"] and ".env" in refused["error_message"]
    assert refused["files"] == {"calc.py": CALC}  # what could be read still arrives
    assert "do-not-leak" not in json.dumps(llm.requests)
    steps = {s["tool_call_id"]: s for s in answer["steps"]}
    assert steps["not-json"]["arguments"] == '{"files": ["calc.py"'
    assert all(s["status"] == "error" and s["error"] for s in steps.values())


def test_the_step_limit_ends_a_runaway_loop_with_a_clear_message(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub("--max-steps", "3")
    start_client(hub, calc_project, name="calc")
    llm.default = lambda body: Reply("Looking again.", [Call("list_files", {})])

    answer = chat(hub, "calc", {"message": "loop forever"}).json()

    assert answer["stop_reason"] == "step_limit"
    assert "step limit" in answer["reply"] and "continue" in answer["reply"]
    assert len(llm.requests) == 3 and len(answer["steps"]) == 3
    # The last calls were answered too: the conversation can go on.
    llm.default = Reply("Done now.")
    again = chat(hub, "calc", {"message": "continue", "conversation_id": answer["conversation_id"]}).json()
    assert again["stop_reason"] == "done"
    roles = [m["role"] for m in llm.requests[-1]["messages"]]
    assert roles[-3:] == ["tool", "assistant", "user"]


def test_the_token_budget_ends_a_turn_that_costs_too_much(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.default = lambda body: Reply("More.", [Call("list_files", {})], usage=(150_000, 1_000))

    answer = chat(hub, "calc", {"message": "expensive"}).json()

    assert answer["stop_reason"] == "token_budget" and "budget" in answer["reply"]
    assert answer["usage"]["total_tokens"] == 453_000 and len(llm.requests) == 3


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (Fail(500), "HTTP 500: scripted upstream failure"),
        (
            Fail(401, '{"error": {"message": "Incorrect API key provided"}}'),
            "HTTP 401: Incorrect API key provided",
        ),
        (Fail(garbage="<html>proxy error</html>"), "not a chat completion"),
        (Reply("too slow", delay=8), "did not answer in time"),
    ],
    ids=["500", "401", "garbage", "timeout"],
)
def test_an_upstream_failure_is_a_502_with_its_message(
    make_hub: Callable[..., Hub],
    llm: ScriptedLLM,
    calc_project: Path,
    start_client: Callable[..., Client],
    failure: Fail | Reply,
    expected: str,
) -> None:
    hub = make_hub("--llm-timeout", "1")
    start_client(hub, calc_project, name="calc")
    llm.add(failure)

    response = chat(hub, "calc", {"message": "hello"}, timeout=60)

    assert response.status_code == 502, response.text
    assert expected in response.json()["detail"]
    assert "sk-scripted-key" not in response.text
    # The hub is fine: the next turn works.
    llm.add(Reply("All good."))
    assert chat(hub, "calc", {"message": "again"}).json()["reply"] == "All good."


def test_the_sdk_retries_a_5xx_before_giving_up(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub("--llm-max-retries", "1")  # the later flag wins
    start_client(hub, calc_project, name="calc")
    llm.add(Fail(503), Reply("Answered on the retry."))

    answer = chat(hub, "calc", {"message": "hello"}).json()

    assert answer["reply"] == "Answered on the retry." and len(llm.requests) == 2


def test_streamed_events_come_in_order_with_live_command_output(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("Running the tests now.", [Call("execute_command", {"command": "python3 test_calc.py; echo after"}, id="run")]),
        Reply("They fail on add."),
    )  # fmt: skip

    events = chat_events(hub, "calc", {"message": "run the tests"})

    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    conversation = events[0][1]["conversation_id"]
    first_call = names.index("tool_call")
    assert set(names[1:first_call]) == {"text"}
    assert "".join(d["delta"] for n, d in events[1:first_call]) == "Running the tests now."
    result = names.index("tool_result")
    outputs = [d for n, d in events if n == "output"]
    assert outputs and all(first_call < names.index("output") < result for _ in outputs)
    assert "after" in "".join(o["data"] for o in outputs if o["tool_call_id"] == "run")
    assert events[first_call][1] == {
        "id": "run",
        "tool": "execute_command",
        "arguments": {"command": "python3 test_calc.py; echo after"},
    }
    assert events[result][1]["status"] == "success"
    assert "".join(d["delta"] for n, d in events[result:] if n == "text") == "They fail on add."
    done = events[-1][1]
    assert done["conversation_id"] == conversation and done["stop_reason"] == "done"
    assert done["reply"] == "They fail on add."


def test_a_streamed_upstream_failure_ends_with_an_error_event(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(Fail(500))

    events = chat_events(hub, "calc", {"message": "hi"})

    assert [n for n, _ in events] == ["start", "error"]
    assert events[1][1]["status_code"] == 502 and "scripted upstream failure" in events[1][1]["detail"]


def test_a_user_cancels_a_running_turn_and_its_command_is_stopped(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply(
            "",
            [
                Call(
                    "execute_command",
                    {"command": "echo started; sleep 20; touch finished", "timeout": 60},
                    id="slow",
                )
            ],
        )
    )
    events: list[tuple[str, dict[str, Any]]] = []

    reader = threading.Thread(target=chat_events, args=(hub, "calc", {"message": "wait"}, events))
    reader.start()
    wait_until(lambda: any(n == "output" for n, _ in events), what="the command to start")
    conversation = events[0][1]["conversation_id"]
    running = httpx2.get(f"{hub.http}/api/conversations/{conversation}", headers=hub.headers(), timeout=10)
    assert running.json()["running"] is True

    cancel = httpx2.post(
        f"{hub.http}/api/conversations/{conversation}/cancel", headers=hub.headers(), timeout=10
    )
    assert cancel.status_code == 200, cancel.text
    reader.join(30)
    assert not reader.is_alive()

    assert events[-1][0] == "done" and events[-1][1]["stop_reason"] == "cancelled"
    detail = httpx2.get(
        f"{hub.http}/api/conversations/{conversation}", headers=hub.headers(), timeout=10
    ).json()
    assert detail["running"] is False
    assert detail["turns"][-1]["stop_reason"] == "cancelled"
    assert detail["tool_calls"][0]["status"] == "cancelled"
    tool_answer = [m for m in detail["messages"] if m["role"] == "tool"]
    assert tool_answer and "cancelled" in tool_answer[0]["content"]
    # The command was killed: it never reaches its touch.
    assert again_cancel_is_409(hub, conversation)
    assert not (calc_project / "finished").exists()


def again_cancel_is_409(hub: Hub, conversation: str) -> bool:
    response = httpx2.post(
        f"{hub.http}/api/conversations/{conversation}/cancel", headers=hub.headers(), timeout=10
    )
    return response.status_code == 409


def test_a_json_caller_that_hangs_up_cancels_its_turn(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    marker = f"{time.monotonic_ns() % 1000 + 6000}.{time.monotonic_ns() % 10_000}"
    llm.add(Reply("", [Call("execute_command", {"command": f"sleep {marker}", "timeout": 600})]))
    with pytest.raises(httpx2.ReadTimeout):
        chat(hub, "calc", {"message": "wait"}, timeout=2)

    def ended() -> list[object]:
        listing = httpx2.get(f"{hub.http}/api/conversations", headers=hub.headers(), timeout=10).json()
        detail = httpx2.get(
            f"{hub.http}/api/conversations/{listing[0]['id']}", headers=hub.headers(), timeout=10
        )
        return [t["stop_reason"] for t in detail.json()["turns"] if t["stop_reason"]]

    assert wait_until(ended, what="the turn to end") == ["cancelled"]
    wait_until(
        lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1,
        what="the withdrawn command to be killed",
    )
    assert "Exception in ASGI application" not in (hub.log.read_text() if hub.log else "")


def test_a_conversation_continues_after_a_hub_restart(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(Reply("Here is calc.py.", [Call("read_files", {"files": ["calc.py"]}, id="r1")]))
    first = chat(hub, "calc", {"message": "show me calc.py"}).json()
    conversation = first["conversation_id"]

    hub.stop()
    hub.start()  # same home, same port: the client reconnects by itself
    hub.workspace_id("calc", timeout=30)
    llm.add(Reply("It subtracts."))
    second = chat(hub, "calc", {"message": "what does add do?", "conversation_id": conversation}).json()

    assert second["conversation_id"] == conversation and second["reply"] == "It subtracts."
    sent = llm.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["content"] == "show me calc.py" and sent[-1]["content"] == "what does add do?"
    assert json.loads(sent[3]["content"])["files"]["calc.py"] == CALC
    listing = httpx2.get(f"{hub.http}/api/conversations", headers=hub.headers(), timeout=10).json()
    assert [(c["id"], c["title"], c["turns"]) for c in listing] == [(conversation, "show me calc.py", 2)]
    detail = httpx2.get(
        f"{hub.http}/api/conversations/{conversation}", headers=hub.headers(), timeout=10
    ).json()
    assert [t["stop_reason"] for t in detail["turns"]] == ["done", "done"]
    (call,) = detail["tool_calls"]
    assert call["tool"] == "read_files" and call["status"] == "success" and call["duration_ms"] > 0
    assert call["arguments"] == {"files": ["calc.py"]}


def test_chat_refusals(
    make_hub: Callable[..., Hub],
    hub: Hub,
    llm: ScriptedLLM,
    calc_project: Path,
    start_client: Callable[..., Client],
) -> None:
    # A hub with no model says how to configure one.
    start_client(hub, calc_project, name="plain")
    response = chat(hub, "plain", {"message": "hi"})
    assert response.status_code == 503 and "AIHUB_LLM_BASE_URL" in response.json()["detail"]

    with_model = make_hub()
    start_client(with_model, calc_project, name="calc")
    assert chat(with_model, "nope", {"message": "hi"}).status_code == 404
    assert chat(with_model, "calc", {"message": "hi", "conversation_id": "0000"}).status_code == 404
    for body in ({}, {"message": ""}, {"message": 5}, {"message": "hi", "extra": 1}):
        assert chat(with_model, "calc", body).status_code == 422, body
    bad = httpx2.post(
        f"{with_model.http}/api/workspaces/calc/chat",
        content=b"{nope",
        headers=with_model.headers(),
        timeout=10,
    )
    assert bad.status_code == 422
    assert (
        httpx2.post(
            f"{with_model.http}/api/workspaces/calc/chat", json={"message": "hi"}, timeout=10
        ).status_code
        == 401
    )
    assert httpx2.get(f"{with_model.http}/api/conversations", timeout=10).status_code == 401
    assert (
        httpx2.get(
            f"{with_model.http}/api/conversations/x", headers=with_model.headers(), timeout=10
        ).status_code
        == 404
    )


def run_chat_cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"AIHUB_TOKEN": hub.token, "PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(hub.home)}
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "chat", "--hub", hub.http, *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_chat_command_streams_words_tool_lines_and_output(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    start_client(hub, calc_project, name="calc")
    llm.add(
        Reply("Running them.", [Call("execute_command", {"command": "echo live-output-line"})]),
        Reply("All fine."),
    )

    done = run_chat_cli(hub, "run the tests")

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Running them." in out and "All fine." in out
    assert "> execute_command" in out and "live-output-line" in out and "ok execute_command" in out
    assert out.index("Running them.") < out.index("live-output-line") < out.index("All fine.")
    conversation = json.loads(
        httpx2.get(f"{hub.http}/api/conversations", headers=hub.headers(), timeout=10).text
    )[0]["id"]
    assert f"conversation {conversation}" in out

    llm.add(Reply("Continued."))
    again = run_chat_cli(hub, "--conversation", conversation, "--workspace", "calc", "more")
    assert again.returncode == 0 and "Continued." in again.stdout
    assert [m["role"] for m in llm.requests[-1]["messages"]][-2:] == ["assistant", "user"]


def test_the_chat_command_fails_with_one_line(
    make_hub: Callable[..., Hub], llm: ScriptedLLM, calc_project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub()
    no_workspace = run_chat_cli(hub, "hello")
    assert no_workspace.returncode == 1
    assert no_workspace.stderr.strip().count("\n") == 0 and "no workspace is connected" in no_workspace.stderr

    start_client(hub, calc_project, name="calc")
    llm.add(Fail(500))
    failed = run_chat_cli(hub, "hello")
    assert failed.returncode == 1 and "scripted upstream failure" in failed.stderr
    assert "Traceback" not in failed.stderr

    unreachable = subprocess.run(
        [sys.executable, "-m", "hub.cli", "chat", "--hub", f"http://127.0.0.1:{free_port()}", "--token", "x", "hi"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unreachable.returncode == 1 and "cannot reach the hub" in unreachable.stderr
